"""Every training op on every compiled backend of every device at hand, against the
pure-PyTorch reference computed in float64 on the same device: outputs and the gradients
of every input, at odd small shapes, in float32 and float64, contiguous and not.

One test body for all (device, backend) pairs: ("cpu", "cpp") runs in every test run (CI
included), ("cuda", "cuda") and ("cuda", "triton") where a GPU is present (skipped
otherwise). The cases are the ones that matter on a GPU: the Triton NADE backward gave
8 times the gradients of x, W and c at O = 1 on the first GPU run (2026-12-04, an H200),
which the interpreter could not show, so NADE runs at O = 1, 3 and 30. Each raw op also
passes torch.library.opcheck on the device. (benchmarks/gpu.py adds the paper's shapes and
the timings.) Its GPU half, float64 on the GPU included, first ran on the second GPU lease
(2026-12-04 18:27, an H200; README, "GPU status").

Tolerance: the error relative to the largest reference value, float32 2e-4 (GPU sums run
in another order and with -prec-div=false divisions), float64 1e-10.
"""

import importlib.util
import os

import pytest
import torch

from pixelar import ops
from pixelar._extension import has_kernel
from pixelar.ops._backend import triton_available


def _load_gpu_benchmark():
    """benchmarks/gpu.py: the GPU check's input makers (the paper's scalings), its runner
    (outputs and gradients under a backend, fixed cotangents), error and tolerances."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(
        "pixelar_gpu_benchmark", os.path.join(root, "benchmarks", "gpu.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_GPU = _load_gpu_benchmark()
REL_TOL = _GPU.TOL  # float32 2e-4, float64 1e-10 (relative to the largest reference value)


def _scan(B, H, R, S, K, dev, dt):
    return list(_GPU._scan_inputs(B, H, R, S, K, dev, dt))


def _nade(B, D, Hd, O, dev, dt):
    return list(_GPU._nade_inputs(B, D, Hd, O, dev, dt))


def _block(*shape):
    return list(_GPU._block_inputs(*shape))


def _image_scan_case(reverse, B, H, R, W):
    """The image-layout Diagonal LSTM scan, one direction, with the bias."""
    return (
        lambda x, w, b: ops.diagonal_lstm_scan_image(x, w, reverse, b),
        lambda dev, dt: _scan(B, H, R, W, 2, dev, dt) + [torch.randn(4 * H, device=dev, dtype=dt)],
        "diagonal_lstm_scan_image",
        lambda x, w, b: (x, w, reverse, b),
    )


# name: (wrapper, inputs(dev, dtype), raw op name, raw args from the inputs); every op has
# a Triton kernel
CASES = {
    "diagonal_lstm_scan": (
        ops.diagonal_lstm_scan,
        lambda dev, dt: _scan(3, 5, 6, 6 + 7 - 1, 2, dev, dt),
        "diagonal_lstm_scan",
        lambda x, w: (x, w),
    ),
    "diagonal_lstm_scan_image": _image_scan_case(False, 2, 5, 7, 4),
    "diagonal_lstm_scan_image_reverse": _image_scan_case(True, 3, 4, 5, 9),
    "row_lstm_scan": (
        ops.row_lstm_scan,
        lambda dev, dt: _scan(2, 7, 5, 9, 3, dev, dt),
        "row_lstm_scan",
        lambda x, w: (x, w),
    ),
    "conv_residual_block": (
        ops.conv_residual_block,
        lambda dev, dt: _block(3, 20, 12, 9, 4, dev, dt),
        "conv_residual_block",
        lambda *a: a,
    ),
}
# NADE at O = 1 and 3 (the Triton kernel's small-O path, wrong on the first GPU run) and 30
# (its tl.dot path; through the checkpointed raw op that training runs)
for _shape, _raw in (
    ((19, 23, 37, 1), "nade_forward"),
    ((5, 20, 40, 3), "nade_forward"),
    ((17, 11, 70, 30), "nade_forward_checkpointed"),
):
    CASES[f"nade_forward_O{_shape[3]}"] = (
        ops.nade_forward,
        lambda dev, dt, shape=_shape: _nade(*shape, dev, dt),
        _raw,
        lambda *a: a,
    )


def _cuda_ready():
    return torch.cuda.is_available()


TARGETS = [
    pytest.param("cpu", "cpp", id="cpu-cpp"),
    pytest.param(
        "cuda",
        "cuda",
        id="cuda-cuda",
        marks=pytest.mark.skipif(not _cuda_ready(), reason="needs a CUDA GPU"),
    ),
    pytest.param(
        "cuda",
        "triton",
        id="cuda-triton",
        marks=pytest.mark.skipif(
            not (_cuda_ready() and triton_available()), reason="needs a CUDA GPU and triton"
        ),
    ),
]


def _require(device, backend, raw_name):
    key = "CPU" if device == "cpu" else "CUDA"
    if backend in ("cpp", "cuda") and not has_kernel(raw_name, key):
        pytest.skip(f"no {key} kernel of {raw_name} is built")


def _non_contiguous(t):
    """The same values in memory of reversed dimension order (strides not contiguous)."""
    if t.dim() < 2:
        return t
    dims = list(range(t.dim()))[::-1]
    return t.permute(dims).contiguous().permute(dims)


@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "strided"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("device, backend", TARGETS)
def test_op_matches_the_float64_reference(device, backend, case, dtype, contiguous):
    fn, make, raw_name, _ = CASES[case]
    _require(device, backend, raw_name)
    torch.manual_seed(0)
    inputs = make(device, dtype)
    if not contiguous:
        inputs = [_non_contiguous(t) for t in inputs]
    ref_out, ref_grads = _GPU.run_with_grads(fn, [t.double() for t in inputs], "reference")
    out, grads = _GPU.run_with_grads(fn, inputs, backend)
    for i, (o, r) in enumerate(zip(out, ref_out)):
        assert o.dtype == dtype and o.device.type == device
        err = _GPU.rel_err(o, r)
        assert err <= REL_TOL[dtype], f"{case} output {i}: relative error {err:.2e}"
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        err = _GPU.rel_err(g, r)
        assert err <= REL_TOL[dtype], f"{case} gradient of input {i}: relative error {err:.2e}"


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_raw_op_passes_opcheck_on_the_device(device, case):
    if device == "cuda" and not _cuda_ready():
        pytest.skip("needs a CUDA GPU")
    _, make, raw_name, raw_args = CASES[case]
    _require(device, "cpp" if device == "cpu" else "cuda", raw_name)
    torch.manual_seed(0)
    inputs = [
        t.requires_grad_() if t.is_floating_point() else t for t in make(device, torch.float64)
    ]
    torch.library.opcheck(getattr(torch.ops.pixelar, raw_name).default, tuple(raw_args(*inputs)))
