"""Pieces shared by the Triton kernels: the LSTM cell math (a line-by-line mirror of
csrc/include/pixelar/lstm_math.h), blocked loads of the state-to-state kernel, and host-side
helpers (compute dtypes, block sizes, the autograd glue of the two LSTM scans).

Every kernel loads its inputs, converts them to the compute dtype ``ACC`` (float64 for
float64 inputs, float32 otherwise), and stores its outputs in the input dtype.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    # tanh(|x|) = (1 - e^{-2|x|}) / (1 + e^{-2|x|}): no overflow, exact sign.
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


@triton.jit
def lstm_cell_fwd(pre_i, pre_f, pre_o, pre_g, c_prev):
    """Gate pre-activations [i, f, o, g] and c_prev -> (h, c)."""
    c = sigmoid(pre_f) * c_prev + sigmoid(pre_i) * tanh(pre_g)
    h = sigmoid(pre_o) * tanh(c)
    return h, c


@triton.jit
def lstm_cell_bwd(pre_i, pre_f, pre_o, pre_g, c_prev, c, dh, dc):
    """Backward of one cell (lstm_math.h: lstm_cell_backward).

    dh: gradient reaching h; dc: gradient reaching c other than through h.
    Returns (d_pre_i, d_pre_f, d_pre_o, d_pre_g, dc_prev).
    """
    i = sigmoid(pre_i)
    f = sigmoid(pre_f)
    o = sigmoid(pre_o)
    g = tanh(pre_g)
    tc = tanh(c)
    dc_total = dc + dh * o * (1.0 - tc * tc)
    d_o = dh * tc * o * (1.0 - o)
    d_i = dc_total * g * i * (1.0 - i)
    d_g = dc_total * i * (1.0 - g * g)
    d_f = dc_total * c_prev * f * (1.0 - f)
    return d_i, d_f, d_o, d_g, dc_total * f


@triton.jit
def dot2(a0, b0, a1, b1, PREC: tl.constexpr):
    """a0 @ b0 + a1 @ b1 with tl.dot at precision PREC."""
    return tl.dot(a0, b0, input_precision=PREC) + tl.dot(a1, b1, input_precision=PREC)


@triton.jit
def w_tile(w_ptr, g, g_ok, k, k_ok, H, KW: tl.constexpr, t, ACC: tl.constexpr):
    """Block of the state-to-state kernel w_ss: (4H, H, KW) at tap t:
    tile[a, b] = w_ss[g[a], k[b], t], zero where a mask is False. (len(g), len(k))."""
    ptr = w_ptr + (g[:, None] * H + k[None, :]) * KW + t
    return tl.load(ptr, mask=g_ok[:, None] & k_ok[None, :], other=0.0).to(ACC)


@triton.jit
def w_tile_t(w_ptr, k, k_ok, g, g_ok, H, KW: tl.constexpr, t, ACC: tl.constexpr):
    """Transposed block: tile[a, b] = w_ss[g[b], k[a], t]. (len(k), len(g))."""
    ptr = w_ptr + (g[None, :] * H + k[:, None]) * KW + t
    return tl.load(ptr, mask=k_ok[:, None] & g_ok[None, :], other=0.0).to(ACC)


def acc_dtype(dtype: torch.dtype):
    """Triton compute dtype for a torch input dtype."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot precision: "tf32x3" (three TF32 tensor-core products, fp32 accuracy) for the
    fp32 compute dtype, "ieee" for float64. (The interpreter computes every dot in full
    precision, so the tests check the arithmetic, not this choice.)"""
    return "ieee" if dtype == torch.float64 else "tf32x3"


def acc_torch_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def dtype_constexprs(dtype: torch.dtype) -> dict:
    """The ACC and PREC constexprs of a kernel launched on inputs of ``dtype``: its compute
    dtype (acc_dtype) and its tl.dot precision (dot_precision)."""
    return dict(ACC=acc_dtype(dtype), PREC=dot_precision(dtype))


def pow2(n: int, minimum: int = 16) -> int:
    """Smallest power of two >= max(n, minimum): tl.arange needs powers of two and
    tl.dot needs every dimension >= 16 on the GPU."""
    return max(minimum, triton.next_power_of_2(max(1, n)))


def check_device(op: str, *tensors) -> None:
    """The Triton kernels run on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1."""
    import os

    for t in tensors:
        if t.device.type == "cuda":
            continue
        if t.device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") == "1":
            continue
        raise RuntimeError(
            f"{op}_triton: expects CUDA tensors (or CPU tensors with "
            f"TRITON_INTERPRET=1 set before triton is imported), got a "
            f"tensor on {t.device}"
        )


def contiguous(*tensors):
    """The tensors, each made contiguous (a copy only where it is not)."""
    return tuple(t.contiguous() for t in tensors)


def scan_sizes(x_gates: torch.Tensor, block: int):
    """(B, H, R, N, BH) of an LSTM scan on x_gates: (B, 4H, R, N), N = S skewed columns
    (diagonal scan) or W columns (row scan). BH: hidden units per block, at most ``block``
    (the kernels use it for both the output block BH and the input block BK)."""
    B, G, R, N = x_gates.shape
    H = G // 4
    return B, H, R, N, min(block, pow2(H))


def lstm_scan_function(name: str, fwd, bwd):
    """A torch.autograd.Function class, named ``name``, for a Triton LSTM scan.

    fwd(x_gates, w_ss) -> (h, c); bwd(grad_h, grad_c, x_gates, w_ss, h, c) ->
    (grad_x_gates, grad_w_ss), with x_gates: (B, 4H, R, N), w_ss: (4H, H, taps) and h, c:
    (B, H, R, N). x_gates, w_ss, h and c are saved for the backward; an output that gets no
    gradient (None) counts as a zero gradient.
    """

    def forward(ctx, x_gates, w_ss):
        h, c = fwd(x_gates, w_ss)
        ctx.save_for_backward(x_gates, w_ss, h, c)
        return h, c

    def backward(ctx, grad_h, grad_c):
        x_gates, w_ss, h, c = ctx.saved_tensors
        grad_h = torch.zeros_like(h) if grad_h is None else grad_h
        grad_c = torch.zeros_like(c) if grad_c is None else grad_c
        return bwd(grad_h, grad_c, x_gates, w_ss, h, c)

    return type(
        name,
        (torch.autograd.Function,),
        {"forward": staticmethod(forward), "backward": staticmethod(backward)},
    )
