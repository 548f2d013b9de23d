"""Atomic writes: every file steelnb writes appears whole or not at all.

A run killed mid-write, a full disk or an invalid result never leaves a half-written file in
place of a good one: data goes to a temporary file beside the target, which is renamed onto
it only when the writing finished without error.

A full disk (or a quota) is ``DiskFullError``, which names the final file (never the temporary
one), the free space there and the size the file needs. A writer that knows the size before it
writes (``atomic_path(path, size=...)``: text, JSON, CSV, a checkpoint's estimate) is refused
before it writes anything when the filesystem has less room than that; one that learns it only
by writing reports at least what it had written when the disk filled.

``read_mapping`` is the one reader of the YAML files steelnb reads back (plans, config files,
post-processing parameters): a missing file, invalid YAML and a document that is not a mapping
each raise the caller's error class with the file's name and the problem.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import SteelnbError

# the process's umask, read once (reading it means setting it): what a plain open() would apply
_UMASK = os.umask(0o022)
os.umask(_UMASK)

#: errors that mean "no room": a full filesystem, a user's quota
NO_ROOM = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(SteelnbError, OSError):
    """A file did not fit on its filesystem; names the final file, the free space and the size
    needed. Both a ``SteelnbError`` (one line on the command line) and an ``OSError`` (ENOSPC)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.errno = errno.ENOSPC


def human_size(n: float) -> str:
    """Bytes as a reader writes them: "512 B", "3.4 MB", "1.20 GB" (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def free_space(folder: str | Path) -> int:
    """Bytes free to this user on the filesystem that holds ``folder`` (its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def disk_full(
    path: str | Path, needed: int | None, written: int | None = None, what: str = ""
) -> DiskFullError:
    """The error for ``path`` that did not fit: its free space and the size it needs (or, when only
    the write found out, at least what it had written). ``what`` is a sentence on what to do."""
    path = Path(path)
    free = free_space(path.parent)
    if needed is not None:
        size = f"it needs {human_size(needed)}"
    elif written:
        size = f"it needs more than the {human_size(written)} written when the disk filled"
    else:
        size = "not even an empty file could be created there"
    advice = what or "free space there (or write elsewhere) and run again"
    return DiskFullError(
        f"{path}: no room to write it: {human_size(free)} free on {path.parent}, {size}; "
        f"nothing was replaced (the earlier files are intact); {advice}"
    )


def check_room(path: str | Path, size: int, what: str = "") -> None:
    """Raise ``DiskFullError`` when ``size`` bytes cannot fit beside ``path`` (the old file stays
    until the new one is whole, so both must fit at once)."""
    if free_space(Path(path).parent) < size:
        raise disk_full(path, size, what=what)


@contextmanager
def atomic_path(path: str | Path, size: int | None = None, what: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers pick the right format);
    rename it onto ``path`` when the block ends without error, remove it otherwise.

    ``size``: the bytes the file will take, when known: refused (``DiskFullError``) before
    anything is written when they do not fit. A write that fills the disk raises ``DiskFullError``
    naming ``path``; ``what`` says what to do then (default: free space and run again).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if size is not None:
            check_room(path, size, what)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    except OSError as e:
        if e.errno in NO_ROOM:
            raise disk_full(path, size, 0, what) from None
        raise
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file private (0600); give it what open() would: the mode of the file
        # it replaces, else 0666 less the umask (a submission or run folder others can read)
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except OSError as e:
        if e.errno not in NO_ROOM or isinstance(e, DiskFullError):
            raise
        written = Path(tmp).stat().st_size if Path(tmp).exists() else 0
        raise disk_full(path, size, written, what) from e
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; return the path."""
    data = text.encode()
    with atomic_path(path, size=len(data)) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_csv(path: str | Path, frame: Any) -> Path:
    """Write a DataFrame as CSV (no index) atomically; return the path."""
    return write_text(path, frame.to_csv(index=False))


def write_json(path: str | Path, data: Any, indent: int = 2) -> Path:
    """Write ``data`` as JSON atomically (values JSON cannot hold are written as strings)."""
    return write_text(path, json.dumps(data, indent=indent, default=str))


def read_mapping(path: str | Path, error: type[SteelnbError], what: str, expected: str) -> dict[str, Any]:
    """The mapping the YAML file ``path`` holds (an empty file: ``{}``), or ``error`` (the caller's
    class) naming the file and the problem: "PATH: WHAT not found", "PATH: not valid YAML (...)",
    "PATH: expected EXPECTED, got list". ``what``: the kind of file ("config file");
    ``expected``: what its document must be ("a mapping of config fields")."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (FileNotFoundError, IsADirectoryError):
        raise error(f"{path}: {what} not found") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected {expected}, got {type(data).__name__}")
    return data
