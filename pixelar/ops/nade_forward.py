"""NADE outputs by the incremental hidden update (Larochelle & Murray 2011), its reference
and dispatch.

    a_0     = c
    h_d     = sigmoid(a_d)
    out_d   = V[d] @ h_d + b[d]              (O outputs per dimension)
    a_{d+1} = a_d + W[:, d] * x_d

O(B * D * Hd * O) work, never O(D^2 * Hd). NADE uses O = 1 (one Bernoulli logit per
dimension); RNADE uses O = 3K (mixture logits, means and log-scales).
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


def _compiled(x, W, c, V, b):
    return torch.ops.pixelar.nade_forward(*(t.contiguous() for t in (x, W, c, V, b)))


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

    @torch.library.register_fake("pixelar::nade_forward_backward")
    def _fake_backward(grad_out, x, W, c, V, b):
        return tuple(torch.empty_like(t) for t in (x, W, c, V, b))

    def _setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def _backward(ctx, grad_out):
        grads = torch.ops.pixelar.nade_forward_backward(grad_out.contiguous(), *ctx.saved_tensors)
        return tuple(grads)

    torch.library.register_autograd(
        "pixelar::nade_forward", _backward, setup_context=_setup_context
    )


_register()
