"""The benchmarks of the performance page: running a plan's ``bench/*.py`` scripts, and turning
their JSON results (``bench/results/*.json``) into the page's tables.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd


def _markdown_table(frame: pd.DataFrame) -> str:
    cells = [[str(c) for c in frame.columns]] + [
        ["" if v is None or v != v else str(v) for v in row] for row in frame.itertuples(index=False)
    ]
    lines = ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join([lines[0], "| " + " | ".join("---" for _ in frame.columns) + " |", *lines[1:]])


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v != v:
        return ""
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def _bench_tables(data: Any) -> list[pd.DataFrame]:
    """One JSON result -> tables: a list of records; {name: {field: value}} rows; scalars."""
    rows = data.get("results", data.get("rows", data)) if isinstance(data, dict) else data
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        # the setting the rows were measured in (device, sizes, targets) under the table
        setting = (
            {k: v for k, v in data.items() if k not in ("results", "rows")} if isinstance(data, dict) else {}
        )
        setting = {
            k: "; ".join(map(str, v)) if isinstance(v, list) else v
            for k, v in setting.items()
            if not isinstance(v, dict)
        }
        extra = [pd.DataFrame({"measure": list(setting), "value": list(setting.values())})] if setting else []
        return [pd.DataFrame(rows), *extra]
    if not isinstance(rows, dict):
        return [pd.DataFrame({"value": [rows]})]
    nested = {k: v for k, v in rows.items() if isinstance(v, dict)}
    scalars = {k: v for k, v in rows.items() if not isinstance(v, dict)}
    tables = []
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for k, v in nested.items():  # one table per set of fields (timings apart from pass/fail flags)
        groups.setdefault(tuple(v), {})[k] = v
    for group in groups.values():
        tables.append(pd.DataFrame.from_dict(group, orient="index").rename_axis("measure").reset_index())
    if scalars:
        tables.append(pd.DataFrame({"measure": list(scalars), "value": list(scalars.values())}))
    return tables


def bench_markdown(results_dir: str | Path) -> str:
    """Markdown tables of the benchmark JSON files in ``results_dir`` ("" when there are none)."""
    parts = []
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            parts.append(f"## {path.stem}\n\n`{path.name}` is not readable JSON.\n")
            continue
        tables = "\n\n".join(_markdown_table(t.map(_fmt)) for t in _bench_tables(data))
        parts.append(f"## {path.stem}\n\nFrom `bench/results/{path.name}`.\n\n{tables}\n")
    return "\n".join(parts)


def run_benchmarks(
    commands: list[str], root: str | Path, runs_dir: str | Path, force: bool = False
) -> list[dict]:
    """Run a plan's benchmark scripts (``bench/*.py ARGS``, from ``root``) for the performance page.

    Each writes its JSON into ``bench/results/``; its output goes to ``runs_dir/bench_<n>.log``.
    A benchmark that finished with the same command line is skipped unless ``force``; one that
    fails is reported (status "failed", the log's last line) and the others still run.
    Returns one record per command: command, status, wall_s, log.
    """
    root, runs_dir = Path(root), Path(runs_dir)
    records = []
    for n, command in enumerate(commands, 1):
        log, done = runs_dir / f"bench_{n}.log", runs_dir / f"bench_{n}.done"
        rec = {"command": command, "log": str(log), "wall_s": 0.0}
        if not force and done.is_file() and done.read_text().strip() == command:
            records.append({**rec, "status": "skipped"})
            continue
        done.unlink(missing_ok=True)
        start = time.time()
        with open(log, "w") as out:
            proc = subprocess.run(
                [sys.executable, *shlex.split(command)],
                cwd=root,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        rec["wall_s"] = round(time.time() - start, 1)
        if proc.returncode == 0:
            done.write_text(command + "\n")
            records.append({**rec, "status": "done"})
        else:
            lines = log.read_text().strip().splitlines()
            records.append(
                {**rec, "status": "failed", "error": lines[-1] if lines else f"exit {proc.returncode}"}
            )
    return records
