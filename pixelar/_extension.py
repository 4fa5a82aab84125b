"""Loads the compiled extension ``pixelar._C`` (op schemas plus CPU and CUDA kernels).

Importing pixelar never fails because the extension is missing or broken: the error is
kept and raised, with rebuild instructions, the moment a compiled backend is asked for.
"""

import torch

_LOAD_ERROR = None
try:
    from . import _C  # noqa: F401  (registers torch.ops.pixelar.*)
except ImportError as exc:  # not built, or built against another torch
    _LOAD_ERROR = exc

REBUILD_HINT = (
    "Rebuild it against the installed torch ({torch}) from the repository root:\n"
    "    pip install ninja && pip install --no-build-isolation -e .\n"
    "or use the pure-PyTorch path: pixelar.ops.set_backend('reference')."
)


def extension_loaded() -> bool:
    """True when ``pixelar._C`` imported, i.e. the ``torch.ops.pixelar`` schemas exist."""
    return _LOAD_ERROR is None


def extension_error() -> str:
    """Why the extension is unavailable, with how to rebuild it ('' when it loaded)."""
    if _LOAD_ERROR is None:
        return ""
    return (
        f"pixelar's compiled extension (pixelar._C) failed to import: {_LOAD_ERROR}\n"
        + REBUILD_HINT.format(torch=torch.__version__)
    )


_KERNELS = {}  # (op, dispatch key) -> bool; registrations happen once, at import of _C


def has_kernel(op: str, dispatch_key: str) -> bool:
    """True when ``pixelar::<op>`` has a kernel registered for ``dispatch_key`` ('CPU', 'CUDA').

    Cached, so that under torch.compile (after one eager call) it is a plain dict lookup."""
    key = (op, dispatch_key)
    if key not in _KERNELS:
        _KERNELS[key] = _LOAD_ERROR is None and torch._C._dispatch_has_kernel_for_dispatch_key(
            f"pixelar::{op}", dispatch_key
        )
    return _KERNELS[key]
