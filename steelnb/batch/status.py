"""The batch's record, ``book/runs/status.json``: which runs the last plan had, in what order,
and how each ended.

``{"plan": name, "order": [slug], "runs": {slug: record}}``; a record carries at least
slug, notebook, stage, title, parameters, status ("done", "skipped", "failed"; "submitted"
while a Slurm job is queued or running; "interrupted" when Ctrl-C or SIGTERM stopped the batch
while it ran: the next ``steelnb run`` runs it again, resuming where the notebook declares
``resume``), error; a run sent to Slurm also has a ``slurm`` block. The batch runner changes it
after every run by read-modify-write under a lock beside it (``update_status``), so two writers
lose none of each other's records; the book's table of contents and the reports read it through here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..data.errors import SteelnbError
from ..data.fileio import write_json

STATUS_FILE = "status.json"
STATUS_LOCK = ".status.json.lock"
#: how long a change waits for another writer's (each holds the lock for one read and one write)
LOCK_WAIT_S = 120.0


class StatusError(SteelnbError):
    """status.json exists but is not the batch record; the message names the file."""


def read_status(runs_dir: str | Path) -> dict[str, Any]:
    """``runs_dir/status.json`` (an empty record when the file is absent)."""
    path = Path(runs_dir) / STATUS_FILE
    if not path.is_file():
        return {"plan": None, "order": [], "runs": {}}
    try:
        status = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StatusError(f"{path}: not valid JSON ({e}); delete it to start the batch record anew") from None
    if not isinstance(status, dict) or not isinstance(status.get("runs", {}), dict):
        raise StatusError(f"{path}: expected an object with 'runs' {{slug: record}}")
    status.setdefault("order", [])
    status.setdefault("runs", {})
    return status


def write_status(runs_dir: str | Path, status: dict[str, Any]) -> Path:
    """Write the record atomically (a reader never sees half a file)."""
    return write_json(Path(runs_dir) / STATUS_FILE, status, indent=1)


def update_status(runs_dir: str | Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read the record, apply ``change`` to it (in place) and write it back, all under the
    status lock: a writer between this one's read and write cannot be overwritten. Returns the
    record as written."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(runs_dir / STATUS_LOCK), timeout=LOCK_WAIT_S, thread_local=False)
    try:
        with lock:
            status = read_status(runs_dir)
            change(status)
            write_status(runs_dir, status)
    except Timeout:
        raise StatusError(
            f"{runs_dir / STATUS_FILE}: another process held {runs_dir / STATUS_LOCK} for more than "
            f"{LOCK_WAIT_S:.0f} s; is a steelnb process hanging?"
        ) from None
    return status


def records(runs_dir: str | Path, notebook: str | None = None, state: str | None = None) -> list[dict]:
    """The last plan's records in its order (every record when no plan is named), optionally only
    one notebook's or one status's. Records of earlier plans stay in the file but are not the batch's."""
    status = read_status(runs_dir)
    runs = status["runs"]
    order = [s for s in status["order"] if s in runs] if status["order"] else list(runs)
    return [
        runs[s]
        for s in order
        if (notebook is None or runs[s].get("notebook") == notebook)
        and (state is None or runs[s].get("status") == state)
    ]
