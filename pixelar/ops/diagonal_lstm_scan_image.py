"""Diagonal LSTM scan on the image layout (van den Oord et al. 2016, section 3.2): the
recurrence of :mod:`pixelar.ops.diagonal_lstm_scan` without the skewed map, its reference,
fake kernel, autograd and dispatch.

The layer's input-to-state convolution gives x_gates on the image grid; this op runs the
Diagonal LSTM over it directly, left to right or (``reverse=True``) right to left, and
returns the states on the image grid, so the skew, the mirror of the right-to-left
direction and the unskew are never materialised (the C++ kernel walks the diagonals in
place). In image terms, position (r, c) reads the states at (r - 1, c) (w_ss[..., 0], the
row above) and at the previous position of its row in scan order, (r, c - 1), or (r, c + 1)
when reverse (w_ss[..., 1]); both are zero outside the image:

    pre    = x_gates[:, :, r, c] + w_ss[:, :, 0] @ h[:, :, r-1, c] + w_ss[:, :, 1] @ h[:, :, r, c']
    i, f, o, g = pre split in four blocks of H           (c' = c - 1, or c + 1 when reverse)
    c[r, c] = sigmoid(f) * c[r, c'] + sigmoid(i) * tanh(g)
    h[r, c] = sigmoid(o) * tanh(c[r, c])

Equal to ``unskew(diagonal_lstm_scan(skew(x_gates), w_ss))`` (mirrored before and after
when reverse), which is the reference.

Layout: the compiled kernels return h and c in ``torch.channels_last`` memory order (one
pixel's H values contiguous), and read x_gates fastest in that order too; shapes are the
usual (B, C, R, W). The raw op ``torch.ops.pixelar.diagonal_lstm_scan_image`` also returns
the activated gates (B, 4H, R, W), [sigmoid i, sigmoid f, sigmoid o, tanh g], which its
backward reads instead of recomputing them (not differentiable; the wrapper drops them).
"""

import torch

from .._extension import extension_loaded
from ._backend import dispatch, register
from ._checks import check_float_tensor, check_like, check_shape
from ._lstm_scan_registration import check_lstm_scan_inputs
from .diagonal_lstm_scan import diagonal_lstm_scan_ref
from .skew import skew, unskew

OP = "diagonal_lstm_scan_image"


def check_inputs(x_gates, w_ss, reverse, bias=None):
    """The op's checks (wrapper and reference alike; the C++ op's check_inputs says the
    same): shapes and dtypes of x_gates (B, 4H, R, W), w_ss (4H, H, 2) and bias (4H,) or
    None, a bool reverse."""
    check_lstm_scan_inputs(OP, x_gates, w_ss, kernel_width=2)
    if not isinstance(reverse, bool):
        raise ValueError(f"{OP}: reverse must be a bool, got {reverse!r}")
    if bias is not None:
        check_float_tensor(OP, "bias", bias, 1)
        check_like(OP, "bias", bias, "x_gates", x_gates)
        check_shape(OP, "bias", bias, (x_gates.shape[1],))


def _through_skewed_map(scan, x_gates, w_ss, reverse, bias):
    """(h, c) of the image-layout scan from ``scan``, an op on the skewed map."""
    if bias is not None:
        x_gates = x_gates + bias.view(1, -1, 1, 1)
    B, G, R, width = x_gates.shape
    if x_gates.numel() == 0:  # nothing to scan (W = 0 has no skewed map); zero gradients
        h = x_gates.new_zeros(B, G // 4, R, width) + 0 * (x_gates.sum() + w_ss.sum())
        return h, h.clone()
    x = x_gates.flip(-1) if reverse else x_gates
    h, c = scan(skew(x), w_ss)
    h, c = unskew(h, width), unskew(c, width)
    return (h.flip(-1), c.flip(-1)) if reverse else (h, c)


def diagonal_lstm_scan_image_ref(
    x_gates: torch.Tensor, w_ss: torch.Tensor, reverse=False, bias=None
):
    """Pure-PyTorch reference (the specification; autograd by construction).

    x_gates: (B, 4H, R, W)  input-to-state gate pre-activations [i, f, o, g] on the image
    w_ss:    (4H, H, 2)     state-to-state kernel: [..., 0] row above, [..., 1] the
                            previous position of the row in scan order
    reverse: bool           scan right to left
    bias:    (4H,) or None  added to x_gates at every pixel
    Returns h, c: (B, H, R, W).
    """
    check_inputs(x_gates, w_ss, reverse, bias)
    return _through_skewed_map(diagonal_lstm_scan_ref, x_gates, w_ss, reverse, bias)


def diagonal_lstm_scan_image(
    x_gates: torch.Tensor, w_ss: torch.Tensor, reverse: bool = False, bias=None
):
    """Diagonal LSTM scan on the image layout, on the backend in force (see pixelar.ops).

    x_gates: (B, 4H, R, W)  gate pre-activations [i, f, o, g]
    w_ss:    (4H, H, 2)     state-to-state kernel: [..., 0] row above, [..., 1] the previous
                            position of the row in scan order (left; right when reverse)
    reverse: bool           scan right to left (the Diagonal BiLSTM's second direction)
    bias:    (4H,) or None  added to x_gates at every pixel (the input-to-state
                            convolution's bias: the C++ kernel adds it as it reads x_gates,
                            sparing a pass over them)
    Returns (h, c), each (B, H, R, W) (channels-last memory from the compiled kernels).
    Differentiable in x_gates, w_ss and bias.
    """
    check_inputs(x_gates, w_ss, reverse, bias)
    return dispatch(OP, x_gates.device)(x_gates, w_ss, reverse, bias)


def _compiled(x_gates, w_ss, reverse, bias):
    h, c, _ = torch.ops.pixelar.diagonal_lstm_scan_image(x_gates, w_ss.contiguous(), reverse, bias)
    return h, c


def _triton(x_gates, w_ss, reverse, bias):
    # The Triton kernel of the skewed-map scan between skew and unskew (pixelar.ops.skew).
    from ..kernels.diagonal_lstm_scan import diagonal_lstm_scan_triton

    return _through_skewed_map(diagonal_lstm_scan_triton, x_gates, w_ss, reverse, bias)


def _register_library():
    """Fake kernels and the autograd formula of ``pixelar::diagonal_lstm_scan_image``."""
    qualname = f"pixelar::{OP}"
    backward_op = torch.ops.pixelar.diagonal_lstm_scan_image_backward

    @torch.library.register_fake(qualname)
    def _fake(x_gates, w_ss, reverse, bias=None):
        torch._check(x_gates.dim() == 4, lambda: f"{OP}: x_gates must be 4-D")
        torch._check(w_ss.dim() == 3, lambda: f"{OP}: w_ss must be 3-D")
        B, G, R, W = x_gates.shape
        H = w_ss.shape[1]
        torch._check(G == 4 * H, lambda: f"{OP}: x_gates must have 4H channels")
        h = x_gates.new_empty(B, H, R, W).contiguous(memory_format=torch.channels_last)
        gates = torch.empty_like(x_gates, memory_format=torch.channels_last)
        return h, torch.empty_like(h), gates

    @torch.library.register_fake(f"{qualname}_backward")
    def _fake_backward(grad_h, grad_c, x_gates, w_ss, h, c, gates, reverse, bias=None):
        grad_x = torch.empty_like(x_gates, memory_format=torch.channels_last)
        return grad_x, torch.empty_like(w_ss)

    def _setup_context(ctx, inputs, output):
        x_gates, w_ss, reverse, bias = inputs
        h, c, gates = output
        ctx.reverse = reverse
        ctx.mark_non_differentiable(gates)  # saved for the backward, not a result
        ctx.set_materialize_grads(False)  # no zero-filled gradient for gates (or an unused c)
        ctx.save_for_backward(x_gates, w_ss, h, c, gates, bias)

    def _backward(ctx, grad_h, grad_c, _grad_gates):
        x_gates, w_ss, h, c, gates, bias = ctx.saved_tensors
        grad_h = torch.zeros_like(h) if grad_h is None else grad_h
        grad_c = torch.zeros_like(c) if grad_c is None else grad_c
        grad_x, grad_w = backward_op(grad_h, grad_c, x_gates, w_ss, h, c, gates, ctx.reverse, bias)
        grad_b = grad_x.sum((0, 2, 3)) if bias is not None and ctx.needs_input_grad[3] else None
        return grad_x, grad_w, None, grad_b

    torch.library.register_autograd(qualname, _backward, setup_context=_setup_context)


if extension_loaded():
    _register_library()

register(OP, reference=diagonal_lstm_scan_image_ref, cpp=_compiled, cuda=_compiled, triton=_triton)
