"""The batch's record, ``book/runs/status.json``: which runs the last plan had, in what order,
and how each ended.

``{"plan": name, "order": [slug], "runs": {slug: record}}``; a record carries at least
slug, notebook, stage, title, parameters, status ("done", "skipped", "failed"; "submitted"
while a Slurm job is queued or running), error; a run sent to Slurm also has a ``slurm`` block. The batch
runner writes it after every run (atomically); the book's table of contents and the reports read
it through here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import SteelnbError
from .fileio import write_json

STATUS_FILE = "status.json"


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
