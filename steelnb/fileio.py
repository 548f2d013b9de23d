"""Atomic writes: every file steelnb writes appears whole or not at all.

A run killed mid-write, a full disk or an invalid result never leaves a half-written file in
place of a good one: data goes to a temporary file beside the target, which is renamed onto
it only when the writing finished without error.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# the process's umask, read once (reading it means setting it): what a plain open() would apply
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers pick the right format);
    rename it onto ``path`` when the block ends without error, remove it otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file private (0600); give it what open() would: the mode of the file
        # it replaces, else 0666 less the umask (a submission or run folder others can read)
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_csv(path: str | Path, frame: Any) -> Path:
    """Write a DataFrame as CSV (no index) atomically; return the path."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def write_json(path: str | Path, data: Any, indent: int = 2) -> Path:
    """Write ``data`` as JSON atomically (values JSON cannot hold are written as strings)."""
    return write_text(path, json.dumps(data, indent=indent, default=str))
