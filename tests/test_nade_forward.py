"""pixelar.ops.nade_forward: reference vs the direct O(D^2 H) formula, C++ kernel vs
reference (forward and all five gradients, odd shapes, non-contiguous inputs, fp32/fp64),
the checkpointed forward (its checkpoints vs the reference, the backward bitwise the same
with and without them), gradcheck, opcheck, bad inputs, torch.compile."""

import pytest
import torch

import pixelar
from pixelar._extension import has_kernel
from pixelar.ops import nade_forward, nade_forward_ref
from pixelar.ops.nade_forward import nade_checkpoints_ref

from conftest import TOL, report_diff

OP = torch.ops.pixelar.nade_forward if has_kernel("nade_forward", "CPU") else None
BACKWARD = torch.ops.pixelar.nade_forward_backward if OP is not None else None
CHECKPOINTED = torch.ops.pixelar.nade_forward_checkpointed if OP is not None else None
needs_cpp = pytest.mark.skipif(OP is None, reason="pixelar._C has no CPU nade_forward")

# (B, D, Hd, O): batch 1, odd sizes, several batch blocks (B > 8), several hidden chunks
# (Hd > 128), several checkpoint segments (D > 32), RNADE-like O > 1.
SHAPES = [(1, 7, 5, 1), (3, 10, 3, 4), (20, 45, 30, 1), (9, 70, 300, 1), (11, 33, 130, 6)]


def sample_inputs(B, D, Hd, O, dtype=torch.float64, binary=True, requires_grad=False):
    x = torch.randint(0, 2, (B, D)).to(dtype) if binary else torch.randn(B, D, dtype=dtype)
    tensors = [
        x,
        torch.randn(Hd, D, dtype=dtype) / D**0.5,
        torch.randn(Hd, dtype=dtype),
        torch.randn(D, O, Hd, dtype=dtype) / Hd**0.5,
        torch.randn(D, O, dtype=dtype),
    ]
    return [t.requires_grad_(requires_grad) for t in tensors]


def direct_formula(x, W, c, V, b):
    """a_d = c + W[:, :d] x[:, :d], out_d = V[d] sigmoid(a_d) + b[d]: O(D^2 H), no recurrence."""
    B, D = x.shape
    out = x.new_empty(B, D, V.shape[1])
    for d in range(D):
        a = c + x[:, :d] @ W[:, :d].T
        out[:, d] = torch.sigmoid(a) @ V[d].T + b[d]
    return out


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("shape", SHAPES[:3])
def test_reference_matches_direct_formula(shape, binary):
    inputs = sample_inputs(*shape, binary=binary)
    out = nade_forward_ref(*inputs)
    expected = direct_formula(*inputs)
    report_diff("out", out, expected)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def _compare(inputs, dtype, raw_op):
    inputs = [t.detach().requires_grad_() for t in inputs]
    if raw_op:
        out = OP(*inputs)
    else:
        with pixelar.ops.backend("cpp"):
            out = nade_forward(*inputs)
    inputs64 = [t.detach().double().requires_grad_() for t in inputs]
    ref = nade_forward_ref(*inputs64)
    g = torch.randn_like(ref)
    # (an input that an empty output does not use has a zero gradient)
    grads = torch.autograd.grad(
        (out * g.to(dtype)).sum(), inputs, allow_unused=True, materialize_grads=True
    )
    grads_ref = torch.autograd.grad(
        (ref * g).sum(), inputs64, allow_unused=True, materialize_grads=True
    )
    names = ["grad_x", "grad_W", "grad_c", "grad_V", "grad_b"]
    for name, o, r in [("out", out, ref)] + list(zip(names, grads, grads_ref)):
        report_diff(name, o, r)
        assert o.dtype == dtype
        torch.testing.assert_close(o.double(), r, **TOL[dtype])


@needs_cpp
@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_cpp_matches_reference(shape, dtype, binary):
    _compare(sample_inputs(*shape, dtype=dtype, binary=binary), dtype, raw_op=False)


@needs_cpp
@pytest.mark.parametrize("shape", [(0, 5, 4, 1), (3, 0, 4, 1), (3, 5, 0, 1), (3, 5, 4, 0)])
def test_cpp_empty_dimensions_match_reference(shape):
    # B, D, Hd or O = 0: forward and every gradient as the reference (Hd = 0: out = b and
    # zero gradients but grad_b; the backward once divided by the number of hidden chunks)
    _compare(sample_inputs(*shape), torch.float64, raw_op=True)


@needs_cpp
@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES + [(3, 64, 9, 1), (2, 65, 9, 2), (3, 5, 4, 0)])
def test_checkpointed_forward(shape, dtype, binary):
    # the same outputs as nade_forward; checkpoints a_d at d = 0, 32, ... as the reference
    # (D = 64 and 65: a segment boundary at the last step and one past it); the backward
    # given them returns bitwise the gradients it finds by its own walk
    inputs = sample_inputs(*shape, dtype=dtype, binary=binary)
    out, ckpt = CHECKPOINTED(*inputs)
    assert torch.equal(out, OP(*inputs))
    B, D, Hd, _ = shape
    assert ckpt.shape == ((D + 31) // 32, B, Hd) and ckpt.dtype == dtype
    ref = nade_checkpoints_ref(*(t.double() for t in inputs[:3]))
    report_diff("checkpoints", ckpt, ref)
    torch.testing.assert_close(ckpt.double(), ref, **TOL[dtype])
    if binary:  # x_d W[:, d] is exact: the same additions in the same order
        assert torch.equal(ckpt, nade_checkpoints_ref(*inputs[:3]))
    g = torch.randn_like(out)
    grads = BACKWARD(g, *inputs)
    grads_ckpt = BACKWARD(g, *inputs, checkpoints=ckpt)
    for a, b in zip(grads, grads_ckpt):
        assert torch.equal(a, b)
    # grad_x=False: the other four bitwise the same, an empty tensor for grad x
    for ck in (None, ckpt):
        no_gx = BACKWARD(g, *inputs, checkpoints=ck, grad_x=False)
        assert no_gx[0].shape == (0,) and no_gx[0].dtype == dtype
        for a, b in zip(grads[1:], no_gx[1:]):
            assert torch.equal(a, b)


@needs_cpp
@pytest.mark.parametrize("shape", [(0, 5, 4, 1), (3, 0, 4, 1), (3, 5, 0, 1), (3, 5, 4, 0)])
def test_checkpointed_empty_dimensions(shape):
    inputs = sample_inputs(*shape)
    out, ckpt = CHECKPOINTED(*inputs)
    torch.testing.assert_close(out, nade_forward_ref(*inputs))
    torch.testing.assert_close(ckpt, nade_checkpoints_ref(*inputs[:3]))
    g = torch.randn_like(out)
    for a, b in zip(BACKWARD(g, *inputs), BACKWARD(g, *inputs, checkpoints=ckpt)):
        assert torch.equal(a, b)


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_wrapper_gradients_without_grad_x(dtype):
    # x as data (no grad): the backward skips grad x; W, c, V, b as with x differentiable
    inputs = sample_inputs(9, 70, 300, 1, dtype=dtype)
    params = [t.requires_grad_() for t in inputs[1:]]
    g = torch.randn(9, 70, 1, dtype=dtype)
    with pixelar.ops.backend("cpp"):
        grads = torch.autograd.grad((nade_forward(inputs[0], *params) * g).sum(), params)
        x = inputs[0].clone().requires_grad_()
        grads_x = torch.autograd.grad((nade_forward(x, *params) * g).sum(), [x, *params])
    assert grads_x[0].shape == x.shape
    for a, b in zip(grads, grads_x[1:]):
        assert torch.equal(a, b)


@needs_cpp
def test_backward_rejects_bad_checkpoints():
    inputs = sample_inputs(3, 40, 4, 1)
    out, ckpt = CHECKPOINTED(*inputs)
    g = torch.randn_like(out)
    bad = [
        (ckpt[:1], r"checkpoints must be \(ceil\(D / 32\), B, Hd\) = \(2, 3, 4\), got \(1, 3, 4\)"),
        (ckpt[:, :2], "checkpoints must be"),
        (ckpt.float(), "checkpoints must be Double for x of Double, got Float"),
    ]
    for c, message in bad:
        with pytest.raises(RuntimeError, match=message):
            BACKWARD(g, *inputs, checkpoints=c)
    # non-contiguous checkpoints are read as their values
    strided = ckpt.transpose(0, 1).contiguous().transpose(0, 1)
    for a, b in zip(BACKWARD(g, *inputs), BACKWARD(g, *inputs, checkpoints=strided)):
        assert torch.equal(a, b)


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpp_non_contiguous_inputs(dtype):
    B, D, Hd, O = 5, 12, 9, 2
    x = torch.randint(0, 2, (D, B)).to(dtype).T  # transposed
    W = (torch.randn(D, Hd, dtype=dtype) / 4).T  # W^T stored
    c = torch.randn(2 * Hd, dtype=dtype)[::2]  # strided
    V = (torch.randn(Hd, O, D, dtype=dtype) / 3).permute(2, 1, 0)  # permuted
    b = torch.randn(O, D, dtype=dtype).T
    inputs = [x, W, c, V, b]
    assert not any(t.is_contiguous() for t in inputs)
    _compare(inputs, dtype, raw_op=True)
    _compare(inputs, dtype, raw_op=False)


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpp_weights_stored_transposed_give_the_same_bits(dtype):
    """W stored transposed (W.t() contiguous: the NADE models' layout) is read in place, and
    its gradient comes back in that layout, as the view of the kernel's grad of W^T: the
    outputs and all five gradients are bitwise those of a contiguous W."""
    B, D, Hd, O = 20, 45, 300, 1  # several batch blocks, hidden chunks and segments
    x, W, c, V, b = sample_inputs(B, D, Hd, O, dtype=dtype)
    Wt = W.t().contiguous().t()
    assert Wt.t().is_contiguous() and not Wt.is_contiguous()
    out, ckpt = CHECKPOINTED(x, W, c, V, b)
    out_t, ckpt_t = CHECKPOINTED(x, Wt, c, V, b)
    assert torch.equal(out, out_t) and torch.equal(ckpt, ckpt_t)
    g = torch.randn_like(out)
    grads = BACKWARD(g, x, W, c, V, b, checkpoints=ckpt)
    grads_t = BACKWARD(g, x, Wt, c, V, b, checkpoints=ckpt_t)
    for a, bt in zip(grads, grads_t):
        assert torch.equal(a, bt)
    assert grads_t[1].stride() == Wt.stride()
    torch.library.opcheck(BACKWARD, (g, x, Wt, c, V, b), {"checkpoints": ckpt_t})


def _walk_case(case):
    """Inputs that stress the float kernel's hidden walk (csrc/cpu/nade_hidden.h), where
    e = exp(-a) is updated by products for x_d = 1 and must restart from an exact exp in
    time: (B, D, Hd) = (3, 70, 37): two checkpoint segments and more, a vector tail."""
    B, D, Hd = 3, 70, 37
    x, W, c, V, b = sample_inputs(B, D, Hd, 1)
    if case == "saturated then back":
        # a starts at -100 (exp(-a) saturates at the float maximum) and climbs by 6 a step:
        # products from a saturated e would give h ~ 1 where sigmoid(a) is still ~0.
        x = torch.ones(B, D, dtype=x.dtype)
        W = torch.full((Hd, D), 6.0, dtype=x.dtype) + 0.1 * torch.randn(Hd, D, dtype=x.dtype)
        c = torch.full((Hd,), -100.0, dtype=x.dtype)
    elif case == "long runs of ones":
        x = torch.ones(B, D, dtype=x.dtype)
        x[1, ::9] = 0
    elif case == "mixed inputs and a large column":
        x = torch.randint(0, 2, (B, D)).to(x.dtype)
        x[0, 5] = 0.5
        x[2, 40] = -1.0
        W[:, 17] *= 50
    return [x, W, c, V, b]


@needs_cpp
@pytest.mark.parametrize(
    "case", ["saturated then back", "long runs of ones", "mixed inputs and a large column"]
)
def test_float_hidden_walk_follows_the_reference(case):
    _compare([t.float() for t in _walk_case(case)], torch.float32, raw_op=True)


@needs_cpp
def test_zero_inputs_with_non_finite_weights_follow_the_reference():
    # x_d = 0 leaves a unchanged only when W[:, d] is finite: 0 * inf is NaN.
    x, W, c, V, b = sample_inputs(3, 9, 6, 1)
    x[:, 4] = 0
    W[2, 4] = float("inf")
    out = OP(x, W, c, V, b)
    ref = nade_forward_ref(x, W, c, V, b)
    torch.testing.assert_close(out, ref, equal_nan=True)
    assert out[:, 5:].isnan().all() and not out[:, :5].isnan().any()


@needs_cpp
def test_one_and_two_threads_agree():
    inputs = sample_inputs(20, 40, 50, 2, dtype=torch.float32)
    out = OP(*inputs)
    g = torch.randn_like(out)
    grads = BACKWARD(g, *inputs)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        out1 = OP(*inputs)
        grads1 = BACKWARD(g, *inputs)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(out, out1)  # forward partial sums are combined in a fixed order
    for a, b in zip(grads, grads1):  # backward may split the batch by thread count
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@needs_cpp
@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(20, 45, 300, 1), (11, 33, 130, 6)])
def test_backward_matches_reference_at_every_thread_count(shape, threads):
    """The backward's accumulators at each thread count (csrc/cpu/nade_forward.cpp,
    Accumulators): one block per hidden chunk (Hd = 300 and 130 give two chunks at 2
    threads and more), and batch groups with their own blocks, added up, where there are
    fewer chunks than threads (3 and 4 threads at B = 20; B = 11 is one batch block)."""
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        _compare(sample_inputs(*shape, dtype=torch.float64), torch.float64, raw_op=True)
        _compare(sample_inputs(*shape, dtype=torch.float32), torch.float32, raw_op=True)
    finally:
        torch.set_num_threads(previous)


@needs_cpp
def test_gradcheck_fp64():
    inputs = sample_inputs(3, 6, 4, 2, binary=False, requires_grad=True)
    with pixelar.ops.backend("cpp"):
        assert torch.autograd.gradcheck(nade_forward, tuple(inputs))


@needs_cpp
def test_opcheck():
    inputs = sample_inputs(3, 6, 4, 2, requires_grad=True)
    torch.library.opcheck(OP, tuple(inputs))
    inputs = sample_inputs(2, 5, 3, 1)
    out = OP(*inputs)
    torch.library.opcheck(BACKWARD, (torch.randn_like(out), *inputs))
    inputs = sample_inputs(3, 40, 4, 2, requires_grad=True)
    torch.library.opcheck(CHECKPOINTED, tuple(inputs))
    inputs = sample_inputs(3, 40, 4, 2)
    out, ckpt = CHECKPOINTED(*inputs)
    torch.library.opcheck(BACKWARD, (torch.randn_like(out), *inputs), {"checkpoints": ckpt})
    torch.library.opcheck(
        BACKWARD, (torch.randn_like(out), *inputs), {"checkpoints": ckpt, "grad_x": False}
    )


def test_wrapper_rejects_bad_inputs():
    x, W, c, V, b = sample_inputs(3, 6, 4, 2)
    with pytest.raises(ValueError, match="x"):
        nade_forward(x[0], W, c, V, b)
    with pytest.raises(ValueError, match="W must have shape"):
        nade_forward(x, W[:, :5], c, V, b)
    with pytest.raises(ValueError, match="V must have shape"):
        nade_forward(x, W, c, V[:, :, :3], b)
    with pytest.raises(ValueError, match="floating-point"):
        nade_forward(x.long(), W, c, V, b)
    with pytest.raises(ValueError, match="dtype"):
        nade_forward(x, W.float(), c, V, b)


@needs_cpp
def test_raw_op_rejects_bad_inputs():
    x, W, c, V, b = sample_inputs(3, 6, 4, 2)
    bad = [
        ((x[0], W, c, V, b), "x must be a 2-D"),
        ((x, W[:, :5], c, V, b), "W must have shape"),
        ((x, W, c[:3], V, b), "c must have shape"),
        ((x, W, c, V[:, :, :3], b), "V must have shape"),
        ((x, W, c, V, b[:, :1]), "b must have shape"),
        ((x.long(), W, c, V, b), "float32 or float64"),
        ((x, W.float(), c, V, b), "W must have the dtype"),
    ]
    for args, message in bad:
        with pytest.raises(RuntimeError, match=message):
            OP(*args)
    out = OP(x, W, c, V, b)
    with pytest.raises(RuntimeError, match="grad_out must have shape"):
        BACKWARD(out[:, :5], x, W, c, V, b)


@needs_cpp
def test_torch_compile_fullgraph():
    inputs = sample_inputs(4, 8, 6, 1, dtype=torch.float32, requires_grad=True)

    def f(x, W, c, V, b):
        return torch.nn.functional.binary_cross_entropy_with_logits(
            OP(x, W, c, V, b).squeeze(-1), x
        )

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    loss = compiled(*inputs)

    # the checkpointed op, as the wrapper calls it (its second output is not differentiable)
    def f_ckpt(x, W, c, V, b):
        out, _ = CHECKPOINTED(x, W, c, V, b)
        return torch.nn.functional.binary_cross_entropy_with_logits(out.squeeze(-1), x)

    loss_ckpt = torch.compile(f_ckpt, fullgraph=True, backend="aot_eager")(*inputs)
    grads_ckpt = torch.autograd.grad(loss_ckpt, inputs[1:])
    grads = torch.autograd.grad(loss, inputs[1:])
    loss_ref = f(*inputs)
    grads_ref = torch.autograd.grad(loss_ref, inputs[1:])
    torch.testing.assert_close(loss, loss_ref)
    torch.testing.assert_close(loss_ckpt, loss_ref)
    for g, g_ckpt, g_ref in zip(grads, grads_ckpt, grads_ref):
        torch.testing.assert_close(g, g_ref)
        torch.testing.assert_close(g_ckpt, g_ref)
