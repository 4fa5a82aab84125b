"""pixelar's CUDA kernels run on the CPU under a host emulation of the CUDA execution model
(csrc/emulation/cuda_host_emulation.h: a std::thread per CUDA thread, std::barrier for
__syncthreads, per-warp exchange for shuffles, exact-size garbage-filled shared memory,
launch limits asserted), against the PyTorch references: the scans forward and backward,
the NADE forward and backward, the conv residual block forward and backward, and the three
sampling kernels, at odd shapes, in fp32 and fp64 (half / bfloat16 for the training
kernels), with weights and state in shared and in global memory and with fewer threads
than work items. The kernels and their launchers are the files the CUDA build compiles
(csrc/cuda/<op>.cu, built here by tests/cuda_emulation/emulation_build.py, cached under
build/). Also: the launch arithmetic (launch_plan.h) at sizes no emulation could run, the
PTX of the CUDA math flags, and the sanitizer runs (opt-in: PIXELAR_SANITIZE=1).

What the emulation cannot show: timing, and the GPU's memory model (it runs under the
C++ one): docs/gpu.md.
"""

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as nnf

import pixelar
from pixelar.ops.conv_residual_block import conv3x3_kernel
from pixelar.ops.nade_forward import nade_checkpoints_ref

import model_zoo
from conftest import report_diff

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "cuda_emulation"))
import emulation_build as emu_build  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

H100_SMEM = 232448  # cudaDevAttrMaxSharedMemoryPerBlockOptin, 227 KB
A100_SMEM = 166912  # 163 KB
DEFAULT_LIMITS = (1024, H100_SMEM)


@pytest.fixture(scope="module")
def emu():
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler for the emulation test extension")
    module = emu_build.load()
    yield module
    module.set_limits(*DEFAULT_LIMITS)


@pytest.fixture
def limits(emu):
    """limits(max_threads, smem): what the emulated launchers see as the device's limits."""

    def set_limits(max_threads=1024, smem=H100_SMEM):
        emu.set_limits(max_threads, smem)

    yield set_limits
    emu.set_limits(*DEFAULT_LIMITS)


def tol(dtype):
    return {
        torch.float64: dict(rtol=1e-12, atol=1e-12),
        torch.float32: dict(rtol=2e-5, atol=2e-5),
        torch.float16: dict(rtol=2e-2, atol=2e-2),
        torch.bfloat16: dict(rtol=5e-2, atol=5e-2),
    }[dtype]


# ---------------------------------------------------------------- LSTM scans
# (scan, B, H, R, W, dtype, max_threads, smem): W = 1, R = 1, B = 1, R and W not multiples
# of 32, fewer threads than items (max_threads 32: items loop past the prefetched ones),
# weights in global memory (smem 1500: the state fits, the weights do not), state in a
# global scratch buffer (smem 200).
SCAN_CASES = [
    ("diagonal", 1, 3, 5, 1, torch.float64, 1024, H100_SMEM),
    ("diagonal", 2, 5, 37, 3, torch.float64, 32, H100_SMEM),
    ("diagonal", 2, 4, 1, 4, torch.float32, 1024, H100_SMEM),
    ("diagonal", 2, 4, 5, 3, torch.float64, 1024, 1500),
    ("diagonal", 1, 4, 5, 3, torch.float32, 64, 200),
    ("diagonal", 2, 3, 4, 3, torch.bfloat16, 1024, H100_SMEM),
    ("row", 1, 3, 4, 1, torch.float64, 1024, H100_SMEM),
    ("row", 2, 5, 3, 37, torch.float64, 32, H100_SMEM),
    ("row", 2, 4, 1, 5, torch.float32, 1024, H100_SMEM),
    ("row", 2, 4, 3, 5, torch.float64, 1024, 2500),
    ("row", 1, 4, 3, 5, torch.float32, 64, 200),
    ("row", 2, 3, 3, 4, torch.float16, 1024, H100_SMEM),
]


def scan_inputs(scan, B, H, R, W, dtype):
    g = torch.Generator().manual_seed(1)
    N = R + W - 1 if scan == "diagonal" else W
    taps = 2 if scan == "diagonal" else 3
    x = torch.randn(B, 4 * H, R, N, generator=g, dtype=torch.float64)
    w = torch.randn(4 * H, H, taps, generator=g, dtype=torch.float64) / (H * taps) ** 0.5
    return x.to(dtype), w.to(dtype)


def scan_ref(scan):
    ops = pixelar.ops
    return ops.diagonal_lstm_scan_ref if scan == "diagonal" else ops.row_lstm_scan_ref


@pytest.mark.parametrize("scan,B,H,R,W,dtype,max_threads,smem", SCAN_CASES)
def test_scan_forward_backward(emu, limits, scan, B, H, R, W, dtype, max_threads, smem):
    limits(max_threads, smem)
    x, w = scan_inputs(scan, B, H, R, W, dtype)
    forward = getattr(emu, f"{scan}_lstm_scan")
    backward = getattr(emu, f"{scan}_lstm_scan_backward")
    launches = emu.launches()
    h, c = forward(x, w)
    xr = x.double().requires_grad_()
    wr = w.double().requires_grad_()
    h_ref, c_ref = scan_ref(scan)(xr, wr)
    report_diff(f"{scan} h", h, h_ref)
    torch.testing.assert_close(h.double(), h_ref.detach(), **tol(dtype))
    torch.testing.assert_close(c.double(), c_ref.detach(), **tol(dtype))
    g = torch.Generator().manual_seed(2)
    gh = torch.randn(h.shape, generator=g, dtype=torch.float64)
    gc = torch.randn(h.shape, generator=g, dtype=torch.float64)
    # the backward recomputes from the saved h, c of the forward (the kernel's own, as in
    # training)
    gx, gw = backward(gh.to(dtype), gc.to(dtype), x, w, h, c)
    torch.autograd.backward([h_ref, c_ref], [gh.to(dtype).double(), gc.to(dtype).double()])
    report_diff(f"{scan} grad x", gx, xr.grad)
    loose = tol(dtype) if dtype in (torch.float64, torch.float32) else dict(rtol=0.1, atol=0.1)
    torch.testing.assert_close(gx.double(), xr.grad, **loose)
    torch.testing.assert_close(
        gw.double(), wr.grad, **(loose if dtype != torch.float32 else dict(rtol=1e-4, atol=1e-4))
    )
    assert emu.launches() == launches + 2  # the kernels ran (no early return)


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_diagonal_scan_image_layout(emu, reverse, dtype, with_bias):
    """pixelar::diagonal_lstm_scan_image on the CUDA path (the skewed-map kernels between
    ATen's skew and unskew, csrc/cuda/diagonal_lstm_scan.cu) vs the op's reference, forward
    and backward, with channels-last outputs as on the CPU."""
    g = torch.Generator().manual_seed(3)
    B, H, R, W = 2, 3, 5, 4
    x = torch.randn(B, 4 * H, R, W, generator=g, dtype=torch.float64)
    w = torch.randn(4 * H, H, 2, generator=g, dtype=torch.float64) / (2 * H) ** 0.5
    x, w = x.to(dtype), w.to(dtype)
    bias = torch.randn(4 * H, generator=g, dtype=torch.float64).to(dtype) if with_bias else None
    launches = emu.launches()
    h, c, gates = emu.diagonal_lstm_scan_image(x, w, reverse, bias)
    assert h.is_contiguous(memory_format=torch.channels_last)
    assert gates.shape == x.shape and gates.is_contiguous(memory_format=torch.channels_last)
    xr, wr = x.double().requires_grad_(), w.double().requires_grad_()
    b64 = None if bias is None else bias.double()
    h_ref, c_ref = pixelar.ops.diagonal_lstm_scan_image_ref(xr, wr, reverse, b64)
    torch.testing.assert_close(h.double(), h_ref.detach(), **tol(dtype))
    torch.testing.assert_close(c.double(), c_ref.detach(), **tol(dtype))
    gh = torch.randn(h.shape, generator=g, dtype=torch.float64).to(dtype)
    gc = torch.randn(h.shape, generator=g, dtype=torch.float64).to(dtype)
    gx, gw = emu.diagonal_lstm_scan_image_backward(gh, gc, x, w, h, c, gates, reverse, bias)
    if pixelar._extension.has_kernel("diagonal_lstm_scan_image", "CPU"):
        # the saved gates equal the CPU kernel's
        _, _, gates_cpu = torch.ops.pixelar.diagonal_lstm_scan_image(x, w, reverse, bias)
        torch.testing.assert_close(gates, gates_cpu, **tol(dtype))
    torch.autograd.backward([h_ref, c_ref], [gh.double(), gc.double()])
    torch.testing.assert_close(gx.double(), xr.grad, **tol(dtype))
    torch.testing.assert_close(gw.double(), wr.grad, **tol(dtype))
    assert emu.launches() == launches + 2  # the forward and backward kernels ran
    with pytest.raises(RuntimeError, match="diagonal_lstm_scan_image: x_gates must have 4H"):
        emu.diagonal_lstm_scan_image(x[:, :5], w, reverse, None)
    with pytest.raises(RuntimeError, match="bias must have shape"):
        emu.diagonal_lstm_scan_image(x, w, reverse, torch.zeros(5, dtype=dtype))


@pytest.mark.parametrize("scan", ["diagonal", "row"])
def test_scan_empty_and_hidden_zero(emu, scan):
    for B, H, R, W in [(0, 2, 3, 2), (2, 0, 3, 2)]:
        x, w = scan_inputs(scan, B, H, R, W, torch.float64)
        h, c = getattr(emu, f"{scan}_lstm_scan")(x, w)
        assert h.shape == (B, H, R, x.shape[3]) and h.abs().sum() == 0


# Defect 4: the backward runs the forward's checks (it read 32 weights from an 8-element
# w_ss, and returned uninitialised channels for 6 gate channels).
@pytest.mark.parametrize("scan", ["diagonal", "row"])
def test_scan_backward_checks_its_inputs(emu, scan):
    backward = getattr(emu, f"{scan}_lstm_scan_backward")
    taps = 2 if scan == "diagonal" else 3
    state = torch.zeros(1, 2, 3, 4)
    with pytest.raises(RuntimeError, match="w_ss must have shape"):
        backward(state, state, torch.zeros(1, 8, 3, 4), torch.zeros(4, 1, taps), state, state)
    with pytest.raises(RuntimeError, match="4H channels"):
        backward(state, state, torch.zeros(1, 6, 3, 4), torch.zeros(6, 1, taps), state, state)
    with pytest.raises(RuntimeError, match="h must have shape"):
        backward(
            state,
            state,
            torch.zeros(1, 8, 3, 4),
            torch.zeros(8, 2, taps),
            torch.zeros(1, 2, 3, 5),
            state,
        )
    with pytest.raises(RuntimeError, match="grad_c must have the dtype"):
        backward(
            state, state.double(), torch.zeros(1, 8, 3, 4), torch.zeros(8, 2, taps), state, state
        )
    if scan == "diagonal":
        with pytest.raises(RuntimeError, match="S = R \\+ W - 1 >= R"):
            s = torch.zeros(1, 2, 5, 4)
            backward(s, s, torch.zeros(1, 8, 5, 4), torch.zeros(8, 2, 2), s, s)


# Defect 7: sizes that overflow the kernels' 32-bit index arithmetic are refused at launch
# (expanded tensors: nothing is allocated).
def test_launchers_refuse_32_bit_overflow(emu):
    x = torch.zeros(1, 1, 1, 1).expand(1, 4, 8193, 65536)  # 4 * 8193 * 65536 > 2^31 - 1
    with pytest.raises(RuntimeError, match="32-bit"):
        emu.diagonal_lstm_scan(x, torch.zeros(4, 1, 2))
    with pytest.raises(RuntimeError, match="32-bit"):
        emu.row_lstm_scan(x, torch.zeros(4, 1, 3))
    xb = torch.zeros(1, 1).expand(2**31, 1)
    with pytest.raises(RuntimeError, match="32-bit"):
        emu.nade_forward(
            xb, torch.zeros(1, 1), torch.zeros(1), torch.zeros(1, 1, 1), torch.zeros(1, 1)
        )


# Defect 2: the scan backward's state moves to global scratch when it does not fit, so the
# paper's CIFAR Row LSTM (H = 128, W = 32) and wider maps (W = 64, 128), and the diagonal
# scan at R >= 46, launch on an A100 and an H100, in fp32 and fp64.
@pytest.mark.parametrize("limit", [A100_SMEM, H100_SMEM])
@pytest.mark.parametrize("elem", [4, 8])
@pytest.mark.parametrize(
    "scan,L",
    [("row", 32), ("row", 64), ("row", 128), ("diagonal", 32), ("diagonal", 46), ("diagonal", 64)],
)
def test_scan_plan_fits_paper_shapes(emu, limit, elem, scan, L):
    H = 128
    for backward in (False, True):
        smem, state_in_smem, weights_in_smem, scratch = emu.plan_scan(
            scan, backward, H, L, elem, limit
        )
        assert smem <= limit
        assert weights_in_smem is False  # 768 KB of fp32 weights at H = 128
        P = 1 if scan == "diagonal" else 2
        state = ((5 * H * (L + P) + 2 * H * L) if backward else (2 * H * (L + P) + H * L)) * elem
        assert (smem, scratch) == ((state, 0) if state_in_smem else (0, state))
        assert state_in_smem == (state <= limit)


# Defect 5: the diagonal kernels' warps read and write consecutive addresses (work item
# k * R + r at row stride S made each fp32 warp access touch 32 sectors of 32 bytes, about 8
# times the traffic); the maps they index are the launcher's column-major copies, which
# the forward / backward tests above check end to end.
def test_diagonal_scan_accesses_are_coalesced(emu):
    B, H, R, W = 2, 16, 28, 28
    S, n = R + W - 1, H * R
    worst = 0
    for b in range(B):
        for j in (0, 13, S - 1):
            for q in range(4):
                for w0 in range(0, n, 32):
                    items = range(w0, min(w0 + 32, n))
                    offs = [emu.diagonal_offsets(b, j, q, i, S, n) for i in items]
                    for k in (0, 1):  # x_gates, then h / c
                        o = [t[k] for t in offs]
                        assert o == list(range(o[0], o[0] + len(o)))
                        worst = max(worst, len({4 * v // 32 for v in o}))
    assert worst <= 5  # 128 bytes of fp32: 4 sectors, 5 when not 128-byte aligned


def test_scan_plan_small_sizes_stay_in_shared_memory(emu):
    # MNIST's diagonal scan (H = 16, R = 28): state and weights in shared memory
    smem, state_in, weights_in, scratch = emu.plan_scan("diagonal", True, 16, 28, 4, A100_SMEM)
    assert state_in and weights_in and scratch == 0


# ---------------------------------------------------------------- NADE forward / backward
# (B, D, Hd, O, dtype, max_threads): B = 1, Hd not a multiple of 32, several hidden-unit
# blocks (max_threads 32: Hd = 37 takes two blocks), several batch groups (B = 9 > 8).
# Small D and O: every output of every step is 8 x 5 emulated warp shuffles.
NADE_CASES = [
    (1, 1, 1, 1, torch.float64, 1024),
    (9, 3, 37, 2, torch.float64, 1024),
    (9, 3, 37, 2, torch.float64, 32),
    (9, 2, 70, 2, torch.float32, 64),
    (3, 3, 20, 1, torch.float16, 1024),
]


def nade_inputs(B, D, Hd, O, dtype, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, (B, D), generator=g).double()
    W = torch.randn(Hd, D, generator=g, dtype=torch.float64)
    c = torch.randn(Hd, generator=g, dtype=torch.float64)
    V = torch.randn(D, O, Hd, generator=g, dtype=torch.float64) / max(Hd, 1) ** 0.5
    b = torch.randn(D, O, generator=g, dtype=torch.float64)
    return [t.to(dtype) for t in (x, W, c, V, b)]


@pytest.mark.parametrize("B,D,Hd,O,dtype,max_threads", NADE_CASES)
def test_nade_forward_backward(emu, limits, B, D, Hd, O, dtype, max_threads):
    limits(max_threads)
    args = nade_inputs(B, D, Hd, O, dtype)
    out = emu.nade_forward(*args)
    ref_args = [t.double().requires_grad_() for t in args]
    ref = pixelar.ops.nade_forward_ref(*ref_args)
    report_diff("nade_forward", out, ref)
    t = tol(dtype) if dtype != torch.float16 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(out.double(), ref.detach(), **t)
    go = torch.randn(out.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    grads = emu.nade_forward_backward(go.to(dtype), *args)
    ref.backward(go.to(dtype).double())
    for name, gk, r in zip(["x", "W", "c", "V", "b"], grads, ref_args):
        r_grad = torch.zeros_like(r) if r.grad is None else r.grad  # D = 1: x unused
        report_diff(f"nade grad {name}", gk, r_grad)
        tg = t if dtype != torch.float32 else dict(rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(gk.double(), r_grad.detach(), **tg)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_nade_backward_gives_grad_w_in_the_layout_of_w(emu, dtype):
    """A W stored transposed (W.t() contiguous, as the NADE models keep it) gets its gradient
    in its own layout (the strides the fake kernel promises), with the values of the
    contiguous W's gradient; a contiguous W gets a contiguous one."""
    x, W, c, V, b = nade_inputs(5, 6, 37, 2, dtype)
    Wt = W.t().contiguous().t()
    go = torch.randn(5, 6, 2, generator=torch.Generator().manual_seed(4)).to(dtype)
    plain = emu.nade_forward_backward(go, x, W, c, V, b)
    stored = emu.nade_forward_backward(go, x, Wt, c, V, b)
    assert plain[1].is_contiguous() and stored[1].stride() == Wt.stride()
    for a, r in zip(stored, plain):
        assert torch.equal(a, r)


@pytest.mark.parametrize(
    "B,D,Hd,O,dtype,max_threads", NADE_CASES + [(5, 70, 37, 1, torch.float32, 64)]
)
def test_nade_forward_checkpointed(emu, limits, B, D, Hd, O, dtype, max_threads):
    # the outputs of nade_forward; a_d at d = 0, 32, ... in the op-math dtype, as the
    # reference; the backward takes them (and does not read them: the same gradients)
    limits(max_threads)
    args = nade_inputs(B, D, Hd, O, dtype)
    out, ckpt = emu.nade_forward_checkpointed(*args)
    assert torch.equal(out, emu.nade_forward(*args))
    ref = nade_checkpoints_ref(*(t.double() for t in args[:3]))
    assert ckpt.dtype == (torch.float32 if dtype == torch.float16 else dtype)
    assert ckpt.shape == ((D + 31) // 32, B, Hd)
    report_diff("nade checkpoints", ckpt, ref)
    torch.testing.assert_close(ckpt.double(), ref, **tol(ckpt.dtype))
    go = torch.randn(out.shape, generator=torch.Generator().manual_seed(4)).to(dtype)
    grads = emu.nade_forward_backward(go, *args)
    grads_ckpt = emu.nade_forward_backward(go, *args, checkpoints=ckpt)
    for gk, gc in zip(grads, grads_ckpt):  # atomicAdd order: equal to rounding, not bitwise
        torch.testing.assert_close(gk, gc)
    # grad_x=False: grad x's block sums skipped (in every block: uniform barriers)
    no_gx = emu.nade_forward_backward(go, *args, checkpoints=ckpt, grad_x=False)
    assert no_gx[0].shape == (0,)
    for gk, gn in zip(grads[1:], no_gx[1:]):
        torch.testing.assert_close(gk, gn)
    with pytest.raises(RuntimeError, match="checkpoints must be"):
        emu.nade_forward_backward(go, *args, checkpoints=ckpt[:, :0])


def test_nade_forward_hidden_zero(emu):
    args = nade_inputs(3, 4, 0, 2, torch.float64)
    torch.testing.assert_close(emu.nade_forward(*args), pixelar.ops.nade_forward_ref(*args))


# Defect 1: batch groups on gridDim.x: any batch launches (gridDim.y stopped at 65,535
# groups of 8, B = 524,281).
@pytest.mark.parametrize("B", [524_280, 524_281, 10**7, 8 * (2**31 - 1)])
def test_nade_grid_takes_any_batch(emu, B):
    gx, gy, threads, fits = emu.nade_grid(B, 500)
    assert fits and gx == -(-B // 8) and gy == 1 and threads == 512


# Defect 6: the forward's partial sums are added within a block first: one (B, D, O) slice
# per 512 hidden units, not one per warp (16 slices at Hd = 500: 1.5 GB for RNADE at
# B = 1024, K = 10).
@pytest.mark.parametrize("Hd,slices", [(500, 1), (512, 1), (513, 2), (4000, 8)])
def test_nade_partial_buffer_is_per_block(emu, Hd, slices):
    B, D, O = 1024, 784, 30
    assert emu.nade_partials(B, D, O, Hd) == slices * B * D * O


# ---------------------------------------------------------------- sampling kernels
def nade_sample_inputs(n, D, Hd, O, dtype, seed=5):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(Hd, D, generator=g, dtype=dtype)
    c = torch.randn(Hd, generator=g, dtype=dtype)
    V = torch.randn(D, O, Hd, generator=g, dtype=dtype) / max(Hd, 1) ** 0.5
    b = torch.randn(D, O, generator=g, dtype=dtype)
    u = torch.rand(n, D, generator=g, dtype=torch.float64)
    z = torch.randn(n, D, generator=g, dtype=torch.float64)
    cond = torch.randint(0, 2, (n, D), generator=g)
    cond[torch.rand(n, D, generator=g) < 0.7] = -1
    return W, c, V, b, u, z, cond


# (n, D, Hd, max_threads): hidden size 0, one image, Hd above the threads (45 units on 32
# threads), odd sizes
SAMPLE_SIZES = [(3, 5, 0, 1024), (1, 7, 9, 1024), (3, 4, 45, 32)]


@pytest.mark.parametrize("n,D,Hd,max_threads", SAMPLE_SIZES)
@pytest.mark.parametrize("with_cond", [False, True])
def test_nade_sample_bitwise_fp64(emu, limits, n, D, Hd, max_threads, with_cond):
    limits(max_threads)
    W, c, V, b, u, _, cond = nade_sample_inputs(n, D, Hd, 1, torch.float64)
    cond = cond if with_cond else None
    out = emu.nade_sample(u, cond, W, c, V, b)
    ref = pixelar.ops.nade_sample_ref(u, cond, W, c, V, b)
    assert out.dtype == torch.int64 and torch.equal(out, ref)


def test_nade_sample_fp32(emu):
    W, c, V, b, u, _, cond = nade_sample_inputs(6, 9, 13, 1, torch.float32)
    out = emu.nade_sample(u, cond, W, c, V, b)
    ref = pixelar.ops.nade_sample_ref(u, cond, W, c, V, b)
    assert (out != ref).sum().item() <= 1  # a draw within float rounding of a threshold


@pytest.mark.parametrize("n,D,Hd,max_threads", SAMPLE_SIZES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rnade_sample(emu, limits, n, D, Hd, max_threads, dtype):
    limits(max_threads)
    K = 2
    W, c, V, b, u, z, _ = nade_sample_inputs(n, D, Hd, 3 * K, dtype)
    out = emu.rnade_sample(u, z, W, c, V, b, -7.0, 7.0)
    ref = pixelar.ops.rnade_sample_ref(u, z, W, c, V, b, -7.0, 7.0)
    report_diff("rnade_sample", out, ref)
    if dtype == torch.float64:
        # the components drawn are the reference's; the values differ from it only by the
        # summation order of V[d] @ h (a few ulps)
        torch.testing.assert_close(out, ref, rtol=1e-13, atol=1e-13)
    else:
        close = torch.isclose(out, ref, rtol=1e-4, atol=1e-4)
        assert (~close).sum().item() <= 1


def pixel_step_inputs(name, image_shape, levels, dtype):
    """tests/model_zoo.py's inputs of pixel_network_sample_step, for 2 images."""
    return model_zoo.pixel_step_inputs(name, image_shape, levels, dtype, seed=0, batch=2)


# (image_shape, levels, start, stop): a whole binary image with W = 1 would be a 1-column
# model; ranges start mid-row and cross row ends (the diagonal layer's right-to-left pass)
PIXEL_CASES = [((1, 3, 4), 2, 0, 12), ((3, 2, 3), 4, 2, 6), ((1, 3, 1), 2, 0, 3)]


@pytest.mark.parametrize("name", ["pixelcnn", "pixelrnn_row", "pixelrnn_diagonal"])
@pytest.mark.parametrize("image_shape,levels,start,stop", PIXEL_CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pixel_network_sample_step(emu, name, image_shape, levels, start, stop, dtype):
    if dtype == torch.float32 and image_shape != (3, 2, 3):
        pytest.skip("float32: one shape per layer is enough")
    layer, weights, state, x, u, cond = pixel_step_inputs(name, image_shape, levels, dtype)
    x_ref, state_ref = x.clone(), [s.clone() for s in state]
    emu.pixel_network_sample_step(x, state, u, cond, weights, layer, levels, start, stop)
    pixelar.ops.pixel_network_sample_step_ref(
        x_ref, state_ref, u, cond, weights, layer, levels, start, stop
    )
    if dtype == torch.float64:
        assert torch.equal(x, x_ref)
    elif not torch.equal(x, x_ref):
        assert (x != x_ref).sum().item() <= 1
        return  # a draw at a threshold: the caches legitimately differ after it
    t = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    for i, (s, s_ref) in enumerate(zip(state, state_ref)):
        report_diff(f"{name} state[{i}]", s, s_ref)
        torch.testing.assert_close(s, s_ref, **t)


def _error_of(run):
    with pytest.raises(ValueError, match="logit is not finite") as info:
        run()
    return str(info.value)


@pytest.mark.parametrize("kind", ["nade", "rnade"])
def test_sample_nonfinite_logit_raises_like_the_reference(emu, kind):
    """The non-finite-logit rule (pixelar/sampling_math.h): the smallest dimension drawn
    from a NaN/inf logit is reported, with the CPU kernels' and the references' text."""
    O = 1 if kind == "nade" else 6
    W, c, V, b, u, z, cond = nade_sample_inputs(3, 7, 5, O, torch.float64)
    b[4, O - 1] = float("nan") if kind == "nade" else float("inf")
    if kind == "nade":
        cond[:, 4] = -1  # drawn, not given
        ops = (emu.nade_sample, pixelar.ops.nade_sample_ref)
        args = (u, cond, W, c, V, b)
    else:
        ops = (emu.rnade_sample, pixelar.ops.rnade_sample_ref)
        args = (u, z, W, c, V, b, -7.0, 7.0)
    message = _error_of(lambda: ops[0](*args))
    assert message == _error_of(lambda: ops[1](*args))
    assert "dimension 4 " in message


def test_nade_sample_nonfinite_logit_given_by_cond_is_not_drawn(emu):
    W, c, V, b, u, _, cond = nade_sample_inputs(2, 5, 4, 1, torch.float64)
    b[2, 0] = float("nan")
    cond[:, 2] = 1  # the condition gives dimension 2: nothing is drawn from its logit
    out = emu.nade_sample(u, cond, W, c, V, b)
    assert torch.equal(out, pixelar.ops.nade_sample_ref(u, cond, W, c, V, b))


@pytest.mark.parametrize("name", ["pixelcnn", "pixelrnn_row", "pixelrnn_diagonal"])
def test_pixel_network_step_nonfinite_logit_raises_like_the_reference(emu, name):
    layer, weights, state, x, u, cond = pixel_step_inputs(name, (3, 2, 3), 4, torch.float64)
    weights = [w.clone() for w in weights]
    weights[-1].fill_(float("nan"))  # the head's last bias: every logit is NaN
    cond.fill_(-1)
    args = lambda: ([s.clone() for s in state], u, cond, weights, layer, 4, 2, 6)
    message = _error_of(lambda: emu.pixel_network_sample_step(x.clone(), *args()))
    assert message == _error_of(
        lambda: pixelar.ops.pixel_network_sample_step_ref(x.clone(), *args())
    )
    assert "dimension 6 " in message  # pixel 2, channel 0: the first one drawn


def test_sampling_checks_devices(emu):
    W, c, V, b, u, _, _ = nade_sample_inputs(2, 3, 4, 1, torch.float64)
    with pytest.raises(RuntimeError, match="W must be"):
        emu.nade_sample(u, None, W.long(), c, V, b)
    with pytest.raises(RuntimeError, match="must have shape"):
        emu.nade_sample(u, None, W, c[:3], V, b)


# ---------------------------------------------------------------- conv residual block
# (B, F, h, R, W, dtype, max_threads, layout): odd, non-square images, R = 1, W = 1, one
# pixel, F = 4 / h = 2, fewer threads than items (max_threads 32: the flat kernels and the
# weight-gradient outputs stride), several pixel chunks of the weight-gradient reduction
# (P = 2 * 9 * 11 = 198 pixels: 7 chunks); x and grad_out contiguous, channels-last or
# strided (a padded, permuted view: neither layout).
CRB_CASES = [
    (2, 6, 3, 5, 7, torch.float64, 1024, "contiguous"),
    (2, 6, 3, 5, 7, torch.float32, 1024, "strided"),
    (2, 6, 3, 5, 7, torch.float64, 32, "channels_last"),
    (3, 4, 2, 1, 6, torch.float32, 1024, "strided"),
    (2, 4, 2, 6, 1, torch.float64, 1024, "strided"),
    (1, 4, 2, 1, 1, torch.float64, 1024, "contiguous"),
    (2, 8, 5, 9, 11, torch.float32, 64, "channels_last"),
    (2, 8, 5, 9, 11, torch.float64, 1024, "strided"),
]


def crb_layout(t, layout):
    """t (B, C, R, W) with the same values in another memory layout."""
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        B, C, R, W = t.shape
        big = t.new_zeros(B, R, 2 * C + 1, W + 2)  # every dimension strided and padded
        view = big[:, :, 1::2][:, :, :C, 1 : W + 1].permute(0, 2, 1, 3)
        view.copy_(t)
        assert not view.is_contiguous() and not view.is_contiguous(
            memory_format=torch.channels_last
        )
        return view
    return t.contiguous()


def crb_inputs(B, F, h, R, W, dtype, seed=4):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    x = rand(B, F, R, W)
    weights = [
        rand(F, h, scale=F**-0.5),
        rand(h, scale=0.3),
        rand(5, h, h, scale=(5 * h) ** -0.5),
        rand(h, scale=0.3),
        rand(h, F, scale=h**-0.5),
        rand(F, scale=0.3),
    ]
    return x, weights


def crb_intermediates(x, w_reduce, b_reduce, w_conv, b_conv):
    """r2, r3 of pixelar/ops/conv_residual_block.py's definitions (the ReLU outputs of the
    1x1 reduce and of the masked 3x3)."""
    r2 = nnf.relu(nnf.conv2d(nnf.relu(x), w_reduce.t()[:, :, None, None], b_reduce))
    r3 = nnf.relu(nnf.conv2d(r2, conv3x3_kernel(w_conv), b_conv, padding=1))
    return r2, r3


@pytest.mark.parametrize("B,F,h,R,W,dtype,max_threads,layout", CRB_CASES)
def test_conv_residual_block_forward_backward(
    emu, limits, B, F, h, R, W, dtype, max_threads, layout
):
    limits(max_threads)
    x, weights = crb_inputs(B, F, h, R, W, dtype)
    launches = emu.launches()
    out, r2, r3 = emu.conv_residual_block(crb_layout(x, layout), *weights)
    assert emu.launches() == launches + 3
    for t, C in ((out, F), (r2, h), (r3, h)):
        assert t.shape == (B, C, R, W) and t.dtype == dtype
        assert t.is_contiguous(memory_format=torch.channels_last)
    xr = x.double().requires_grad_()
    wr = [w.double().requires_grad_() for w in weights]
    ref = pixelar.ops.conv_residual_block_ref(xr, *wr)
    r2_ref, r3_ref = crb_intermediates(x.double(), *[w.double() for w in weights[:4]])
    report_diff("conv_residual_block out", out, ref)
    torch.testing.assert_close(out.double(), ref.detach(), **tol(dtype))
    torch.testing.assert_close(r2.double(), r2_ref, **tol(dtype))
    torch.testing.assert_close(r3.double(), r3_ref, **tol(dtype))
    # both sides of every ReLU are taken (seed 4: the one-pixel case too, but for r2, r3 = 0)
    assert (r2 > 0).any() and (r3 > 0).any()
    if r2.numel() >= 20:
        assert (r2 == 0).any() and (r3 == 0).any() and (x < 0).any()

    go = torch.randn(out.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    go = go.to(dtype)
    launches = emu.launches()
    # the backward reads the forward's own r2, r3 (as in training)
    grads = emu.conv_residual_block_backward(
        crb_layout(go, layout), crb_layout(x, layout), weights[0], weights[2], weights[4], r2, r3
    )
    assert emu.launches() == launches + 9
    ref_grads = torch.autograd.grad(ref, [xr, *wr], go.double())
    names = ["x", "w_reduce", "b_reduce", "w_conv", "b_conv", "w_expand", "b_expand"]
    assert grads[0].is_contiguous(memory_format=torch.channels_last)
    for name, gk, r in zip(names, grads, ref_grads):
        report_diff(f"conv_residual_block grad {name}", gk, r)
        assert gk.shape == r.shape and gk.dtype == dtype
        if name != "x":
            assert gk.is_contiguous()
        torch.testing.assert_close(gk.double(), r, **tol(dtype))
    # deterministic: the weight gradients are summed in a fixed order, no atomics
    again = emu.conv_residual_block_backward(
        go, x, weights[0], weights[2], weights[4], r2.contiguous(), r3.contiguous()
    )
    for gk, g2 in zip(grads, again):
        assert torch.equal(gk, g2)


def test_conv_residual_block_empty(emu):
    x, weights = crb_inputs(0, 4, 2, 3, 5, torch.float64)
    launches = emu.launches()
    out, r2, r3 = emu.conv_residual_block(x, *weights)
    assert out.shape == (0, 4, 3, 5) and r2.shape == r3.shape == (0, 2, 3, 5)
    grads = emu.conv_residual_block_backward(x, x, weights[0], weights[2], weights[4], r2, r3)
    assert emu.launches() == launches
    assert grads[0].shape == x.shape
    for gk, w in zip(grads[1:], weights):
        assert gk.shape == w.shape and not gk.any()


def test_conv_residual_block_checks_its_inputs(emu):
    x, (wr, br, wc, bc, we, be) = crb_inputs(2, 4, 2, 3, 5, torch.float64)
    fwd = emu.conv_residual_block
    with pytest.raises(RuntimeError, match="x must be a 4-D tensor"):
        fwd(x[0], wr, br, wc, bc, we, be)
    with pytest.raises(RuntimeError, match="w_conv must have shape"):
        fwd(x, wr, br, wc[:4], bc, we, be)
    with pytest.raises(RuntimeError, match="w_expand must have shape"):
        fwd(x, wr, br, wc, bc, we.t(), be)
    with pytest.raises(RuntimeError, match="b_expand must have shape"):
        fwd(x, wr, br, wc, bc, we, br)
    with pytest.raises(RuntimeError, match="w_reduce must have the dtype of x"):
        fwd(x, wr.float(), br, wc, bc, we, be)
    with pytest.raises(RuntimeError, match="must be float32 or float64"):
        fwd(x.half(), *[w.half() for w in (wr, br, wc, bc, we, be)])
    with pytest.raises(ValueError, match="need at least one hidden feature"):
        fwd(x, wr[:, :0], br[:0], wc[:, :0, :0], bc[:0], we[:0], be)
    out, r2, r3 = fwd(x, wr, br, wc, bc, we, be)
    bwd = emu.conv_residual_block_backward
    with pytest.raises(RuntimeError, match="grad_out must have shape"):
        bwd(out[:, :3], x, wr, wc, we, r2, r3)
    with pytest.raises(RuntimeError, match="r3 must have shape"):
        bwd(out, x, wr, wc, we, r2, r3[:, :, 1:])
    with pytest.raises(RuntimeError, match="r2 must have the dtype of x"):
        bwd(out, x, wr, wc, we, r2.float(), r3)


# ---------------------------------------------------------------- CUDA math flags (defect 3)
def setup_nvcc_flags():
    """The nvcc flags of setup.py's CUDA extension, without -D / -lineinfo."""
    src = open(os.path.join(ROOT, "setup.py")).read()
    match = re.search(r"nvcc = opt \+ (\[[^\]]*\])", src)
    assert match, "setup.py: no 'nvcc = opt + [...]' line"
    return [
        f for f in ast.literal_eval(match.group(1)) if not f.startswith("-D") and f != "-lineinfo"
    ]


def test_setup_has_no_fast_math():
    flags = setup_nvcc_flags()
    assert "--use_fast_math" not in flags and "-use_fast_math" not in flags
    assert "-prec-div=false" in flags  # the float32 divisions are approximate (docs/gpu.md)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_ptx_has_no_approximate_tanh(tmp_path):
    # the LSTM cell of every scan (lstm_math.h) under setup.py's flags: tanhf must be the
    # precise one (--use_fast_math made it tanh.approx.f32: ~6.5e-4 relative error at the
    # paper's shapes against a 2e-4 float32 tolerance)
    src = tmp_path / "cell.cu"
    src.write_text(
        textwrap.dedent("""
        #include "pixelar/lstm_math.h"
        __global__ void cell(const float* p, float* out) {
          float c, h;
          pixelar::math::lstm_cell_forward(p[0], p[1], p[2], p[3], p[4], &c, &h);
          out[0] = c; out[1] = h; out[2] = pixelar::math::sigmoid(p[5]);
        }
    """)
    )
    ptx = tmp_path / "cell.ptx"
    cmd = [
        "nvcc",
        "-arch=sm_90",
        "-ptx",
        *setup_nvcc_flags(),
        "-O3",
        "-I",
        os.path.join(ROOT, "csrc", "include"),
        str(src),
        "-o",
        str(ptx),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    text = ptx.read_text()
    assert "tanh.approx" not in text
    assert "ex2.approx" in text or "ex2" in text  # compiled something (exp is there)


# ---------------------------------------------------------------- sanitizers (opt-in)
sanitize = pytest.mark.skipif(
    os.environ.get("PIXELAR_SANITIZE") != "1",
    reason="sanitizer runs are opt-in: PIXELAR_SANITIZE=1",
)


def runtime_library(name):
    return subprocess.run(
        [os.environ.get("CXX", "c++"), f"-print-file-name={name}"], capture_output=True, text=True
    ).stdout.strip()


def sanitizer_env(kind):
    """The environment of a process that loads the `kind` build: its runtime preloaded
    (with libstdc++ after it, so that ASan's __cxa_throw interceptor finds the real one)."""
    preload = [runtime_library(f"lib{kind}.so"), runtime_library("libstdc++.so")]
    env = dict(
        os.environ,
        LD_PRELOAD=" ".join(preload),
        PIXELAR_EMU_SANITIZER=kind,
        OMP_NUM_THREADS="1",
        PIXELAR_SANITIZE="0",
        ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1",
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
        TSAN_OPTIONS="halt_on_error=1:exitcode=66:report_signal_unsafe=0",
    )
    return env


def build_sanitized(kind, cuda_dir=None):
    """Build (and load) the sanitized module in a process with its runtime preloaded (the
    module refuses to load without it); the compilers run under the preload too."""
    code = "import sys; sys.path.insert(0, %r); import emulation_build as b; b.load(%r, %r)" % (
        os.path.join(HERE, "cuda_emulation"),
        kind,
        cuda_dir,
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=sanitizer_env(kind),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@sanitize
@pytest.mark.parametrize("kind", ["asan", "tsan"])
def test_sanitizers_on_every_case(kind):
    build_sanitized(kind)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-s",
            "-p",
            "no:cacheprovider",
            os.path.join(HERE, "test_cuda_emulation.py"),
            "-k",
            "not sanitizer and not ptx",
        ],
        cwd=ROOT,
        env=sanitizer_env(kind),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "passed" in proc.stdout


@sanitize
def test_sanitizer_tsan_catches_a_deleted_syncthreads(tmp_path):
    # a scratch copy of the kernels with the barrier that ends each row of the row scan's
    # forward deleted: the next row reads h while other threads still write it
    scratch = tmp_path / "csrc"
    shutil.copytree(os.path.join(ROOT, "csrc"), scratch)
    path = scratch / "cuda" / "row_lstm_scan.cu"
    src = path.read_text()
    barrier = "    __syncthreads();\n    cur ^= 1;\n"
    assert src.count(barrier) == 1
    path.write_text(src.replace(barrier, "    cur ^= 1;\n"))
    build_sanitized("tsan", str(scratch / "cuda"))
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {os.path.join(HERE, "cuda_emulation")!r})
        import torch, emulation_build
        m = emulation_build.load("tsan", {str(scratch / "cuda")!r})
        x = torch.randn(1, 16, 6, 40, dtype=torch.float64)
        m.row_lstm_scan(x, torch.randn(16, 4, 3, dtype=torch.float64))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=sanitizer_env("tsan"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode != 0 and "data race" in proc.stderr, proc.stderr[-3000:]
