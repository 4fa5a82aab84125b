"""Backend selection and dispatch for every pixelar op: ``set_backend``, the ``backend``
context manager, one table of implementations per op, and one rule for "auto".

Names (``BACKENDS``): "auto", "reference" (pure PyTorch), "cpp" (the C++ CPU kernels),
"cuda" (the CUDA kernels), "triton" (the Triton kernels in pixelar.kernels).

Each op declares its implementations once, at import of its module in pixelar.ops::

    register("row_lstm_scan", reference=row_lstm_scan_ref, cpp=_compiled, cuda=_compiled,
             triton=lazy("pixelar.kernels.row_lstm_scan", "row_lstm_scan_triton"))

and its wrapper checks its inputs, then calls ``dispatch(op, device)(*inputs)``.

The one rule, for training and sampling ops alike:
  * "reference" runs the PyTorch reference on any device.
  * "auto": CPU tensors run "cpp"; CUDA tensors run "cuda" if the extension has the op's
    CUDA kernel, else "triton" if the op has a Triton implementation and triton is
    installed, else ``BackendUnavailableError`` (saying what is missing and that backend
    "reference" runs the PyTorch reference when asked for); other devices raise too.
  * "cpp", "cuda", "triton": that implementation, or ``BackendUnavailableError`` when the
    op has none, it is not built / installed, or it does not serve the tensor's device.
Nothing ever falls back silently to another implementation.

Adding a backend touches this file (its name in ``BACKENDS``, its availability check in
``_AVAILABLE``, its label in ``_KERNEL_LABELS``, and its place in the "auto" rule if any)
plus one keyword argument in each op's ``register`` call; nothing else.

Cost per op call: ``resolve`` (a few comparisons and cached dict lookups) and one dict
lookup of the implementation.
"""

import contextlib
import importlib
import importlib.util
import os
import threading

import torch

from .._extension import extension_error, extension_loaded, has_kernel

BACKENDS = ("auto", "reference", "cpp", "cuda", "triton")
IMPLEMENTATIONS = BACKENDS[1:]  # what an op registers; "auto" chooses among them
_state = threading.local()
_default = "auto"
_IMPLS = {}  # op name -> {implementation name: callable}
_REFERENCE_HINT = "pixelar.ops.backend('reference') (or set_backend('reference'))"


class BackendUnavailableError(RuntimeError):
    """The backend asked for (or chosen by "auto") cannot run the op on the tensor's device:
    not built, not installed, no kernel for this op, or a device it does not serve. The
    message says which, and how to get it or what to use instead."""


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


# ---- the table --------------------------------------------------------------------------


def register(op: str, **implementations) -> None:
    """Declare the implementations of ``op``: keyword arguments named in ``IMPLEMENTATIONS``
    ("reference" required), each a callable taking the wrapper's (checked) arguments."""
    unknown = set(implementations) - set(IMPLEMENTATIONS)
    if unknown or "reference" not in implementations:
        raise ValueError(
            f"register({op!r}): implementations must include 'reference' and "
            f"be among {IMPLEMENTATIONS}, got {sorted(implementations)}"
        )
    _IMPLS[op] = dict(implementations)


def implementations(op: str) -> tuple:
    """The implementation names registered for ``op``."""
    return tuple(_IMPLS[op])


def lazy(module: str, name: str):
    """A callable that imports ``module`` on each call (a dict lookup once it is imported)
    and calls its attribute ``name``: the Triton kernels load only when they run, so
    ``import pixelar`` never imports triton."""

    def call(*args):
        return getattr(importlib.import_module(module), name)(*args)

    call.__name__ = call.__qualname__ = name
    return call


def dispatch(op: str, device: torch.device):
    """The callable that runs ``op`` on ``device`` under the backend in force (``resolve``)."""
    return _IMPLS[op][resolve(op, device)]


# ---- the rule ---------------------------------------------------------------------------


def _no_cuda_detail():
    return extension_error() or (
        "pixelar was built without CUDA kernels (set PIXELAR_CUDA=1 and rebuild)"
    )


def _check_cpp(op, device):
    if device.type != "cpu":
        raise BackendUnavailableError(
            f"pixelar.ops.{op}: backend 'cpp' runs CPU tensors, got a tensor on {device}"
        )
    if not extension_loaded():
        raise BackendUnavailableError(
            f"pixelar.ops.{op}: backend 'cpp' is not available.\n" + extension_error()
        )
    if not has_kernel(op, "CPU"):
        raise BackendUnavailableError(
            f"pixelar.ops.{op}: the extension has no CPU kernel "
            f"for this op; rebuild pixelar or use backend "
            f"'reference'"
        )


def _check_cuda(op, device):
    if device.type != "cuda":
        raise BackendUnavailableError(
            f"pixelar.ops.{op}: backend 'cuda' runs CUDA tensors, got a tensor on {device}"
        )
    if not has_kernel(op, "CUDA"):
        raise BackendUnavailableError(
            f"pixelar.ops.{op}: backend 'cuda' is not available: " + _no_cuda_detail()
        )


def _check_triton(op, device):
    if not triton_available():
        raise BackendUnavailableError(
            f"pixelar.ops.{op}: backend 'triton' needs the triton package (pip install triton)"
        )
    if device.type != "cuda" and not (device.type == "cpu" and triton_interpreted()):
        raise BackendUnavailableError(
            f"pixelar.ops.{op}: backend 'triton' runs CUDA tensors "
            f"(or CPU tensors under TRITON_INTERPRET=1), got "
            f"{device}"
        )


_AVAILABLE = {"cpp": _check_cpp, "cuda": _check_cuda, "triton": _check_triton}
_KERNEL_LABELS = {"cpp": "C++", "cuda": "CUDA", "triton": "Triton"}


def _auto_gpu(op, device, impls):
    """The implementation that backend "auto" picks for ``op`` on a non-CPU ``device``."""
    if device.type != "cuda":
        raise BackendUnavailableError(
            f"pixelar.ops.{op}: no compiled kernel for device "
            f"{device}; use pixelar.ops.set_backend('reference')"
        )
    if has_kernel(op, "CUDA"):
        return "cuda"
    if "triton" in impls:
        if triton_available():
            return "triton"
        triton = (
            "; backend 'triton' (its other GPU kernel) needs the triton package "
            "(pip install triton)"
        )
    else:
        triton = " (this op has no Triton kernel)"
    raise BackendUnavailableError(
        f"pixelar.ops.{op}: backend 'auto' found no CUDA kernel for a tensor on {device}: "
        f"{_no_cuda_detail()}{triton}\nTo run the PyTorch reference on the GPU, ask for it "
        f"explicitly: {_REFERENCE_HINT}."
    )


def resolve(op: str, device: torch.device) -> str:
    """The implementation name (one of ``IMPLEMENTATIONS``) that runs ``op`` on ``device``
    under the backend in force, or ``BackendUnavailableError`` saying why none can (the
    rule in the module docstring)."""
    name = getattr(_state, "name", None) or _default  # get_backend(), inlined
    if name == "reference":
        return "reference"
    impls = _IMPLS[op]
    if name == "auto":
        name = "cpp" if device.type == "cpu" else _auto_gpu(op, device, impls)
    if name not in impls:
        others = ", ".join(f"'{n}'" for n in ("auto",) + tuple(impls))
        raise BackendUnavailableError(
            f"pixelar.ops.{op}: there is no "
            f"{_KERNEL_LABELS[name]} kernel for this op; use backend "
            f"{others}"
        )
    _AVAILABLE[name](op, device)
    return name
