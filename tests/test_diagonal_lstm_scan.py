"""pixelar.ops.diagonal_lstm_scan: reference vs a per-position loop, C++ kernel vs reference
(forward and gradients, odd shapes, non-contiguous inputs, fp32/fp64), gradcheck, opcheck,
bad inputs, torch.compile."""
import pytest
import torch

import pixelar
from pixelar._extension import has_kernel
from pixelar.ops import diagonal_lstm_scan, diagonal_lstm_scan_ref

from conftest import TOL, report_diff

OP = torch.ops.pixelar.diagonal_lstm_scan if has_kernel("diagonal_lstm_scan", "CPU") else None
needs_cpp = pytest.mark.skipif(OP is None, reason="pixelar._C has no CPU diagonal_lstm_scan")

# (B, H, R, W): odd, non-square, batch 1, H = 3, one row or column, the paper's H = 16.
SHAPES = [(2, 3, 5, 7), (1, 2, 7, 3), (3, 4, 1, 6), (2, 5, 6, 1), (1, 16, 11, 9)]


def sample_inputs(B, H, R, W, dtype=torch.float64, requires_grad=False):
    S = R + W - 1
    x = torch.randn(B, 4 * H, R, S, dtype=dtype)
    w = 0.5 * torch.randn(4 * H, H, 2, dtype=dtype)
    return x.requires_grad_(requires_grad), w.requires_grad_(requires_grad)


def loop_scan(x, w):
    """Independent transcription: every skewed position (r, j) in turn, with explicit
    matrix-vector products for the row above (w[..., 0]) and the same row (w[..., 1])."""
    B, G, R, S = x.shape
    H = G // 4
    W = S - R + 1
    h = x.new_zeros(B, H, R, S)
    c = x.new_zeros(B, H, R, S)
    for j in range(S):
        for r in range(R):
            if not 0 <= j - r < W:
                continue  # skew padding: stays zero
            h_above = h[:, :, r - 1, j - 1] if r > 0 and j > 0 else x.new_zeros(B, H)
            h_left = h[:, :, r, j - 1] if j > 0 else x.new_zeros(B, H)
            c_left = c[:, :, r, j - 1] if j > 0 else x.new_zeros(B, H)
            pre = x[:, :, r, j] + h_above @ w[:, :, 0].T + h_left @ w[:, :, 1].T
            i, f, o, g = pre[:, :H], pre[:, H:2 * H], pre[:, 2 * H:3 * H], pre[:, 3 * H:]
            c[:, :, r, j] = torch.sigmoid(f) * c_left + torch.sigmoid(i) * torch.tanh(g)
            h[:, :, r, j] = torch.sigmoid(o) * torch.tanh(c[:, :, r, j])
    return h, c


def outside_mask(R, S):
    W = S - R + 1
    j = torch.arange(S).view(1, S)
    r = torch.arange(R).view(R, 1)
    return (j - r < 0) | (j - r >= W)


@pytest.mark.parametrize("shape", SHAPES[:4])
def test_reference_matches_position_loop(shape):
    x, w = sample_inputs(*shape)
    h, c = diagonal_lstm_scan_ref(x, w)
    h_loop, c_loop = loop_scan(x, w)
    report_diff("h", h, h_loop)
    report_diff("c", c, c_loop)
    torch.testing.assert_close(h, h_loop, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c, c_loop, rtol=1e-12, atol=1e-12)


def _compare(x, w, dtype, raw_op):
    """Forward and gradients of the kernel (through the op) vs the fp64 reference."""
    x = x.detach().requires_grad_()
    w = w.detach().requires_grad_()
    if raw_op:
        h, c = OP(x, w)
    else:
        with pixelar.ops.backend("cpp"):
            h, c = diagonal_lstm_scan(x, w)
    x64 = x.detach().double().requires_grad_()
    w64 = w.detach().double().requires_grad_()
    h_ref, c_ref = diagonal_lstm_scan_ref(x64, w64)
    gh, gc = torch.randn_like(h_ref), torch.randn_like(c_ref)
    grads = torch.autograd.grad((h * gh.to(dtype)).sum() + (c * gc.to(dtype)).sum(), (x, w))
    grads_ref = torch.autograd.grad((h_ref * gh).sum() + (c_ref * gc).sum(), (x64, w64))
    for name, out, ref in [("h", h, h_ref), ("c", c, c_ref), ("grad_x", grads[0], grads_ref[0]),
                           ("grad_w", grads[1], grads_ref[1])]:
        report_diff(name, out, ref)
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), ref, **TOL[dtype])


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_cpp_matches_reference(shape, dtype):
    x, w = sample_inputs(*shape, dtype=dtype)
    _compare(x, w, dtype, raw_op=False)


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpp_non_contiguous_inputs(dtype):
    B, H, R, W = 3, 3, 5, 4
    S = R + W - 1
    # x: a transposed view (batch and channel swapped) and a slice of a wider map.
    x_t = torch.randn(4 * H, B, R, S, dtype=dtype).transpose(0, 1)
    x_s = torch.randn(B, 4 * H, R, S + 5, dtype=dtype)[..., 2:2 + S]
    w = (0.5 * torch.randn(H, 2, 4 * H, dtype=dtype)).permute(2, 0, 1)
    assert not x_t.is_contiguous() and not x_s.is_contiguous() and not w.is_contiguous()
    for x in (x_t, x_s):
        _compare(x, w, dtype, raw_op=True)
        _compare(x, w, dtype, raw_op=False)


@needs_cpp
def test_outside_image_zero_and_no_gradient():
    x, w = sample_inputs(2, 3, 4, 6, requires_grad=True)
    h, c = OP(x, w)
    mask = outside_mask(4, 9)
    assert (h[:, :, mask] == 0).all() and (c[:, :, mask] == 0).all()
    (grad_x,) = torch.autograd.grad(h.sum() + c.sum(), x)
    assert (grad_x[:, :, mask] == 0).all()
    # Changing x in the padding changes nothing.
    x2 = x.detach().clone()
    x2[:, :, mask] = 1e3
    h2, c2 = OP(x2, w.detach())
    assert torch.equal(h2, h.detach()) and torch.equal(c2, c.detach())


@needs_cpp
def test_same_result_with_one_and_two_threads():
    x, w = sample_inputs(5, 4, 6, 7, dtype=torch.float32)
    h, c = OP(x, w)
    gh, gc = torch.randn_like(h), torch.randn_like(c)
    back = torch.ops.pixelar.diagonal_lstm_scan_backward
    grads = back(gh, gc, x, w, h, c)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        h1, c1 = OP(x, w)
        grads1 = back(gh, gc, x, w, h, c)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(h, h1) and torch.equal(c, c1)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads1))


@needs_cpp
def test_gradcheck_fp64():
    x, w = sample_inputs(2, 2, 3, 4, requires_grad=True)
    with pixelar.ops.backend("cpp"):
        assert torch.autograd.gradcheck(diagonal_lstm_scan, (x, w))


@needs_cpp
def test_opcheck():
    x, w = sample_inputs(2, 3, 4, 5, requires_grad=True)
    torch.library.opcheck(OP, (x, w))
    x, w = sample_inputs(1, 2, 3, 2)
    h, c = OP(x, w)
    torch.library.opcheck(torch.ops.pixelar.diagonal_lstm_scan_backward,
                          (torch.randn_like(h), torch.randn_like(c), x, w, h, c))


def test_wrapper_rejects_bad_inputs():
    x, w = sample_inputs(2, 3, 4, 5)
    with pytest.raises(ValueError, match="x_gates"):
        diagonal_lstm_scan(x[0], w)
    with pytest.raises(ValueError, match="w_ss"):
        diagonal_lstm_scan(x, w[:, :, :1])
    with pytest.raises(ValueError, match="4H channels"):
        diagonal_lstm_scan(x[:, :11], w)
    with pytest.raises(ValueError, match="floating-point"):
        diagonal_lstm_scan(x.long(), w)
    with pytest.raises(ValueError, match="dtype"):
        diagonal_lstm_scan(x, w.float())


@needs_cpp
def test_raw_op_rejects_bad_inputs():
    x, w = sample_inputs(2, 3, 4, 5)
    bad = [
        ((x[0], w), "4-D"),
        ((x, w[:, :, :1]), r"w_ss must have shape"),
        ((x[:, :11], w), "4H channels"),
        ((x.long(), w.long()), "float32 or float64"),
        ((x, w.float()), "dtype"),
        ((x[:, :, :, :3], w), "S = R \\+ W - 1"),  # S < R: no image column
    ]
    for args, message in bad:
        with pytest.raises(RuntimeError, match=message):
            OP(*args)
    h, c = OP(x, w)
    with pytest.raises(RuntimeError, match="grad_h must have shape"):
        torch.ops.pixelar.diagonal_lstm_scan_backward(h[:, :, :2], c, x, w, h, c)
    with pytest.raises(RuntimeError, match="c must have the dtype"):
        torch.ops.pixelar.diagonal_lstm_scan_backward(h, c, x, w, h, c.float())


@needs_cpp
def test_torch_compile_fullgraph():
    x, w = sample_inputs(2, 2, 3, 4, dtype=torch.float32, requires_grad=True)

    def f(x, w):
        h, c = OP(x, w)
        return (h * h).sum() + c.sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = compiled(x, w)
    grads = torch.autograd.grad(out, (x, w))
    out_ref = f(x, w)
    grads_ref = torch.autograd.grad(out_ref, (x, w))
    torch.testing.assert_close(out, out_ref)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref)
