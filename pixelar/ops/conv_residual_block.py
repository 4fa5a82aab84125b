"""PixelCNN's residual block as one op (van den Oord et al. 2016, figure 5): its reference,
fake kernels, autograd and dispatch.

With F = 2h features in and out and h inside, per pixel p of each image:

    r1 = relu(x)                                    (F)
    r2 = relu(r1 @ w_reduce + b_reduce)             (h)    1x1, F -> h
    r3 = relu(sum_t r2[p + o_t] @ w_conv[t] + b_conv)  (h) the masked 3x3, h -> h
    out = x + r3 @ w_expand + b_expand              (F)    1x1, h -> F, plus the input

where the five taps t of the masked 3x3 kernel are the positions before and at the centre
in raster order, o_t = (row, column) offsets (-1, -1), (-1, 0), (-1, +1), (0, -1), (0, 0);
r2 is zero outside the image. A mask-A/B 3x3 kernel has no other open position (the rest
of the centre row and the row below are masked), so ``w_conv`` holds the masked kernel's
rows 0..1 without the closed (1, 2) position, [tap, c_in, c_out]; within the centre tap the
colour-group mask is already in the weights (as in ``w_reduce`` and ``w_expand``).

Weights are input-major (``x @ w``): w_reduce (F, h), w_conv (5, h, h), w_expand (h, F).

NaN: relu(NaN) = NaN (as torch.relu) in every implementation. The kernels compute the open
taps only, so a NaN in x reaches exactly the outputs whose taps read it; the reference's
dense ``F.conv2d`` also multiplies the closed taps' zeros by it (0 * NaN = NaN) and spreads
it further.

Why one op: the block's tensors are small (h = 16 at the paper's MNIST size), so the
PyTorch composite spends its time in element-wise passes over whole maps (three ReLUs and
their backward, the residual add, bias sums, layout copies) rather than in the
convolutions. The C++ kernel (csrc/cpu/conv_residual_block.cpp) walks each image row by
row with every stage of the block on the row in cache, and its backward walks the rows
bottom-up, the weight gradients accumulated as it goes. The raw op
``torch.ops.pixelar.conv_residual_block`` also returns r2 and r3 (non-differentiable),
which the backward reads instead of recomputing them; the wrapper returns ``out`` only.

Dispatch (pixelar.ops._backend): "auto" runs the C++ kernel on CPU tensors and, on CUDA
tensors, the CUDA kernels (csrc/cuda/conv_residual_block.cu) when built, else the Triton
kernels (pixelar/kernels/conv_residual_block.py); "reference" runs the PyTorch composite
below (``conv_residual_block_ref``) on any device.
"""

import torch
import torch.nn.functional as F

from .._extension import extension_loaded
from ._backend import dispatch, lazy, register
from ._checks import check_float_tensor, check_like, check_shape

OP = "conv_residual_block"

# (row, column) offset of each tap of w_conv, in raster order
TAPS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0))


def check_inputs(x, w_reduce, b_reduce, w_conv, b_conv, w_expand, b_expand):
    """The op's checks (wrapper and reference alike; the C++ op checks the same): float
    tensors of one dtype and device, x (B, F, R, W), w_reduce (F, h), b_reduce (h,),
    w_conv (5, h, h), b_conv (h,), w_expand (h, F), b_expand (F,), h >= 1."""
    check_float_tensor(OP, "x", x, 4)
    named = (
        ("w_reduce", w_reduce, 2),
        ("b_reduce", b_reduce, 1),
        ("w_conv", w_conv, 3),
        ("b_conv", b_conv, 1),
        ("w_expand", w_expand, 2),
        ("b_expand", b_expand, 1),
    )
    for name, t, ndim in named:
        check_float_tensor(OP, name, t, ndim)
        check_like(OP, name, t, "x", x)
    features, h = x.shape[1], w_reduce.shape[1]
    if h < 1:
        raise ValueError(f"{OP}: need at least one hidden feature (w_reduce (F, h), h >= 1)")
    check_shape(OP, "w_reduce", w_reduce, (features, h))
    check_shape(OP, "b_reduce", b_reduce, (h,))
    check_shape(OP, "w_conv", w_conv, (len(TAPS), h, h))
    check_shape(OP, "b_conv", b_conv, (h,))
    check_shape(OP, "w_expand", w_expand, (h, features))
    check_shape(OP, "b_expand", b_expand, (features,))


def conv3x3_kernel(w_conv: torch.Tensor) -> torch.Tensor:
    """The masked 3x3 kernel (out, in, 3, 3) that ``w_conv`` (5, h, h) holds: its taps at
    the first five positions in raster order, zeros at the other four (differentiable)."""
    h = w_conv.shape[1]
    taps = torch.cat([w_conv, w_conv.new_zeros(9 - len(TAPS), h, h)])  # (9, in, out)
    return taps.view(3, 3, h, h).permute(3, 2, 0, 1)


def conv_residual_block_ref(x, w_reduce, b_reduce, w_conv, b_conv, w_expand, b_expand):
    """Pure-PyTorch reference (the specification; autograd by construction).

    x: (B, F, R, W); w_reduce: (F, h); b_reduce: (h,); w_conv: (5, h, h) the causal taps
    [tap, c_in, c_out]; b_conv: (h,); w_expand: (h, F); b_expand: (F,).
    Returns out: (B, F, R, W).
    """
    check_inputs(x, w_reduce, b_reduce, w_conv, b_conv, w_expand, b_expand)
    weights = (w_reduce, b_reduce, w_conv, b_conv, w_expand, b_expand)
    if x.shape[1] * x.shape[2] * x.shape[3] == 0:  # conv2d refuses empty images and maps
        return x + sum(0 * w.sum() for w in weights)
    y = F.conv2d(F.relu(x), w_reduce.t()[:, :, None, None], b_reduce)
    y = F.conv2d(F.relu(y), conv3x3_kernel(w_conv), b_conv, padding=1)
    return x + F.conv2d(F.relu(y), w_expand.t()[:, :, None, None], b_expand)


def conv_residual_block(x, w_reduce, b_reduce, w_conv, b_conv, w_expand, b_expand):
    """PixelCNN's residual block, on the backend in force (see pixelar.ops).

    x:        (B, F, R, W)  the block's input (F = 2h in the paper)
    w_reduce: (F, h)        1x1 convolution F -> h, input-major; b_reduce: (h,)
    w_conv:   (5, h, h)     the masked 3x3 convolution's open taps [tap, c_in, c_out], at
                            (row, column) offsets (-1, -1), (-1, 0), (-1, +1), (0, -1),
                            (0, 0); b_conv: (h,)
    w_expand: (h, F)        1x1 convolution h -> F, input-major; b_expand: (F,)
    Returns out: (B, F, R, W) (channels-last memory from the compiled kernels).
    Differentiable in every input.
    """
    check_inputs(x, w_reduce, b_reduce, w_conv, b_conv, w_expand, b_expand)
    return dispatch(OP, x.device)(x, w_reduce, b_reduce, w_conv, b_conv, w_expand, b_expand)


def _compiled(x, w_reduce, b_reduce, w_conv, b_conv, w_expand, b_expand):
    out, _, _ = torch.ops.pixelar.conv_residual_block(
        x, w_reduce, b_reduce, w_conv, b_conv, w_expand, b_expand
    )
    return out


def _register_library():
    """Fake kernels and the autograd formula of ``pixelar::conv_residual_block``."""
    qualname = f"pixelar::{OP}"
    backward_op = torch.ops.pixelar.conv_residual_block_backward

    @torch.library.register_fake(qualname)
    def _fake(x, w_reduce, b_reduce, w_conv, b_conv, w_expand, b_expand):
        torch._check(x.dim() == 4, lambda: f"{OP}: x must be 4-D")
        torch._check(w_reduce.dim() == 2, lambda: f"{OP}: w_reduce must be 2-D")
        B, _, R, W = x.shape
        h = w_reduce.shape[1]
        out = torch.empty_like(x, memory_format=torch.channels_last)
        r2 = x.new_empty(B, h, R, W).contiguous(memory_format=torch.channels_last)
        return out, r2, torch.empty_like(r2)

    @torch.library.register_fake(f"{qualname}_backward")
    def _fake_backward(grad_out, x, w_reduce, w_conv, w_expand, r2, r3):
        return (
            torch.empty_like(x, memory_format=torch.channels_last),
            torch.empty_like(w_reduce),
            w_reduce.new_empty(w_reduce.shape[1]),
            torch.empty_like(w_conv),
            w_conv.new_empty(w_conv.shape[2]),
            torch.empty_like(w_expand),
            w_expand.new_empty(w_expand.shape[1]),
        )

    def _setup_context(ctx, inputs, output):
        x, w_reduce, _, w_conv, _, w_expand, _ = inputs
        _, r2, r3 = output
        ctx.mark_non_differentiable(r2, r3)  # saved for the backward, not results
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, w_reduce, w_conv, w_expand, r2, r3)

    def _backward(ctx, grad_out, _grad_r2, _grad_r3):
        x, w_reduce, w_conv, w_expand, r2, r3 = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(x)
        return backward_op(grad_out, x, w_reduce, w_conv, w_expand, r2, r3)

    torch.library.register_autograd(qualname, _backward, setup_context=_setup_context)


if extension_loaded():
    _register_library()

register(
    OP,
    reference=conv_residual_block_ref,
    cpp=_compiled,
    cuda=_compiled,
    triton=lazy("pixelar.kernels.conv_residual_block", "conv_residual_block_triton"),
)
