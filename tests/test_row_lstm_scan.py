"""pixelar.ops.row_lstm_scan: reference vs a per-position loop, C++ kernel vs reference
(forward and gradients, odd shapes, non-contiguous inputs, fp32/fp64), gradcheck, opcheck,
bad inputs, torch.compile."""
import pytest
import torch

import pixelar
from pixelar._extension import has_kernel
from pixelar.ops import row_lstm_scan, row_lstm_scan_ref

from conftest import TOL, report_diff

OP = torch.ops.pixelar.row_lstm_scan if has_kernel("row_lstm_scan", "CPU") else None
needs_cpp = pytest.mark.skipif(OP is None, reason="pixelar._C has no CPU row_lstm_scan")

# (B, H, R, W): odd, non-square, batch 1, H = 3, one row, one column, a wider hidden size.
SHAPES = [(2, 3, 5, 7), (1, 2, 7, 3), (3, 4, 1, 6), (2, 3, 6, 1), (2, 32, 5, 9)]


def sample_inputs(B, H, R, W, dtype=torch.float64, requires_grad=False):
    x = torch.randn(B, 4 * H, R, W, dtype=dtype)
    w = (0.5 / H ** 0.5) * torch.randn(4 * H, H, 3, dtype=dtype)
    return x.requires_grad_(requires_grad), w.requires_grad_(requires_grad)


def loop_scan(x, w):
    """Independent transcription: every position (r, col) in turn; the state input is an
    explicit matrix-vector product per tap k of the row above, columns col - 1, col, col + 1."""
    B, G, R, W = x.shape
    H = G // 4
    h = x.new_zeros(B, H, R, W)
    c = x.new_zeros(B, H, R, W)
    for r in range(R):
        for col in range(W):
            pre = x[:, :, r, col].clone()
            if r > 0:
                for k in range(3):
                    cc = col + k - 1
                    if 0 <= cc < W:
                        pre = pre + h[:, :, r - 1, cc] @ w[:, :, k].T
            c_up = c[:, :, r - 1, col] if r > 0 else x.new_zeros(B, H)
            i, f, o, g = pre[:, :H], pre[:, H:2 * H], pre[:, 2 * H:3 * H], pre[:, 3 * H:]
            c[:, :, r, col] = torch.sigmoid(f) * c_up + torch.sigmoid(i) * torch.tanh(g)
            h[:, :, r, col] = torch.sigmoid(o) * torch.tanh(c[:, :, r, col])
    return h, c


@pytest.mark.parametrize("shape", SHAPES[:4])
def test_reference_matches_position_loop(shape):
    x, w = sample_inputs(*shape)
    h, c = row_lstm_scan_ref(x, w)
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
            h, c = row_lstm_scan(x, w)
    x64 = x.detach().double().requires_grad_()
    w64 = w.detach().double().requires_grad_()
    h_ref, c_ref = row_lstm_scan_ref(x64, w64)
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
    x_t = torch.randn(B, 4 * H, W, R, dtype=dtype).transpose(2, 3)  # column-major rows
    x_s = torch.randn(B, 8 * H, R, W + 3, dtype=dtype)[:, ::2, :, 1:1 + W]
    w = (0.3 * torch.randn(3, H, 4 * H, dtype=dtype)).permute(2, 1, 0)
    assert not x_t.is_contiguous() and not x_s.is_contiguous() and not w.is_contiguous()
    for x in (x_t, x_s):
        _compare(x, w, dtype, raw_op=True)
        _compare(x, w, dtype, raw_op=False)


@needs_cpp
def test_same_result_with_one_and_two_threads():
    x, w = sample_inputs(5, 4, 6, 7, dtype=torch.float32)
    h, c = OP(x, w)
    gh, gc = torch.randn_like(h), torch.randn_like(c)
    back = torch.ops.pixelar.row_lstm_scan_backward
    grads = back(gh, gc, x, w, h, c)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        h1, c1 = OP(x, w)
        grads1 = back(gh, gc, x, w, h, c)
    finally:
        torch.set_num_threads(previous)
    # The elementwise passes split work by thread; the matrix products are torch's BLAS,
    # whose blocking may depend on the thread count: equal up to rounding.
    for a, b in zip((h, c) + tuple(grads), (h1, c1) + tuple(grads1)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@needs_cpp
def test_gradcheck_fp64():
    x, w = sample_inputs(2, 2, 3, 4, requires_grad=True)
    with pixelar.ops.backend("cpp"):
        assert torch.autograd.gradcheck(row_lstm_scan, (x, w))


@needs_cpp
def test_opcheck():
    x, w = sample_inputs(2, 3, 4, 5, requires_grad=True)
    torch.library.opcheck(OP, (x, w))
    x, w = sample_inputs(1, 2, 3, 2)
    h, c = OP(x, w)
    torch.library.opcheck(torch.ops.pixelar.row_lstm_scan_backward,
                          (torch.randn_like(h), torch.randn_like(c), x, w, h, c))


def test_wrapper_rejects_bad_inputs():
    x, w = sample_inputs(2, 3, 4, 5)
    with pytest.raises(ValueError, match="x_gates"):
        row_lstm_scan(x[0], w)
    with pytest.raises(ValueError, match="w_ss"):
        row_lstm_scan(x, w[:, :, :2])
    with pytest.raises(ValueError, match="4H channels"):
        row_lstm_scan(x[:, :10], w)
    with pytest.raises(ValueError, match="floating-point"):
        row_lstm_scan(x.int(), w)
    with pytest.raises(ValueError, match="dtype"):
        row_lstm_scan(x, w.float())


@needs_cpp
def test_raw_op_rejects_bad_inputs():
    x, w = sample_inputs(2, 3, 4, 5)
    bad = [
        ((x[0], w), "4-D"),
        ((x, w[:, :, :2]), "w_ss must have shape"),
        ((x, w[:, :2]), "w_ss must have shape"),
        ((x[:, :10], w), "4H channels"),
        ((x.int(), w.int()), "float32 or float64"),
        ((x, w.float()), "dtype"),
    ]
    for args, message in bad:
        with pytest.raises(RuntimeError, match=message):
            OP(*args)
    h, c = OP(x, w)
    with pytest.raises(RuntimeError, match="grad_c must have shape"):
        torch.ops.pixelar.row_lstm_scan_backward(h, c[:1], x, w, h, c)
    with pytest.raises(RuntimeError, match="h must be a 4-D"):
        torch.ops.pixelar.row_lstm_scan_backward(h, c, x, w, h[0], c)


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
