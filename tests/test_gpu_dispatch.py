"""Backend dispatch for GPU backends, checkable without a GPU: CUDA tensors go to the backend
asked for, a backend that is not built or does not serve the tensor's device raises a
clear RuntimeError, nothing falls back silently to the reference (the sampling ops
included: "auto" on a GPU without their CUDA kernels raises); and a CUDA build registers a
CUDA kernel for every op (CI sets PIXELAR_EXPECT_CUDA=1 for that build).

Tensors on the "meta" device stand in for non-CPU tensors; resolve() is given a
torch.device("cuda") directly, which needs no GPU. Every refusal is a
BackendUnavailableError (a RuntimeError), for training and sampling ops alike.
"""

import importlib.util
import os

import pytest
import torch

import pixelar
from pixelar.ops import BackendUnavailableError, _backend

SAMPLING = ["nade_sample", "rnade_sample", "pixel_network_sample_step"]
OPS = [
    "diagonal_lstm_scan",
    "diagonal_lstm_scan_backward",
    "diagonal_lstm_scan_image",
    "diagonal_lstm_scan_image_backward",
    "row_lstm_scan",
    "row_lstm_scan_backward",
    "nade_forward",
    "nade_forward_checkpointed",
    "nade_forward_backward",
    "conv_residual_block",
    "conv_residual_block_backward",
] + SAMPLING
PUBLIC = [
    "diagonal_lstm_scan",
    "diagonal_lstm_scan_image",
    "row_lstm_scan",
    "nade_forward",
    "conv_residual_block",
]
CUDA = torch.device("cuda")


def op_inputs(op, device="cpu"):
    """Small valid inputs for the public wrapper of ``op``."""
    kw = dict(device=device, dtype=torch.float32)
    if op == "diagonal_lstm_scan":
        return torch.randn(1, 8, 3, 5, **kw), torch.randn(8, 2, 2, **kw)
    if op == "diagonal_lstm_scan_image":
        return torch.randn(1, 8, 3, 4, **kw), torch.randn(8, 2, 2, **kw), True
    if op == "row_lstm_scan":
        return torch.randn(1, 8, 3, 4, **kw), torch.randn(8, 2, 3, **kw)
    if op == "conv_residual_block":  # F = 4, h = 2
        shapes = [(1, 4, 3, 4), (4, 2), (2,), (5, 2, 2), (2,), (2, 4), (4,)]
        return tuple(torch.randn(*shape, **kw) for shape in shapes)
    return (
        torch.randn(2, 4, **kw),
        torch.randn(5, 4, **kw),
        torch.randn(5, **kw),
        torch.randn(4, 1, 5, **kw),
        torch.randn(4, 1, **kw),
    )


def call(op, inputs):
    return getattr(pixelar.ops, op)(*inputs)


@pytest.fixture
def cuda_kernels(monkeypatch):
    """Pretend the extension has (True) or lacks (False) CUDA kernels."""

    def set_built(built):
        monkeypatch.setattr(
            _backend, "has_kernel", lambda op, key: built if key == "CUDA" else True
        )

    return set_built


@pytest.mark.parametrize("op", PUBLIC)
def test_cuda_backend_refuses_cpu_tensors(op):
    with pixelar.ops.backend("cuda"):
        with pytest.raises(RuntimeError, match="backend 'cuda' runs CUDA tensors"):
            call(op, op_inputs(op))


@pytest.mark.parametrize("op", PUBLIC)
def test_cpp_backend_refuses_non_cpu_tensors(op):
    with pixelar.ops.backend("cpp"):
        with pytest.raises(RuntimeError, match="backend 'cpp' runs CPU tensors"):
            call(op, op_inputs(op, device="meta"))


@pytest.mark.parametrize("op", PUBLIC)
def test_cuda_backend_not_built_is_an_error(op, cuda_kernels):
    cuda_kernels(False)
    with pixelar.ops.backend("cuda"):
        with pytest.raises(RuntimeError, match="backend 'cuda' is not available"):
            _backend.resolve(op, CUDA)


@pytest.mark.parametrize("op", PUBLIC)
def test_cuda_tensors_go_to_the_backend_asked_for(op, cuda_kernels, monkeypatch):
    monkeypatch.setattr(_backend, "triton_available", lambda: True)
    cuda_kernels(True)
    for name, expected in (
        ("cuda", "cuda"),
        ("triton", "triton"),
        ("auto", "cuda"),
        ("reference", "reference"),
    ):
        with pixelar.ops.backend(name):
            assert _backend.resolve(op, CUDA) == expected
    cuda_kernels(False)  # auto on a GPU without CUDA kernels: Triton, never the reference
    with pixelar.ops.backend("auto"):
        assert _backend.resolve(op, CUDA) == "triton"


@pytest.mark.parametrize("op", PUBLIC)
def test_triton_missing_is_an_error(op, cuda_kernels, monkeypatch):
    monkeypatch.setattr(_backend, "triton_available", lambda: False)
    with pixelar.ops.backend("triton"):
        with pytest.raises(RuntimeError, match="needs the triton package"):
            _backend.resolve(op, CUDA)
    cuda_kernels(False)  # auto: no CUDA kernel and no Triton -> error, not the reference
    with pixelar.ops.backend("auto"):
        with pytest.raises(RuntimeError, match="triton"):
            _backend.resolve(op, CUDA)


@pytest.mark.parametrize("op", PUBLIC)
def test_triton_refuses_cpu_tensors_without_interpreter(op, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(_backend, "triton_available", lambda: True)
    with pixelar.ops.backend("triton"):
        with pytest.raises(RuntimeError, match="backend 'triton' runs CUDA tensors"):
            call(op, op_inputs(op))
        with pytest.raises(RuntimeError, match="backend 'triton' runs CUDA tensors"):
            call(op, op_inputs(op, device="meta"))


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_triton_kernels_refuse_cpu_tensors_without_interpreter(monkeypatch):
    """Called directly (not through pixelar.ops), the Triton functions check too."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    from pixelar.kernels.diagonal_lstm_scan import diagonal_lstm_scan_triton
    from pixelar.kernels.nade_forward import nade_forward_triton
    from pixelar.kernels.row_lstm_scan import row_lstm_scan_triton

    for fn, op in (
        (diagonal_lstm_scan_triton, "diagonal_lstm_scan"),
        (row_lstm_scan_triton, "row_lstm_scan"),
        (nade_forward_triton, "nade_forward"),
    ):
        with pytest.raises(RuntimeError, match="expects CUDA tensors"):
            fn(*op_inputs(op))


@pytest.mark.parametrize("op", PUBLIC)
def test_cpp_backend_without_extension_is_an_error(op, monkeypatch):
    monkeypatch.setattr(_backend, "extension_loaded", lambda: False)
    monkeypatch.setattr(_backend, "extension_error", lambda: "pixelar._C failed to import")
    with pixelar.ops.backend("cpp"):
        with pytest.raises(RuntimeError, match="backend 'cpp' is not available"):
            call(op, op_inputs(op))


# ---- the sampling ops (nade_sample, rnade_sample, pixel_network_sample_step): C++ and CUDA
# kernels, no Triton kernel; "auto" on a GPU never runs the PyTorch sampler unasked


@pytest.mark.parametrize("op", SAMPLING)
def test_sampling_auto_on_cuda_without_kernel_raises(op, cuda_kernels):
    cuda_kernels(False)
    with pixelar.ops.backend("auto"):
        with pytest.raises(RuntimeError, match=r"no CUDA kernel[\s\S]*backend\('reference'\)"):
            _backend.resolve(op, CUDA)
    with pixelar.ops.backend("cuda"):
        with pytest.raises(RuntimeError, match="backend 'cuda' is not available"):
            _backend.resolve(op, CUDA)
    with pixelar.ops.backend("reference"):  # the PyTorch sampler on a GPU, asked for
        assert _backend.resolve(op, CUDA) == "reference"


@pytest.mark.parametrize("op", SAMPLING)
def test_sampling_cuda_tensors_go_to_the_cuda_kernel(op, cuda_kernels, monkeypatch):
    monkeypatch.setattr(_backend, "triton_available", lambda: True)
    monkeypatch.setattr(_backend, "extension_loaded", lambda: True)
    cuda_kernels(True)
    for name, expected in (("auto", "cuda"), ("cuda", "cuda"), ("reference", "reference")):
        with pixelar.ops.backend(name):
            assert _backend.resolve(op, CUDA) == expected
    with pixelar.ops.backend("auto"):
        assert _backend.resolve(op, torch.device("cpu")) == "cpp"
    with pixelar.ops.backend("triton"):
        with pytest.raises(RuntimeError, match="no Triton kernel"):
            _backend.resolve(op, CUDA)
    with pixelar.ops.backend("cpp"):
        with pytest.raises(RuntimeError, match="backend 'cpp' runs CPU tensors"):
            _backend.resolve(op, CUDA)


def test_sampling_wrappers_do_not_fall_back_to_the_reference(monkeypatch):
    """Through the public wrappers: on a device with no sampling kernel ("meta" stands in
    for it) "auto" raises; the PyTorch samplers (which would run on meta tensors) are never
    called."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the PyTorch reference sampler ran without being asked for")

    for op in ("nade_sample", "rnade_sample"):  # the dispatch table's reference entries
        monkeypatch.setitem(_backend._IMPLS[op], "reference", forbidden)
    kw = dict(device="meta", dtype=torch.float32)
    u = torch.empty(3, 5, device="meta", dtype=torch.float64)
    W, c = torch.empty(4, 5, **kw), torch.empty(4, **kw)
    with pixelar.ops.backend("auto"):
        with pytest.raises(RuntimeError, match="no compiled kernel for device meta"):
            pixelar.ops.nade_sample(
                u, None, W, c, torch.empty(5, 1, 4, **kw), torch.empty(5, 1, **kw)
            )
        with pytest.raises(RuntimeError, match="no compiled kernel for device meta"):
            pixelar.ops.rnade_sample(
                u, u, W, c, torch.empty(5, 6, 4, **kw), torch.empty(5, 6, **kw), -7.0, 7.0
            )


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="backend"):
        pixelar.ops.set_backend("cudnn")


@pytest.mark.skipif(
    torch.version.cuda is None or os.environ.get("PIXELAR_EXPECT_CUDA") != "1",
    reason="only for a CUDA build of pixelar (CI sets PIXELAR_EXPECT_CUDA=1 "
    "after building with PIXELAR_CUDA=1)",
)
@pytest.mark.parametrize("op", OPS)
def test_cuda_build_registers_every_op(op):
    assert pixelar._extension.extension_loaded(), pixelar._extension.extension_error()
    assert pixelar._extension.has_kernel(op, "CUDA"), (
        f"pixelar::{op} has no CUDA kernel in this build; registered: "
        f"{torch._C._dispatch_dump(f'pixelar::{op}')}"
    )


# ---- the one dispatch table and the one "auto" rule (training and sampling ops alike)

ALL_OPS = PUBLIC + SAMPLING


def test_every_op_declares_its_implementations_once():
    assert sorted(_backend._IMPLS) == sorted(ALL_OPS)
    for op in ALL_OPS:
        impls = _backend.implementations(op)
        assert set(impls) <= set(_backend.IMPLEMENTATIONS) and "reference" in impls, impls
        assert ("triton" in impls) == (op in PUBLIC), (op, impls)  # no Triton sampling kernel


def test_register_refuses_unknown_implementations():
    with pytest.raises(ValueError, match="among"):
        _backend.register("some_op", reference=len, cudnn=len)
    with pytest.raises(ValueError, match="'reference'"):
        _backend.register("some_op", cpp=len)
    assert "some_op" not in _backend._IMPLS


@pytest.mark.parametrize("op", ALL_OPS)
def test_auto_rule(op, cuda_kernels, monkeypatch):
    """auto: CPU -> cpp; CUDA -> cuda if its kernel is built, else triton if the op has one
    and triton is installed, else BackendUnavailableError; other devices -> error."""
    has_triton = op in PUBLIC
    monkeypatch.setattr(_backend, "extension_loaded", lambda: True)
    with pixelar.ops.backend("auto"):
        assert _backend.resolve(op, torch.device("cpu")) == "cpp"
        cuda_kernels(True)
        for installed in (True, False):
            monkeypatch.setattr(_backend, "triton_available", lambda i=installed: i)
            assert _backend.resolve(op, CUDA) == "cuda"
        cuda_kernels(False)
        monkeypatch.setattr(_backend, "triton_available", lambda: True)
        if has_triton:
            assert _backend.resolve(op, CUDA) == "triton"
        else:
            with pytest.raises(
                BackendUnavailableError, match=r"no CUDA kernel.*\(this op has no Triton kernel\)"
            ):
                _backend.resolve(op, CUDA)
        monkeypatch.setattr(_backend, "triton_available", lambda: False)
        with pytest.raises(BackendUnavailableError) as err:
            _backend.resolve(op, CUDA)
        message = str(err.value)
        assert "no CUDA kernel" in message and "backend('reference')" in message, message
        assert ("needs the triton package" in message) == has_triton, message
        with pytest.raises(BackendUnavailableError, match="no compiled kernel for device meta"):
            _backend.resolve(op, torch.device("meta"))


def test_backend_unavailable_error_is_a_runtime_error_exported_from_ops():
    assert issubclass(pixelar.ops.BackendUnavailableError, RuntimeError)
    assert "BackendUnavailableError" in pixelar.ops.__all__


@pytest.mark.parametrize("op", ALL_OPS)
def test_every_refusal_is_a_backend_unavailable_error(op, cuda_kernels, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(_backend, "triton_available", lambda: True)
    cuda_kernels(False)
    cases = [
        ("cpp", CUDA, "backend 'cpp' runs CPU tensors"),
        ("cuda", torch.device("cpu"), "backend 'cuda' runs CUDA tensors"),
        ("cuda", CUDA, "backend 'cuda' is not available"),
        (
            "triton",
            torch.device("cpu"),
            "runs CUDA tensors" if op in PUBLIC else "no Triton kernel",
        ),
    ]
    for name, device, message in cases:
        with pixelar.ops.backend(name):
            with pytest.raises(BackendUnavailableError, match=message):
                _backend.resolve(op, device)
    monkeypatch.setattr(_backend, "extension_loaded", lambda: False)
    monkeypatch.setattr(_backend, "extension_error", lambda: "pixelar._C failed to import")
    with pixelar.ops.backend("cpp"):
        with pytest.raises(BackendUnavailableError, match="backend 'cpp' is not available"):
            _backend.resolve(op, torch.device("cpu"))


@pytest.mark.parametrize("op", PUBLIC)
@pytest.mark.parametrize("name", ["auto", "cpp", "reference"])
def test_wrappers_run_the_implementation_the_table_names(op, name, monkeypatch):
    """The public wrapper calls the table's entry for the resolved backend, with its inputs."""
    calls = []
    impl = "cpp" if name == "auto" else name
    if impl == "cpp" and not pixelar._extension.extension_loaded():
        pytest.skip("pixelar._C is not built")
    monkeypatch.setitem(_backend._IMPLS[op], impl, lambda *args: calls.append(args) or "ran")
    inputs = op_inputs(op)
    with pixelar.ops.backend(name):
        assert call(op, inputs) == "ran"
    assert len(calls) == 1 and all(a is b for a, b in zip(calls[0], inputs))
