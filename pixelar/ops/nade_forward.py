"""NADE outputs by the incremental hidden update (Larochelle & Murray 2011), its reference
and dispatch.

    a_0     = c
    h_d     = sigmoid(a_d)
    out_d   = V[d] @ h_d + b[d]              (O outputs per dimension)
    a_{d+1} = a_d + W[:, d] * x_d

O(B * D * Hd * O) work, never O(D^2 * Hd). NADE uses O = 1 (one Bernoulli logit per
dimension); RNADE uses O = 3K (mixture logits, means and log-scales).

The compiled ops: ``pixelar::nade_forward`` (the outputs), ``nade_forward_checkpointed``
(the outputs and a_d at d = 0, 32, 64, ...: (ceil(D / 32), B, Hd), the reference is
``nade_checkpoints_ref``) and ``nade_forward_backward`` (the five gradients; given the
checkpoints, the CPU kernel starts its replay from them instead of walking a_d anew;
``grad_x=False`` skips grad x, returned as an empty tensor: x is data in training).
"""

import torch

from .._extension import extension_loaded
from ._backend import dispatch, lazy, register
from ._checks import check_float_tensor, check_like, check_shape

OP = "nade_forward"


def nade_forward_ref(x, W, c, V, b):
    """Pure-PyTorch reference: a plain loop over the D dimensions (the specification).

    x: (B, D)  W: (Hd, D)  c: (Hd,)  V: (D, O, Hd)  b: (D, O)  ->  (B, D, O)
    """
    B, D = x.shape
    a = c.unsqueeze(0).expand(B, -1)
    outs = []
    for d in range(D):
        h = torch.sigmoid(a)
        outs.append(h @ V[d].T + b[d])
        a = a + x[:, d : d + 1] * W[:, d]
    if not outs:  # D = 0
        return b.unsqueeze(0).expand(B, 0, V.shape[1])
    return torch.stack(outs, dim=1)


def check_nade_inputs(x, W, c, V, b):
    check_float_tensor(OP, "x", x, 2)
    for name, t, nd in (("W", W, 2), ("c", c, 1), ("V", V, 3), ("b", b, 2)):
        check_float_tensor(OP, name, t, nd)
        check_like(OP, name, t, "x", x)
    B, D = x.shape
    Hd = W.shape[0]
    O = V.shape[1]
    check_shape(OP, "W", W, (Hd, D))
    check_shape(OP, "c", c, (Hd,))
    check_shape(OP, "V", V, (D, O, Hd))
    check_shape(OP, "b", b, (D, O))


def nade_forward(x, W, c, V, b):
    """NADE outputs on the backend in force (see pixelar.ops).

    x: (B, D)      inputs (binary values as floats for NADE; reals for RNADE)
    W: (Hd, D)     input-to-hidden weights, column d is added after dimension d
    c: (Hd,)       hidden bias
    V: (D, O, Hd)  per-dimension output weights
    b: (D, O)      per-dimension output bias
    Returns (B, D, O); out[:, d] depends only on x[:, :d]. Differentiable in every input.
    """
    check_nade_inputs(x, W, c, V, b)
    return dispatch(OP, x.device)(x, W, c, V, b)


CHECKPOINT_EVERY = 32  # pixelar/nade_checkpoints.h: a_d is saved at d = 0, 32, 64, ...


def nade_checkpoints_ref(x, W, c):
    """The hidden pre-activations that ``pixelar::nade_forward_checkpointed`` saves for the
    backward: a_d = c + W[:, :d] @ x[:, :d] at d = 0, 32, 64, ... (reference, in x's dtype).
    x: (B, D)  W: (Hd, D)  c: (Hd,)  ->  (ceil(D / 32), B, Hd)
    """
    B, D = x.shape
    a = c.unsqueeze(0).expand(B, -1)
    out = []
    for d in range(D):
        if d % CHECKPOINT_EVERY == 0:
            out.append(a)
        a = a + x[:, d : d + 1] * W[:, d]
    if not out:
        return x.new_empty(0, B, W.shape[0])
    return torch.stack(out)


def weight_layout(W):
    """W as the kernels take it: contiguous, or stored transposed (W.t() contiguous, as the
    NADE models keep it: the kernels read W^T and then need no transpose)."""
    return W if W.t().is_contiguous() else W.contiguous()


def _compiled(x, W, c, V, b):
    """The compiled kernels. When autograd will need the backward, through the checkpointed
    forward: its autograd hands the forward's hidden-state checkpoints to the backward (the
    CPU backward then skips the walk that finds them)."""
    args = (x.contiguous(), weight_layout(W), *(t.contiguous() for t in (c, V, b)))
    if torch.is_grad_enabled() and any(t.requires_grad for t in args):
        out, _ = torch.ops.pixelar.nade_forward_checkpointed(*args)
        return out
    return torch.ops.pixelar.nade_forward(*args)


register(
    OP,
    reference=nade_forward_ref,
    cpp=_compiled,
    cuda=_compiled,
    triton=lazy("pixelar.kernels.nade_forward", "nade_forward_triton"),
)


def _register():
    if not extension_loaded():
        return

    @torch.library.register_fake("pixelar::nade_forward")
    def _fake(x, W, c, V, b):
        torch._check(x.dim() == 2 and V.dim() == 3, lambda: "nade_forward: bad ranks")
        return x.new_empty(x.shape[0], x.shape[1], V.shape[1])

    @torch.library.register_fake("pixelar::nade_forward_checkpointed")
    def _fake_checkpointed(x, W, c, V, b):
        torch._check(x.dim() == 2 and V.dim() == 3, lambda: "nade_forward: bad ranks")
        B, D = x.shape
        ckpt_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        n = (D + CHECKPOINT_EVERY - 1) // CHECKPOINT_EVERY
        return (
            x.new_empty(B, D, V.shape[1]),
            x.new_empty(n, B, W.shape[0], dtype=ckpt_dtype),
        )

    @torch.library.register_fake("pixelar::nade_forward_backward")
    def _fake_backward(grad_out, x, W, c, V, b, checkpoints=None, grad_x=True):
        grads = [torch.empty_like(t) for t in (x, W, c, V, b)]
        if not grad_x:
            grads[0] = x.new_empty(0)
        return tuple(grads)

    def _setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def _gradients(ctx, grad_out, inputs, checkpoints=None):
        grad_x = ctx.needs_input_grad[0]  # False in training: x is data
        grads = torch.ops.pixelar.nade_forward_backward(
            grad_out.contiguous(), *inputs, checkpoints=checkpoints, grad_x=grad_x
        )
        return (grads[0] if grad_x else None, *grads[1:])

    def _backward(ctx, grad_out):
        return _gradients(ctx, grad_out, ctx.saved_tensors)

    torch.library.register_autograd(
        "pixelar::nade_forward", _backward, setup_context=_setup_context
    )

    def _setup_context_checkpointed(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        # No zero-filled gradient for the checkpoints (a (ceil(D / 32), B, Hd) fill: 0.7 ms
        # of a 10 ms NADE training step at B = 64, Hd = 500, 28x28).
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*inputs, output[1])

    def _backward_checkpointed(ctx, grad_out, _grad_checkpoints):
        if grad_out is None:  # the outputs were not used: no gradient flows
            return (None,) * 5
        *inputs, checkpoints = ctx.saved_tensors
        return _gradients(ctx, grad_out, inputs, checkpoints)

    torch.library.register_autograd(
        "pixelar::nade_forward_checkpointed",
        _backward_checkpointed,
        setup_context=_setup_context_checkpointed,
    )


_register()
