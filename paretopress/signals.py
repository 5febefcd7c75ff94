"""SIGINT and SIGTERM during a command: the first becomes an ``Interrupted`` exception, so a run marks its study
interrupted and the CLI exits 130 or 143 with one line; signals that arrive while that shutdown runs are ignored,
so a second Ctrl-C cannot cut the clean-up short (SIGKILL still can, and resume copes with it).

Inside ``deferred`` (a store transaction) the exception waits until the block ends: raised in the middle of
SQLAlchemy's begin or commit it left a connection holding SQLite's write lock, and the run's own attempt to mark
the study interrupted then failed with "database is locked" (seen by ``benchmarks/faults.py``)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Critical:
    """How deep the main thread is in ``deferred`` blocks, and the signal that came meanwhile."""

    depth = 0
    pending: int | None = None


class Interrupted(KeyboardInterrupt):
    """A signal asked the command to stop; ``exit_code`` is the shell's convention, 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def interruptible() -> Iterator[None]:
    """Our handlers for the duration (restored after, unless a signal came: tests call the CLI in-process); only
    the main thread may install handlers, elsewhere Python's defaults stay."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = threading.Event()

    def handler(signum: int, _frame) -> None:
        if not raised.is_set():
            raised.set()
            if _Critical.depth:
                _Critical.pending = signum
            else:
                raise Interrupted(signum)

    previous = {number: signal.signal(number, handler) for number in SIGNALS}
    try:
        yield
    finally:
        for number, old in previous.items():  # once interrupted the process is ending: later signals stay ignored
            signal.signal(number, signal.SIG_IGN if raised.is_set() else old)


@contextmanager
def kept_handler(number: int) -> Iterator[None]:
    """Restore a signal's handler after a library call that replaces it (``ray.init`` makes SIGTERM exit at once)."""
    old = signal.getsignal(number) if threading.current_thread() is threading.main_thread() else None
    try:
        yield
    finally:
        if old is not None:
            signal.signal(number, old)


@contextmanager
def deferred() -> Iterator[None]:
    """A block a signal cannot cut in half: ``Interrupted`` is raised when it ends. Signals reach the main thread
    only, so elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _Critical.depth += 1
    try:
        yield
    finally:
        _Critical.depth -= 1
    if _Critical.depth == 0 and _Critical.pending is not None:
        signum, _Critical.pending = _Critical.pending, None
        raise Interrupted(signum)
