"""Writes that a signal cannot cut in half.

Ctrl-C and SIGTERM (which npsim turns into KeyboardInterrupt, see
``npsim.cli``) arrive at any bytecode; one landing inside a writer method left
its row buffers or a dataset's length half updated, and the ``finish`` that
marks the file interrupted then failed on them. Inside :func:`uninterrupted`
the two signals are held and delivered when the block ends, so a write runs
to its end and the interruption lands between writes.
"""

from __future__ import annotations

import functools
import signal
import threading

__all__ = ["uninterrupted"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def uninterrupted(method):
    """Decorate a method so that SIGINT and SIGTERM wait until it returns (main thread only;
    signal handlers cannot be set elsewhere, and other threads never receive them)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return method(*args, **kwargs)
        pending: list[int] = []
        old = {s: signal.getsignal(s) for s in _SIGNALS}
        if any(h is None for h in old.values()):  # a handler set outside Python cannot be restored
            return method(*args, **kwargs)
        for s in _SIGNALS:
            signal.signal(s, lambda signum, frame: pending.append(signum))
        try:
            return method(*args, **kwargs)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            for s in dict.fromkeys(pending):
                signal.raise_signal(s)  # now, to the handler the block found

    return wrapper
