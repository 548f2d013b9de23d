"""One writer per folder: a training run's folder, a book's ``runs/``.

Whoever trains into ``weights/<run>/`` (``training.fit``, ``steelnb train``) and whoever runs a
plan or builds a book into ``book/`` (``steelnb run``, ``steelnb book``) holds that folder's lock;
a second writer is refused at once (``FolderBusyError``: the folder, the holder's pid, host,
start time and command, and what to do) and changes nothing.

The lock is the operating system's (``filelock.FileLock`` on ``<folder>/.steelnb.lock``: flock,
which a shared filesystem such as NFS carries between nodes), so the kernel frees it when its
holder dies, ``kill -9`` included, and the file server when a lost node's lease runs out. Beside
it the holder keeps ``.steelnb.owner.json`` (pid, host, started, command) for the message, and
removes it when it lets go. Finding that record when the lock was free means its writer ended
without letting go: the lock is taken over and ``stale_message`` says whose it was.

Within one process the lock is re-entrant (``steelnb train`` holds it over training and the
test-split evaluation; ``fit`` inside takes it again at no cost).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .errors import SteelnbError
from .fileio import write_json

LOCK_NAME = ".steelnb.lock"
OWNER_NAME = ".steelnb.owner.json"

_held: dict[Path, int] = {}  # folders this process holds, with how many holds are open


class FolderBusyError(SteelnbError):
    """Another process writes into the folder; the message names it, its holder and what to do."""


def owner(folder: str | Path) -> dict[str, Any] | None:
    """The record of the folder's lock holder (pid, host, started, command), None without one."""
    try:
        data = json.loads((Path(folder) / OWNER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _me(what: str) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "what": what,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300] if sys.argv else "",
    }


def describe(rec: dict[str, Any] | None) -> str:
    """A holder as a reader wants it: "pid 123 on host h since 2026-12-01 21:03:05 UTC (steelnb train ...)"."""
    if not rec:
        return "a process that has not recorded itself yet"
    text = f"pid {rec.get('pid')} on host {rec.get('host')} since {rec.get('started')}"
    what = rec.get("what") or rec.get("command")
    return f"{text} ({what})" if what else text


def stale_message(folder: Path, rec: dict[str, Any]) -> str:
    return (
        f"steelnb: {folder}: taking over the lock of {describe(rec)}, which ended without letting "
        "go of it (killed, or its node lost); what it was writing may be incomplete"
    )


@contextmanager
def hold(folder: str | Path, what: str, advice: str = "") -> Iterator[None]:
    """Hold ``folder``'s lock for the block (created when missing); ``FolderBusyError`` at once
    when another process holds it. ``what`` says what this process does there (for the other's
    message); ``advice`` what a refused user can do besides waiting."""
    folder = Path(folder).resolve()
    if folder in _held:  # this process holds it already
        _held[folder] += 1
        try:
            yield
        finally:
            _held[folder] -= 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK_NAME), timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        rec = owner(folder)
        stop = f"stop it (kill {rec['pid']} on {rec['host']})" if rec else "stop it"
        raise FolderBusyError(
            f"{folder}: in use by {describe(rec)}; nothing was changed. Wait until it ends or {stop}, "
            f"then run again{'; ' + advice if advice else ''}"
        ) from None
    try:
        previous = owner(folder)
        if previous is not None:
            print(stale_message(folder, previous), file=sys.stderr, flush=True)
        write_json(folder / OWNER_NAME, _me(what))
        _held[folder] = 1
        yield
    finally:
        _held.pop(folder, None)
        (folder / OWNER_NAME).unlink(missing_ok=True)
        lock.release()


def holds(folder: str | Path) -> bool:
    """Whether this process holds ``folder``'s lock."""
    return Path(folder).resolve() in _held
