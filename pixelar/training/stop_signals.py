"""Stop signals (SIGTERM, SIGINT) that stop training the way Ctrl-C does, and cannot be lost.

    with stop_signals():        # pixelar train: install the handlers, restore them after
        train(...)              # the trainer calls raise_if_stopped() between steps

A handler that only raises KeyboardInterrupt loses the stop now and then: CPython runs a
signal handler between any two bytecodes, also inside a weakref callback or a ``__del__``
that the garbage collector runs, and an exception raised there is printed as "Exception
ignored in ..." and dropped. (matplotlib's per-epoch curve, which makes and frees many
weakly referenced objects, hit this in 4 of 30 stops of a test run; it went on training.)
So the handler also records the stop, and ``raise_if_stopped`` raises it again at the next
step boundary.
"""

import contextlib
import signal
import threading

_stopped_by = None  # the name of the signal that asked for a stop, or None


def _handle(signum, frame):
    global _stopped_by
    _stopped_by = signal.Signals(signum).name
    raise KeyboardInterrupt(_stopped_by)


def raise_if_stopped():
    """Raise KeyboardInterrupt if a stop signal arrived (its first raise may have been
    dropped); the trainer calls this between steps."""
    if _stopped_by is not None:
        raise KeyboardInterrupt(_stopped_by)


@contextlib.contextmanager
def stop_signals():
    """Within the block, SIGTERM (``kill``, a scheduler's stop) and SIGINT raise
    KeyboardInterrupt and are remembered for ``raise_if_stopped``. SIGINT is handled even
    when inherited ignored, as in a job that a non-interactive shell started in the
    background (``nohup pixelar train ... &`` in a script); a SIGINT handler of the
    caller's own is left alone. Off the main thread (where signals cannot be handled)
    this does nothing. The previous handlers come back on exit."""
    global _stopped_by
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    _stopped_by = None
    signal.signal(signal.SIGTERM, _handle)
    if previous[signal.SIGINT] in (signal.SIG_IGN, signal.default_int_handler):
        signal.signal(signal.SIGINT, _handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stopped_by = None
