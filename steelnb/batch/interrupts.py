"""Ctrl-C and SIGTERM during a batch: stop cleanly, say what was stopped.

``steelnb run`` turns SIGTERM (``kill``, a scheduler's stop, a closing terminal's hang-up is not
caught) into the same ``KeyboardInterrupt`` that Ctrl-C raises, so one path ends both: papermill
shuts the kernel down (its process group, with the training's children), the running runs are
marked "interrupted" in ``status.json`` and the plan ends with ``PlanInterrupted``, whose message
lists them; the next ``steelnb run`` runs them again.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class SignalInterrupt(KeyboardInterrupt):
    """A KeyboardInterrupt raised for a signal other than SIGINT (``signum``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class PlanInterrupted(KeyboardInterrupt):
    """A plan stopped by Ctrl-C or SIGTERM; the message lists the runs marked interrupted.
    ``signum``: the signal (the command exits with 128 + signum, as a shell reports it)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


def signal_of(exc: BaseException) -> int:
    """The signal an interrupt came from: SIGTERM for ``SignalInterrupt``, else SIGINT (Ctrl-C)."""
    return getattr(exc, "signum", signal.SIGINT)


def _raise(signum: int, frame: FrameType | None) -> None:
    raise SignalInterrupt(signum)


def install_sigterm() -> None:
    """From now on SIGTERM raises ``SignalInterrupt`` in this process's main thread (a batch
    worker: its run ends as on Ctrl-C, shutting its kernel down)."""
    signal.signal(signal.SIGTERM, _raise)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises ``SignalInterrupt`` inside the block (the main thread only: elsewhere
    Python cannot set a handler, and the block runs unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
