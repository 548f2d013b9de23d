"""Atomic writes (steelnb.data.fileio): whole or not at all, with the permissions open() would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from steelnb.data.fileio import atomic_path, write_csv, write_text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_gets_the_mode_open_would_give(tmp_path: Path) -> None:
    """mkstemp's private 0600 would leave a run folder or a submission unreadable to others."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = write_text(tmp_path / "written.txt", "x")
    assert _mode(written) == _mode(plain)
    import pandas as pd

    assert _mode(write_csv(tmp_path / "t.csv", pd.DataFrame({"a": [1]}))) == _mode(plain)


def test_a_replaced_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "kept.txt"
    path.write_text("old")
    os.chmod(path, 0o640)
    write_text(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "kept.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("stopped mid-write")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "plan not found"),
        ("a: [1,\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping, got list"),
    ],
)
def test_read_mapping_names_the_file_and_the_problem(tmp_path: Path, text: str | None, problem: str) -> None:
    from steelnb.batch.pipeline import PlanError
    from steelnb.data.fileio import read_mapping

    path = tmp_path / "p.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(PlanError, match=problem) as caught:
        read_mapping(path, PlanError, "plan", "a mapping")
    assert str(path) in str(caught.value)


def test_read_mapping_reads_an_empty_file_as_empty(tmp_path: Path) -> None:
    from steelnb.data.errors import SteelnbError
    from steelnb.data.fileio import read_mapping

    (tmp_path / "e.yaml").write_text("")
    (tmp_path / "m.yaml").write_text("a: 1\n")
    assert read_mapping(tmp_path / "e.yaml", SteelnbError, "file", "a mapping") == {}
    assert read_mapping(tmp_path / "m.yaml", SteelnbError, "file", "a mapping") == {"a": 1}
