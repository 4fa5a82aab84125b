"""One training run per output folder: an exclusive ``fcntl.flock`` on ``OUT/run.lock``.

The lock is held for the whole run by the process that writes the folder (rank 0 under
DDP) and released by the kernel when that process ends, however it ends (kill -9
included): a stale lock file is harmless, only a live holder blocks. The file records the
holder (pid, host, start time) so a second run can say who holds it.

    with RunLock("runs/x"):     # RunLockedError if another process holds it
        ...
"""

import json
import os
import socket
import time

try:
    import fcntl
except ImportError:  # not POSIX: no locking
    fcntl = None

LOCK_NAME = "run.lock"


class RunLockedError(RuntimeError):
    """Another live process is training into the same folder."""


class RunLock:
    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, LOCK_NAME)
        self._fd = None

    def _holder(self):
        try:
            with open(self.path) as f:
                info = json.loads(f.read() or "{}")
            return (
                f"pid {info['pid']} on host {info['host']}, started "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info['since']))}"
            )
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def acquire(self):
        """Take the lock or raise RunLockedError naming the holder. The folder must exist."""
        if fcntl is None or self._fd is not None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(
                f"{self.folder} is in use by another pixelar train "
                f"({self._holder()}); wait for it to end or choose another "
                f"--out"
            ) from None
        except OSError:  # a filesystem without flock (some network mounts): run unlocked
            os.close(fd)
            return self
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self):
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
