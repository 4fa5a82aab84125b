"""PixelCNN's residual block in Triton: forward and backward.

Semantics and reference: ``pixelar.ops.conv_residual_block`` / ``conv_residual_block_ref``.

Design. Everything runs on channels-last maps flattened to (P, C) matrices, P = B * R * W
pixels, so each stage of the block is a matrix product over the small channel dimension
(F or h) with a fused epilogue. One generic kernel, ``_pixel_matmul_kernel``, computes a
(BP pixels, BN channels) tile of

    out[p, n] = EPI(sum_t act(a[p + s * o_t, :]) @ w[t, :, n] + bias[n])

looping over the input channels in BK blocks, with tl.dot on blocks padded to >= 16 (h and
F are small and need not be powers of two: masks zero the padding). t runs over the five
taps o_t of the masked 3x3 convolution (s = +1: forward, s = -1: the transposed
convolution of the backward) or is the single 1x1 tap; a neighbour outside the image reads
as zero. EPI is, in order, an optional ReLU, gate (times (gate[p, n] > 0)) and residual
(plus res[p, n]). The six calls:

    forward   r2 = relu(relu(x) @ w_reduce + b_reduce)                  (P, h)
              r3 = relu(sum_t r2[p + o_t] @ w_conv[t] + b_conv)         (P, h)
              out = x + r3 @ w_expand + b_expand                        (P, F)
    backward  g_y2 = (g @ w_expand^T) * (r3 > 0)                        (P, h)
              g_y1 = (sum_t g_y2[p - o_t] @ w_conv[t]^T) * (r2 > 0)     (P, h)
              grad_x = g + (g_y1 @ w_reduce^T) * (x > 0)                (P, F)

r2 and r3 (input dtype) are saved by the forward; g_y2 and g_y1 are kept in the compute
dtype. The weight gradients sum over pixels: ``_weight_grad_kernel`` gives each program a
chunk of pixels and one (tap, BK, BN) block of the weight and writes its partial sum
act(a[p + o_t])^T b[p] to a (chunks, taps, K, N) buffer that torch sums afterwards, so the
result is deterministic. The bias gradients are torch sums of g, g_y2 and g_y1.
"""

import torch
import triton
import triton.language as tl

from ._common import acc_torch_dtype, check_device, dtype_constexprs, pow2

BLOCK_P = 32  # pixels per tile
BLOCK_C = 32  # channels per tile, at most (tl.dot needs >= 16: smaller sizes are padded)
CHUNK_STEPS = 32  # pixel tiles summed by one program of the weight-gradient kernel
N_TAPS = 5


@triton.jit
def _neighbour(p, p_ok, R, W, t, SIGN: tl.constexpr):
    """Pixels q = p + SIGN * o_t of the flattened (B, R, W) grid, o_t the (row, column)
    offset of tap t of the masked 3x3 kernel: (-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0).
    Returns q and its mask (p in range and q inside p's image)."""
    dr = SIGN * (t // 3 - 1)
    dc = SIGN * (t - 1 - 3 * (t // 3))
    row = (p // W) % R + dr
    col = p % W + dc
    ok = p_ok & (row >= 0) & (row < R) & (col >= 0) & (col < W)
    return p + dr * W + dc, ok


@triton.jit
def _pixel_matmul_kernel(
    a_ptr,
    w_ptr,
    bias_ptr,
    gate_ptr,
    res_ptr,
    out_ptr,
    P,
    R,
    W,
    K,
    N,
    w_st,
    w_sk,
    w_sn,
    NTAPS: tl.constexpr,
    SIGN: tl.constexpr,
    RELU_IN: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    RELU_OUT: tl.constexpr,
    HAS_GATE: tl.constexpr,
    HAS_RES: tl.constexpr,
    BP: tl.constexpr,
    BK: tl.constexpr,
    BN: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
):
    """a: (P, K); w[t, k, n] at w_ptr + t * w_st + k * w_sk + n * w_sn; bias: (N,);
    gate, res, out: (P, N). One (BP, BN) tile of
    out = EPI(sum_t act(a[p + SIGN * o_t]) @ w[t] + bias) (NTAPS = 1: the centre only,
    o = (0, 0)); act = relu if RELU_IN; EPI: relu (RELU_OUT), * (gate > 0) (HAS_GATE),
    + res (HAS_RES)."""
    p = (tl.program_id(0) * BP + tl.arange(0, BP)).to(tl.int64)
    p_ok = p < P
    n = tl.program_id(1) * BN + tl.arange(0, BN)
    n_ok = n < N
    acc = tl.zeros([BP, BN], dtype=ACC)
    for tap in tl.static_range(NTAPS):
        if NTAPS == 1:
            q, q_ok = p, p_ok
        else:
            q, q_ok = _neighbour(p, p_ok, R, W, tap, SIGN)
        for k0 in range(0, K, BK):
            k = k0 + tl.arange(0, BK)
            k_ok = k < K
            a = tl.load(
                a_ptr + q[:, None] * K + k[None, :], mask=q_ok[:, None] & k_ok[None, :], other=0.0
            ).to(ACC)
            if RELU_IN:
                a = tl.where(a < 0, 0.0, a)  # relu; a NaN stays NaN
            w = tl.load(
                w_ptr + tap * w_st + k[:, None] * w_sk + n[None, :] * w_sn,
                mask=k_ok[:, None] & n_ok[None, :],
                other=0.0,
            ).to(ACC)
            acc += tl.dot(a, w, input_precision=PREC)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + n, mask=n_ok, other=0.0).to(ACC)[None, :]
    if RELU_OUT:
        acc = tl.where(acc < 0, 0.0, acc)  # relu; a NaN stays NaN
    pn = p[:, None] * N + n[None, :]
    pn_ok = p_ok[:, None] & n_ok[None, :]
    if HAS_GATE:
        gate = tl.load(gate_ptr + pn, mask=pn_ok, other=0.0)
        acc = tl.where(gate > 0, acc, 0.0)
    if HAS_RES:
        acc += tl.load(res_ptr + pn, mask=pn_ok, other=0.0).to(ACC)
    tl.store(out_ptr + pn, acc.to(out_ptr.dtype.element_ty), mask=pn_ok)


@triton.jit
def _weight_grad_kernel(
    a_ptr,
    b_ptr,
    part_ptr,
    P,
    R,
    W,
    K,
    N,
    NTAPS: tl.constexpr,
    RELU_A: tl.constexpr,
    BP: tl.constexpr,
    BK: tl.constexpr,
    BN: tl.constexpr,
    STEPS: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
):
    """a: (P, K), b: (P, N) -> part: (chunks, NTAPS, K, N), the sum over this program's
    chunk of STEPS * BP pixels p of act(a[p + o_t])^T b[p] (NTAPS = 1: o = (0, 0)),
    act = relu if RELU_A. Grid: (chunks, NTAPS * k blocks, n blocks)."""
    chunk = tl.program_id(0)
    n_kb = tl.cdiv(K, BK)
    tap = tl.program_id(1) // n_kb
    k = (tl.program_id(1) % n_kb) * BK + tl.arange(0, BK)
    k_ok = k < K
    n = tl.program_id(2) * BN + tl.arange(0, BN)
    n_ok = n < N
    acc = tl.zeros([BK, BN], dtype=ACC)
    for step in range(STEPS):
        p = ((chunk * STEPS + step) * BP + tl.arange(0, BP)).to(tl.int64)
        p_ok = p < P
        if NTAPS == 1:
            q, q_ok = p, p_ok
        else:
            q, q_ok = _neighbour(p, p_ok, R, W, tap, 1)
        a = tl.load(
            a_ptr + q[:, None] * K + k[None, :], mask=q_ok[:, None] & k_ok[None, :], other=0.0
        ).to(ACC)
        if RELU_A:
            a = tl.where(a < 0, 0.0, a)  # relu; a NaN stays NaN
        b = tl.load(
            b_ptr + p[:, None] * N + n[None, :], mask=p_ok[:, None] & n_ok[None, :], other=0.0
        ).to(ACC)
        acc += tl.dot(tl.trans(a), b, input_precision=PREC)
    part = part_ptr + ((chunk * NTAPS + tap) * K + k[:, None]) * N + n[None, :]
    tl.store(part, acc, mask=k_ok[:, None] & n_ok[None, :])


def _block(n: int, block_c: int = BLOCK_C) -> int:
    """Channel block for n channels: a power of two in [16, max(16, block_c)]."""
    return min(pow2(n), max(16, block_c))


def _matmul(
    a,
    w,
    w_strides,
    n_out,
    R,
    W,
    out_dtype,
    ntaps=1,
    sign=1,
    relu_in=False,
    bias=None,
    relu_out=False,
    gate=None,
    res=None,
    block_c=BLOCK_C,
):
    """Launch _pixel_matmul_kernel: a (P, K) -> out (P, n_out) in out_dtype; w_strides =
    (tap, k, n) element strides of w. Absent bias / gate / res are passed as a dummy
    pointer (never read)."""
    P, K = a.shape
    out = a.new_empty(P, n_out, dtype=out_dtype)
    BK, BN = _block(K, block_c), _block(n_out, block_c)
    grid = (triton.cdiv(P, BLOCK_P), triton.cdiv(n_out, BN))
    _pixel_matmul_kernel[grid](
        a,
        w,
        w if bias is None else bias,
        out if gate is None else gate,
        out if res is None else res,
        out,
        P,
        R,
        W,
        K,
        n_out,
        *w_strides,
        NTAPS=ntaps,
        SIGN=sign,
        RELU_IN=relu_in,
        HAS_BIAS=bias is not None,
        RELU_OUT=relu_out,
        HAS_GATE=gate is not None,
        HAS_RES=res is not None,
        BP=BLOCK_P,
        BK=BK,
        BN=BN,
        **dtype_constexprs(a.dtype),
        num_warps=4,
    )
    return out


def _weight_grad(a, b, R, W, ntaps=1, relu_a=False, block_c=BLOCK_C, steps=CHUNK_STEPS):
    """sum_p act(a[p + o_t])^T b[p] for each tap t: (ntaps, K, N) in the compute dtype."""
    P, K = a.shape
    N = b.shape[1]
    BK, BN = _block(K, block_c), _block(N, block_c)
    steps = min(steps, triton.cdiv(P, BLOCK_P))  # no program longer than the whole map
    grid = (triton.cdiv(P, BLOCK_P * steps), ntaps * triton.cdiv(K, BK), triton.cdiv(N, BN))
    part = a.new_empty(grid[0], ntaps, K, N, dtype=acc_torch_dtype(a.dtype))
    _weight_grad_kernel[grid](
        a,
        b,
        part,
        P,
        R,
        W,
        K,
        N,
        NTAPS=ntaps,
        RELU_A=relu_a,
        BP=BLOCK_P,
        BK=BK,
        BN=BN,
        STEPS=steps,
        **dtype_constexprs(a.dtype),
        num_warps=4,
    )
    return part.sum(0)


def _channels_last(t):
    """(B, C, R, W) -> its (B * R * W, C) channels-last matrix (a copy only if needed)."""
    B, C, R, W = t.shape
    return t.permute(0, 2, 3, 1).contiguous().view(B * R * W, C)


def _as_map(m, B, R, W):
    """(B * R * W, C) channels-last matrix -> (B, C, R, W) view (channels-last strides)."""
    return m.view(B, R, W, m.shape[1]).permute(0, 3, 1, 2)


def _fwd(x, w_reduce, b_reduce, w_conv, b_conv, w_expand, b_expand, block_c=BLOCK_C):
    """-> (out (B, F, R, W), r2 (P, h), r3 (P, h)), r2 and r3 channels-last in x's dtype.
    block_c: the largest channel block."""
    B, F, R, W = x.shape
    h = w_reduce.shape[1]
    xm = _channels_last(x)
    if xm.numel() == 0:  # no pixel or no feature: out = x (+ b_expand, if any pixel)
        r = x.new_zeros(B * R * W, h)
        return _as_map(xm + b_expand, B, R, W), r, r.clone()
    w_reduce, b_reduce, w_conv, b_conv, w_expand, b_expand = (
        t.contiguous() for t in (w_reduce, b_reduce, w_conv, b_conv, w_expand, b_expand)
    )
    kw = dict(R=R, W=W, out_dtype=x.dtype, block_c=block_c)
    r2 = _matmul(xm, w_reduce, (0, h, 1), h, relu_in=True, bias=b_reduce, relu_out=True, **kw)
    r3 = _matmul(r2, w_conv, (h * h, h, 1), h, ntaps=N_TAPS, bias=b_conv, relu_out=True, **kw)
    out = _matmul(r3, w_expand, (0, F, 1), F, bias=b_expand, res=xm, **kw)
    return _as_map(out, B, R, W), r2, r3


def _bwd(grad_out, x, w_reduce, w_conv, w_expand, r2, r3, block_c=BLOCK_C, chunk_steps=CHUNK_STEPS):
    """Gradients of (x, w_reduce, b_reduce, w_conv, b_conv, w_expand, b_expand) given
    grad_out (B, F, R, W) and the forward's r2, r3 (P, h). block_c: the largest channel
    block; chunk_steps: pixel tiles per program of the weight gradients."""
    B, F, R, W = x.shape
    h = w_reduce.shape[1]
    dtype, acc = x.dtype, acc_torch_dtype(x.dtype)
    g = _channels_last(grad_out.to(dtype))
    if g.numel() == 0:  # no pixel or no feature: only x and b_expand may get a gradient
        return (
            _as_map(g.clone(), B, R, W),
            torch.zeros_like(w_reduce),
            w_reduce.new_zeros(h),
            torch.zeros_like(w_conv),
            w_conv.new_zeros(h),
            torch.zeros_like(w_expand),
            g.to(acc).sum(0).to(dtype),
        )
    xm = _channels_last(x)
    w_reduce, w_conv, w_expand = w_reduce.contiguous(), w_conv.contiguous(), w_expand.contiguous()
    kw = dict(R=R, W=W, block_c=block_c)
    # w^T[t, k, n] = w[t, n, k]: the (tap, k, n) strides of a transposed weight
    g_y2 = _matmul(g, w_expand, (0, 1, F), h, out_dtype=acc, gate=r3, **kw)
    g_y1 = _matmul(
        g_y2, w_conv, (h * h, 1, h), h, out_dtype=acc, ntaps=N_TAPS, sign=-1, gate=r2, **kw
    )
    grad_x = _matmul(g_y1, w_reduce, (0, 1, h), F, out_dtype=dtype, gate=xm, res=g, **kw)
    kw = dict(R=R, W=W, block_c=block_c, steps=chunk_steps)
    grad_w_expand = _weight_grad(r3, g, **kw)[0]
    grad_w_conv = _weight_grad(r2, g_y2, ntaps=N_TAPS, **kw)
    grad_w_reduce = _weight_grad(xm, g_y1, relu_a=True, **kw)[0]
    return (
        _as_map(grad_x, B, R, W),
        grad_w_reduce.to(dtype),
        g_y1.sum(0).to(dtype),
        grad_w_conv.to(dtype),
        g_y2.sum(0).to(dtype),
        grad_w_expand.to(dtype),
        g.to(acc).sum(0).to(dtype),
    )


class _ConvResidualBlock(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_reduce, b_reduce, w_conv, b_conv, w_expand, b_expand):
        out, r2, r3 = _fwd(x, w_reduce, b_reduce, w_conv, b_conv, w_expand, b_expand)
        ctx.save_for_backward(x, w_reduce, w_conv, w_expand, r2, r3)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        return _bwd(grad_out, *ctx.saved_tensors)


def conv_residual_block_triton(x, w_reduce, b_reduce, w_conv, b_conv, w_expand, b_expand):
    """PixelCNN's residual block (Triton; differentiable in every input).

    Args:
        x:        (B, F, R, W)  the block's input, any strides
        w_reduce: (F, h)        1x1 convolution F -> h, input-major; b_reduce: (h,)
        w_conv:   (5, h, h)     the masked 3x3 convolution's open taps [tap, c_in, c_out]
                                at (row, column) offsets (-1, -1), (-1, 0), (-1, 1),
                                (0, -1), (0, 0); b_conv: (h,)
        w_expand: (h, F)        1x1 convolution h -> F, input-major; b_expand: (F,)
    Returns:
        out: (B, F, R, W) in x's dtype, channels-last memory (computed in float32, or
        float64 for float64 inputs). Deterministic, backward included.
    Example:
        >>> out = conv_residual_block_triton(x, w_reduce, b_reduce, w_conv, b_conv,
        ...                                  w_expand, b_expand)  # x: (16, 32, 28, 28)
    """
    inputs = (x, w_reduce, b_reduce, w_conv, b_conv, w_expand, b_expand)
    # shapes and dtypes: checked by the wrapper, pixelar.ops.conv_residual_block
    check_device("conv_residual_block", *inputs)
    return _ConvResidualBlock.apply(*inputs)
