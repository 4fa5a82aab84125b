"""Atomic file writes for checkpoints and run outputs.

A file is written to a temporary beside it (``NAME.<8 random chars>.tmp``), flushed to disk
(fsync), then switched in by one ``os.replace`` and the folder's entry fsynced: a reader
sees the old file or the new one, whole, never a mix, and a crash at any point leaves the
old file in place (plus at most a stale temporary, which ``clean_stale_temporaries``
removes). A failed write (disk full, permission) removes its temporary and raises
``OutputWriteError``, one line that says the previous file is kept.

Testing hook: ``PIXELAR_FAULT=LABEL:STAGE:K`` makes the K-th write of LABEL in this process
stop at STAGE (``start``, ``partial``, ``written``, ``replaced``): it writes its pid to the
file named by ``PIXELAR_FAULT_MARKER`` and sleeps, so that a test can kill it there with
SIGKILL (tests/test_checkpoint_crash.py).
"""

import os
import re
import tempfile
import time

STAGES = ("start", "partial", "written", "replaced")
_TEMPORARY = re.compile(r"^.+\.[a-z0-9_]{8}\.tmp$")
_fault_counts = {}


class OutputWriteError(RuntimeError):
    """A file could not be written (disk full, no permission, ...); the previous one is kept."""


def fault_point(label, stage):
    """Pause here (forever) if PIXELAR_FAULT names this label, stage and occurrence."""
    spec = os.environ.get("PIXELAR_FAULT")
    if not spec:
        return
    try:
        want_label, want_stage, want_k = spec.split(":")
        want_k = int(want_k)
    except ValueError:
        return
    if (label, stage) != (want_label, want_stage):
        return
    _fault_counts[label, stage] = n = _fault_counts.get((label, stage), 0) + 1
    if n != want_k:
        return
    marker = os.environ.get("PIXELAR_FAULT_MARKER")
    if marker:
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
    while True:  # the test kills us here
        time.sleep(60)


def _fsync_folder(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a folder; the rename is atomic all the same
    finally:
        os.close(fd)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write, label=None):
    """Call ``write(tmp_path)`` on a temp file beside ``path``, fsync it, then os.replace it
    onto ``path`` (see the module docstring). ``label`` names the file for ``fault_point``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if label:
            fault_point(label, "written")
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(folder)
    except OSError as exc:
        raise OutputWriteError(
            f"could not write {path}: {exc.strerror or exc}; the previous file (if any) is kept"
        ) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            try:
                os.remove(tmp)
            except OSError:
                pass
    if label:
        fault_point(label, "replaced")


def write_chunks(f, data, label=None):
    """Write ``data`` (bytes) to the open file ``f`` in two halves (a fault point between)."""
    half = len(data) // 2
    f.write(data[:half])
    f.flush()
    if label:
        fault_point(label, "partial")
    f.write(data[half:])


def atomic_write_bytes(path, data, label=None):
    """Write ``data`` to ``path`` atomically (see ``atomic_write``)."""

    def write(tmp):
        with open(tmp, "wb") as f:
            if label:
                fault_point(label, "start")
            write_chunks(f, data, label)

    atomic_write(path, write, label)


def atomic_write_json(path, obj):
    import json

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    atomic_write(path, write)


def clean_stale_temporaries(folder):
    """Remove the temporaries that interrupted atomic writes left in ``folder``; returns
    their names. Call only while no other process writes there (the run lock)."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(folder, name)
        if _TEMPORARY.match(name) and os.path.isfile(path) and not os.path.islink(path):
            try:
                os.remove(path)
                removed.append(name)
            except OSError:
                pass
    return removed
