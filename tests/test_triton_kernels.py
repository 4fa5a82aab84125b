"""Triton kernels (pixelar/kernels/) against the pure-PyTorch references, forward and
gradients, run by Triton's interpreter on CPU tensors: no GPU needed.

TRITON_INTERPRET=1 is set while this module imports pixelar.kernels (a @triton.jit function
becomes interpreted or compiled when its module is imported), then restored, and set again
around each test here only, so other test modules see the environment they were given.
Small shapes only (the interpreter runs each program in numpy); odd sizes so every padding
mask is used. Tolerances: fp32 rtol 3e-4 / atol 1e-4 (conftest.TOL); fp64 1e-9 / 1e-10.
"""

import importlib.util
import os

import pytest
import torch

import pixelar
from pixelar.ops import diagonal_lstm_scan_ref, nade_forward_ref, row_lstm_scan_ref
from pixelar.ops.conv_residual_block import conv_residual_block_ref

from conftest import TOL, report_diff

if importlib.util.find_spec("triton") is None:
    pytest.skip(
        "triton is not installed: the Triton kernels cannot be tested (pip install triton)",
        allow_module_level=True,
    )

_previous = os.environ.get("TRITON_INTERPRET")
os.environ["TRITON_INTERPRET"] = "1"
try:
    from pixelar.kernels import conv_residual_block as crb_k
    from pixelar.kernels import diagonal_lstm_scan as diag_k
    from pixelar.kernels import nade_forward as nade_k
    from pixelar.kernels import row_lstm_scan as row_k
finally:
    if _previous is None:
        del os.environ["TRITON_INTERPRET"]
    else:
        os.environ["TRITON_INTERPRET"] = _previous


@pytest.fixture(autouse=True)
def _interpreted(monkeypatch):
    """Run each test under the interpreter; the kernels must have been created by it."""
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(diag_k._diagonal_fwd_kernel, InterpretedFunction):
        pytest.skip(
            "pixelar.kernels was imported before TRITON_INTERPRET=1 was set; run "
            "this file on its own: pytest tests/test_triton_kernels.py"
        )
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def assert_close(name, out, ref, dtype):
    report_diff(name, out, ref)
    torch.testing.assert_close(out, ref, **TOL[dtype])


def lstm_case(B, H, R, S, K, dtype, scale=0.5):
    x = torch.randn(B, 4 * H, R, S, dtype=dtype, requires_grad=True)
    w = (scale * torch.randn(4 * H, H, K, dtype=dtype)).requires_grad_()
    return x, w


def check_scan(name, fn, ref_fn, x, w, only_h=False):
    h, c = fn(x, w)
    h_ref, c_ref = ref_fn(x, w)
    assert_close(f"{name} h", h, h_ref, x.dtype)
    assert_close(f"{name} c", c, c_ref, x.dtype)
    gh, gc = torch.randn_like(h), torch.randn_like(c)
    loss = (h * gh).sum() if only_h else (h * gh).sum() + (c * gc).sum()
    loss_ref = (h_ref * gh).sum() if only_h else (h_ref * gh).sum() + (c_ref * gc).sum()
    grads = torch.autograd.grad(loss, (x, w))
    grads_ref = torch.autograd.grad(loss_ref, (x, w))
    assert_close(f"{name} grad x_gates", grads[0], grads_ref[0], x.dtype)
    assert_close(f"{name} grad w_ss", grads[1], grads_ref[1], x.dtype)


# (B, H, R, W): batch 1, odd sizes, H not a power of two, W < R and W > R.
SCAN_SHAPES = [(1, 3, 5, 7), (2, 5, 4, 3), (1, 16, 3, 2), (2, 1, 1, 1)]


@pytest.mark.parametrize("B,H,R,W", SCAN_SHAPES)
def test_diagonal_lstm_scan(B, H, R, W):
    x, w = lstm_case(B, H, R, R + W - 1, 2, torch.float32)
    check_scan("diagonal", diag_k.diagonal_lstm_scan_triton, diagonal_lstm_scan_ref, x, w)


@pytest.mark.parametrize("B,H,R,W", SCAN_SHAPES)
def test_row_lstm_scan(B, H, R, W):
    x, w = lstm_case(B, H, R, W, 3, torch.float32)
    check_scan("row", row_k.row_lstm_scan_triton, row_lstm_scan_ref, x, w)


def test_scans_float64_and_only_h_used():
    x, w = lstm_case(2, 3, 4, 6, 2, torch.float64)  # R = 4, W = 3
    check_scan(
        "diagonal fp64", diag_k.diagonal_lstm_scan_triton, diagonal_lstm_scan_ref, x, w, only_h=True
    )
    x, w = lstm_case(2, 3, 4, 3, 3, torch.float64)
    check_scan("row fp64", row_k.row_lstm_scan_triton, row_lstm_scan_ref, x, w, only_h=True)


@pytest.mark.parametrize(
    "module,ref_fn,K", [(diag_k, diagonal_lstm_scan_ref, 2), (row_k, row_lstm_scan_ref, 3)]
)
def test_scan_several_hidden_blocks(module, ref_fn, K):
    """H = 17 in blocks of 16: two output blocks and two input blocks per step (the
    paper's Row LSTM, H = 128, runs in eight)."""
    B, H, R, W = 1, 17, 2, 3
    S = R + W - 1 if K == 2 else W
    x, w = lstm_case(B, H, R, S, K, torch.float32)
    x, w = x.detach(), w.detach()
    h_ref, c_ref = ref_fn(x, w)
    h, c = module._fwd(x, w, block=16)
    assert_close("h (16-unit blocks)", h, h_ref, x.dtype)
    assert_close("c (16-unit blocks)", c, c_ref, x.dtype)
    gh, gc = torch.randn_like(h), torch.randn_like(c)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    hr, cr = ref_fn(xr, wr)
    gx_ref, gw_ref = torch.autograd.grad((hr * gh).sum() + (cr * gc).sum(), (xr, wr))
    gx, gw = module._bwd(gh, gc, x, w, h, c, block=16)
    assert_close("grad x_gates (16-unit blocks)", gx, gx_ref, x.dtype)
    assert_close("grad w_ss (16-unit blocks)", gw, gw_ref, x.dtype)


def test_diagonal_scan_zero_outside_image():
    x, w = lstm_case(1, 2, 4, 6, 2, torch.float32)  # R = 4, W = 3, S = 6
    h, c = diag_k.diagonal_lstm_scan_triton(x.detach(), w.detach())
    for r in range(4):
        for j in range(6):
            if not 0 <= j - r < 3:
                assert h[0, :, r, j].abs().max() == 0 and c[0, :, r, j].abs().max() == 0


def nade_case(B, D, Hd, O, dtype):
    x = torch.randint(0, 2, (B, D)).to(dtype).requires_grad_()
    W = torch.randn(Hd, D, dtype=dtype, requires_grad=True)
    c = torch.randn(Hd, dtype=dtype, requires_grad=True)
    V = torch.randn(D, O, Hd, dtype=dtype, requires_grad=True)
    b = torch.randn(D, O, dtype=dtype, requires_grad=True)
    return x, W, c, V, b


# (B, D, Hd, O): batch 1; O = 1 (NADE) and O = 3 use the broadcast sums, O = 17 the
# tl.dot path (RNADE-like); Hd = 70 spans two hidden tiles; B = 17 two batch tiles.
NADE_SHAPES = [(1, 5, 3, 1), (3, 7, 20, 1), (17, 5, 70, 3), (2, 4, 9, 17)]


@pytest.mark.parametrize("B,D,Hd,O", NADE_SHAPES)
def test_nade_forward(B, D, Hd, O):
    inputs = nade_case(B, D, Hd, O, torch.float32)
    out = nade_k.nade_forward_triton(*inputs)
    ref = nade_forward_ref(*inputs)
    assert_close("nade out", out, ref, torch.float32)
    g = torch.randn_like(out)
    grads = torch.autograd.grad((out * g).sum(), inputs)
    grads_ref = torch.autograd.grad((ref * g).sum(), inputs)
    for name, a, b in zip("xWcVb", grads, grads_ref):
        assert_close(f"nade grad {name}", a, b, torch.float32)


@pytest.mark.parametrize("B,D,Hd,O", [(0, 5, 3, 1), (3, 0, 3, 1), (3, 5, 0, 1), (3, 5, 3, 0)])
def test_nade_forward_empty_dimensions(B, D, Hd, O):
    # nothing to launch (O = 0 once failed inside the kernel): out = b, zero gradients but b's
    inputs = nade_case(B, D, Hd, O, torch.float32)
    out = nade_k.nade_forward_triton(*inputs)
    ref = nade_forward_ref(*inputs)
    assert out.shape == ref.shape == (B, D, O)
    assert_close("nade out", out, ref, torch.float32)
    g = torch.randn_like(out)
    kw = dict(allow_unused=True, materialize_grads=True)
    grads = torch.autograd.grad((out * g).sum(), inputs, **kw)
    grads_ref = torch.autograd.grad((ref * g).sum(), inputs, **kw)
    for name, a, b in zip("xWcVb", grads, grads_ref):
        assert a.shape == b.shape
        assert_close(f"nade grad {name}", a, b, torch.float32)


def test_nade_forward_float64_small_hidden_tiles():
    inputs = nade_case(3, 6, 37, 2, torch.float64)
    detached = [t.detach() for t in inputs]
    ref = nade_forward_ref(*inputs)
    g = torch.randn_like(ref)
    grads_ref = torch.autograd.grad((ref * g).sum(), inputs)
    out = nade_k._fwd(*detached, block_h=16)  # three hidden tiles
    assert_close("nade out fp64", out, ref, torch.float64)
    for name, a, b in zip("xWcVb", nade_k._bwd(g, *detached, block_h=16), grads_ref):
        assert_close(f"nade grad {name} fp64", a, b, torch.float64)


def residual_case(B, F, h, R, W, dtype):
    """x (B, F, R, W) and the six weights of conv_residual_block, all requiring grad;
    scaled so that about half of every ReLU is open."""
    x = torch.randn(B, F, R, W, dtype=dtype)
    weights = (
        torch.randn(F, h, dtype=dtype) / F**0.5,
        0.3 * torch.randn(h, dtype=dtype),
        torch.randn(5, h, h, dtype=dtype) / (5 * h) ** 0.5,
        0.3 * torch.randn(h, dtype=dtype),
        torch.randn(h, F, dtype=dtype) / h**0.5,
        torch.randn(F, dtype=dtype),
    )
    return [t.requires_grad_() for t in (x, *weights)]


RESIDUAL_NAMES = ("x", "w_reduce", "b_reduce", "w_conv", "b_conv", "w_expand", "b_expand")


def check_residual(inputs, name="residual", fn=None):
    """Forward and all seven gradients of fn (the Triton op) against the reference."""
    fn = fn or crb_k.conv_residual_block_triton
    dtype = inputs[0].dtype
    out = fn(*inputs)
    ref = conv_residual_block_ref(*inputs)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert_close(f"{name} out", out, ref, dtype)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad((out * g).sum(), inputs)
    grads_ref = torch.autograd.grad((ref * g).sum(), inputs)
    for arg, a, b in zip(RESIDUAL_NAMES, grads, grads_ref):
        assert a.shape == b.shape
        assert_close(f"{name} grad {arg}", a, b, dtype)


# (B, F, h, R, W): odd sizes (masked channel blocks), a single pixel, the paper's MNIST
# sizes F = 32, h = 16 (no padding), a one-column image (every side tap outside).
RESIDUAL_SHAPES = [(2, 6, 3, 5, 7), (1, 4, 2, 1, 1), (2, 32, 16, 4, 6), (1, 5, 9, 3, 1)]


@pytest.mark.parametrize("B,F,h,R,W", RESIDUAL_SHAPES)
def test_conv_residual_block(B, F, h, R, W):
    check_residual(residual_case(B, F, h, R, W, torch.float32))


def test_conv_residual_block_float64_non_contiguous_x():
    """float64, and x a non-contiguous view (channels and width swapped, then sliced)."""
    x, *weights = residual_case(2, 5, 3, 4, 3, torch.float64)
    base = torch.randn(2, 7, 4, 5, dtype=torch.float64)  # (B, W + 4, R, F)
    x = base.transpose(1, 3)[:, :, :, 1:4:1].requires_grad_()  # (B, F, R, W)
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    check_residual([x, *weights], "residual fp64")


def test_conv_residual_block_several_blocks():
    """Blocks of 16 channels and one pixel tile per weight-gradient program: F = 33 and
    h = 17 span three and two channel blocks (the K loop and the N grid), P = 33 pixels
    two pixel tiles, so two weight-gradient programs each write a partial sum."""
    inputs = residual_case(1, 33, 17, 3, 11, torch.float64)
    detached = [t.detach() for t in inputs]
    ref = conv_residual_block_ref(*inputs)
    g = torch.randn_like(ref)
    grads_ref = torch.autograd.grad((ref * g).sum(), inputs)
    out, r2, r3 = crb_k._fwd(*detached, block_c=16)
    assert_close("residual out (16-channel blocks)", out, ref, torch.float64)
    w_reduce, w_conv, w_expand = detached[1], detached[3], detached[5]
    grads = crb_k._bwd(g, detached[0], w_reduce, w_conv, w_expand, r2, r3, 16, chunk_steps=1)
    for arg, a, b in zip(RESIDUAL_NAMES, grads, grads_ref):
        assert_close(f"residual grad {arg} (16-channel blocks)", a, b, torch.float64)


@pytest.mark.parametrize("B,F,R,W", [(0, 4, 3, 3), (2, 4, 0, 3), (2, 0, 3, 3)])
def test_conv_residual_block_empty(B, F, R, W):
    """No pixel or no feature: nothing to launch; out = x, zero weight gradients (but
    b_expand's, where there are pixels). (The reference cannot run F = 0: conv2d refuses
    an input without channels; there the expected values are written out.)"""
    inputs = residual_case(B, F, 3, R, W, torch.float32)
    if F > 0:
        check_residual(inputs, "residual empty")
        return
    out = crb_k.conv_residual_block_triton(*inputs)
    assert out.shape == inputs[0].shape
    g = torch.randn_like(out)
    grads = torch.autograd.grad((out * g).sum(), inputs)
    for arg, grad, t in zip(RESIDUAL_NAMES, grads, inputs):
        assert grad.shape == t.shape and grad.abs().sum() == 0, arg


def test_ops_dispatch_to_triton_on_cpu_under_interpreter():
    """pixelar.ops with backend 'triton' runs these kernels (not the reference)."""
    x, w = lstm_case(1, 2, 3, 4, 2, torch.float32)
    calls = []
    original = diag_k.diagonal_lstm_scan_triton
    try:
        diag_k.diagonal_lstm_scan_triton = lambda *a: calls.append(1) or original(*a)
        with pixelar.ops.backend("triton"):
            h, _ = pixelar.ops.diagonal_lstm_scan(x, w)
    finally:
        diag_k.diagonal_lstm_scan_triton = original
    assert calls == [1]
    assert_close("ops diagonal (triton)", h, diagonal_lstm_scan_ref(x, w)[0], torch.float32)
    xr, wr = lstm_case(1, 2, 3, 4, 3, torch.float32)
    inputs = nade_case(2, 4, 5, 1, torch.float32)
    with pixelar.ops.backend("triton"):
        hr, _ = pixelar.ops.row_lstm_scan(xr, wr)
        out = pixelar.ops.nade_forward(*inputs)
    assert_close("ops row (triton)", hr, row_lstm_scan_ref(xr, wr)[0], torch.float32)
    assert_close("ops nade (triton)", out, nade_forward_ref(*inputs), torch.float32)


def test_kernels_compile_for_the_gpu():
    """The interpreter never runs Triton's GPU compiler: compile every kernel for sm_90
    (fp32, the paper's tile sizes) in a subprocess without TRITON_INTERPRET, no GPU needed.
    The full matrix: python -m pixelar.kernels.compile_check."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run(
        [sys.executable, "-m", "pixelar.kernels.compile_check", "--arch", "90", "--dtype", "fp32"],
        capture_output=True,
        text=True,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        timeout=600,
    )
    print(res.stdout[-3000:], res.stderr[-3000:])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
