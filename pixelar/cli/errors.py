"""How the pixelar command reports a failure: one line on stderr and an exit status.

``ERRORS`` is the one place that maps exception types to that line and status, first
match wins: a user error (a bad value, an unusable path, a damaged checkpoint) is status
2; a failure while running (a diverged training, a full disk, a lost DDP peer) is status
1. To report one more exception type, add one row.
"""

from .. import data as datasets
from ..ops import BackendUnavailableError
from ..training.atomic import OutputWriteError
from ..training.checkpoint import CheckpointError
from ..training.config import TrainingDiverged, TrainingError
from ..training.distributed import DeviceError, PeerError
from ..training.run_lock import RunLockedError


class CLIError(Exception):
    """A usage error: printed as one line, exit status 2."""


def one_line(exc):
    """The message of ``exc`` on one line (its type name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _as_is(exc, args):
    return one_line(exc)


def _write_failed(exc, args):
    """Writing an output failed midway (disk full, permissions, ...)."""
    where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
    return f"cannot write{where}: {exc.strerror or one_line(exc)}"


def _backend_message(exc, args):
    """A backend that cannot run here: what to use instead."""
    return (
        f"backend '{getattr(args, 'backend', 'auto')}' cannot run this model here: "
        f"{one_line(exc)} Use --backend reference for the pure-PyTorch kernels (slow), "
        f"or build the compiled ones: pip install --no-build-isolation -e ."
    )


# (exception types, exit status, message(exc, args) -> str)
ERRORS = [
    (
        (
            CLIError,
            TrainingError,
            CheckpointError,
            datasets.DataFileNotFoundError,
            datasets.DataFormatError,
            RunLockedError,
            DeviceError,
            FileExistsError,
        ),
        2,
        _as_is,
    ),
    ((TrainingDiverged, OutputWriteError, PeerError), 1, _as_is),
    ((OSError,), 1, _write_failed),
    ((BackendUnavailableError,), 2, _backend_message),
]


def explain(exc, args):
    """(exit status, one-line message) for ``exc`` by the first row of ERRORS it matches,
    or None when none matches (the exception is then not the user's to read)."""
    for types, status, message in ERRORS:
        if isinstance(exc, types):
            return status, message(exc, args)
    return None
