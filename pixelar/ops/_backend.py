"""Backend selection for pixelar ops: ``set_backend``, the ``backend`` context manager, and
the resolution of a backend name to the implementation that will run.

Names: "auto" (the compiled kernel for the tensor's device: C++ on the CPU; CUDA, else
Triton, on a GPU), "reference" (pure PyTorch), "cpp", "cuda", "triton". Asking for a backend
that is not built, or that does not serve the tensor's device, raises ``RuntimeError``;
nothing falls back silently to another implementation.
"""
import contextlib
import importlib.util
import os
import threading

import torch

from .._extension import extension_error, extension_loaded, has_kernel

BACKENDS = ("auto", "reference", "cpp", "cuda", "triton")
_state = threading.local()
_default = "auto"


def _check_name(name):
    if name not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")


def set_backend(name: str) -> None:
    """Set the default backend for every pixelar op (all threads)."""
    global _default
    _check_name(name)
    _default = name


def get_backend() -> str:
    """The backend name in force in this thread."""
    return getattr(_state, "name", None) or _default


@contextlib.contextmanager
def backend(name: str):
    """Context manager: run the pixelar ops inside with backend ``name`` (this thread only)."""
    _check_name(name)
    previous = getattr(_state, "name", None)
    _state.name = name
    try:
        yield
    finally:
        _state.name = previous


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve(op: str, device: torch.device) -> str:
    """Return the implementation ("reference", "cpp", "cuda", "triton") that runs ``op`` on
    ``device`` under the backend in force, or raise ``RuntimeError`` saying why none can."""
    name = get_backend()
    if name == "reference":
        return "reference"
    if name == "auto":
        if device.type == "cpu":
            name = "cpp"
        elif device.type == "cuda":
            name = "cuda" if has_kernel(op, "CUDA") else "triton"
        else:
            raise RuntimeError(f"pixelar.ops.{op}: no compiled kernel for device "
                               f"{device}; use pixelar.ops.set_backend('reference')")
    if name == "cpp":
        if device.type != "cpu":
            raise RuntimeError(f"pixelar.ops.{op}: backend 'cpp' runs CPU tensors, got a "
                               f"tensor on {device}")
        if not extension_loaded():
            raise RuntimeError(f"pixelar.ops.{op}: backend 'cpp' is not available.\n"
                               + extension_error())
        if not has_kernel(op, "CPU"):
            raise RuntimeError(f"pixelar.ops.{op}: the extension has no CPU kernel for "
                               f"this op; rebuild pixelar or use backend 'reference'")
        return "cpp"
    if name == "cuda":
        if device.type != "cuda":
            raise RuntimeError(f"pixelar.ops.{op}: backend 'cuda' runs CUDA tensors, got "
                               f"a tensor on {device}")
        if not has_kernel(op, "CUDA"):
            detail = extension_error() or ("pixelar was built without CUDA kernels "
                                           "(set PIXELAR_CUDA=1 and rebuild)")
            raise RuntimeError(f"pixelar.ops.{op}: backend 'cuda' is not available: "
                               + detail)
        return "cuda"
    if name == "triton":
        if not triton_available():
            raise RuntimeError(f"pixelar.ops.{op}: backend 'triton' needs the triton "
                               "package (pip install triton)")
        if device.type != "cuda" and not (device.type == "cpu" and triton_interpreted()):
            raise RuntimeError(f"pixelar.ops.{op}: backend 'triton' runs CUDA tensors "
                               f"(or CPU tensors under TRITON_INTERPRET=1), got {device}")
        return "triton"
    raise AssertionError(name)
