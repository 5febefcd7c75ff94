"""SIGINT and SIGTERM during a command: the first becomes an ``Interrupted`` exception, so a run marks its study
interrupted and the CLI exits 130 or 143 with one line; signals that arrive while that shutdown runs are ignored,
so a second Ctrl-C cannot cut the clean-up short (SIGKILL still can, and resume copes with it)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
