"""Registration shared by the two LSTM scan ops (diagonal and row): both map
(x_gates: (B, 4H, R, S), w_ss: (4H, H, K)) to (h, c): (B, H, R, S), and both have a
``<op>_backward(grad_h, grad_c, x_gates, w_ss, h, c) -> (grad_x_gates, grad_w_ss)`` op."""

import torch

from .._extension import extension_loaded


def register_lstm_scan(op_name: str) -> None:
    """Register the fake kernels and the autograd formula of ``pixelar::<op_name>``."""
    if not extension_loaded():
        return
    qualname = f"pixelar::{op_name}"
    backward_op = getattr(torch.ops.pixelar, f"{op_name}_backward")

    @torch.library.register_fake(qualname)
    def _fake(x_gates, w_ss):
        torch._check(x_gates.dim() == 4, lambda: f"{op_name}: x_gates must be 4-D")
        torch._check(w_ss.dim() == 3, lambda: f"{op_name}: w_ss must be 3-D")
        B, G, R, S = x_gates.shape
        H = w_ss.shape[1]
        torch._check(G == 4 * H, lambda: f"{op_name}: x_gates must have 4H channels")
        h = x_gates.new_empty(B, H, R, S)
        return h, torch.empty_like(h)

    @torch.library.register_fake(f"{qualname}_backward")
    def _fake_backward(grad_h, grad_c, x_gates, w_ss, h, c):
        return torch.empty_like(x_gates), torch.empty_like(w_ss)

    def _setup_context(ctx, inputs, output):
        x_gates, w_ss = inputs
        h, c = output
        ctx.set_materialize_grads(False)  # no zero-filled gradient for an unused h or c
        ctx.save_for_backward(x_gates, w_ss, h, c)

    def _backward(ctx, grad_h, grad_c):
        x_gates, w_ss, h, c = ctx.saved_tensors
        grad_h = torch.zeros_like(h) if grad_h is None else grad_h.contiguous()
        grad_c = torch.zeros_like(c) if grad_c is None else grad_c.contiguous()
        grad_x, grad_w = backward_op(grad_h, grad_c, x_gates, w_ss, h, c)
        return grad_x, grad_w

    torch.library.register_autograd(qualname, _backward, setup_context=_setup_context)


def check_lstm_scan_inputs(op, x_gates, w_ss, kernel_width):
    """ValueError unless x_gates: (B, 4H, R, S) and w_ss: (4H, H, kernel_width) agree."""
    from ._checks import check_float_tensor, check_like, check_shape

    check_float_tensor(op, "x_gates", x_gates, 4)
    check_float_tensor(op, "w_ss", w_ss, 3)
    check_like(op, "w_ss", w_ss, "x_gates", x_gates)
    B, G, R, S = x_gates.shape
    if G % 4 != 0 or G == 0:
        raise ValueError(
            f"{op}: x_gates must have 4H channels (gates i, f, o, g), got {G} channels"
        )
    check_shape(op, "w_ss", w_ss, (G, G // 4, kernel_width))
