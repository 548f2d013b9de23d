"""The benchmarks of the performance page: running a plan's ``bench/*.py`` scripts, the one
schema their results are written in (``bench/results/*.json``), and the page's tables.

A result holds the benchmark's readable name, the device it ran on, the setting (sizes, batch,
threads, steps) and a list of measures. Each :class:`Measure` says what steelnb measured, against
which baseline, which direction is better, and its target; the ratio (a factor > 1 when ours is
better) and the verdict are computed from those, never typed by a script.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from ..data.fileio import write_json

SCHEMA = 1


@dataclass(frozen=True)
class Measure:
    """One measured quantity of a benchmark, beside its baseline and its target.

    ``ours`` is None when it was not measured on this run (say why in ``reason``). ``baseline_is``
    names the baseline ("Kaggle-kernel RLE decoder", "TTA none") or says why there is none.
    ``target`` is a threshold on the ratio (``target_on="ratio"``: ">= 4x") or on the value itself
    (``target_on="value"``: ">= 100 samples/s", or "<= 15,000 MB" when lower is better). A
    ``reason`` (e.g. "GPU target, measured on CPU") makes the verdict n/a.
    """

    name: str
    unit: str
    ours: float | None
    baseline: float | None = None
    baseline_is: str = ""
    better: str = "higher"  # "higher" or "lower"
    target: float | None = None
    target_on: str = "ratio"  # "ratio" or "value"
    reason: str = ""

    def __post_init__(self) -> None:
        if self.better not in ("higher", "lower"):
            raise ValueError(f"{self.name}: better must be 'higher' or 'lower', not {self.better!r}")
        if self.target_on not in ("ratio", "value"):
            raise ValueError(f"{self.name}: target_on must be 'ratio' or 'value', not {self.target_on!r}")

    @property
    def ratio(self) -> float | None:
        """How many times better ours is than the baseline (> 1: ours is better); None without
        both values."""
        ours, base = self.ours, self.baseline
        if ours is None or base is None or not (math.isfinite(ours) and math.isfinite(base)):
            return None
        if ours <= 0 or base <= 0:
            return None
        return ours / base if self.better == "higher" else base / ours

    @property
    def target_text(self) -> str | None:
        """The target as a reader writes it: ">= 4x", ">= 100 samples/s", "<= 15,000 MB"."""
        if self.target is None:
            return None
        if self.target_on == "ratio":
            return f">= {self.target:g}x"
        op = ">=" if self.better == "higher" else "<="
        return f"{op} {format_quantity(self.target, self.unit)}"

    @property
    def met(self) -> bool | None:
        """Whether the target was met; None without a target, a value, or where it does not apply
        (``reason``)."""
        if self.target is None or self.reason or self.ours is None:
            return None
        value = self.ratio if self.target_on == "ratio" else self.ours
        if value is None:
            return None
        if self.target_on == "value" and self.better == "lower":
            return value <= self.target
        return value >= self.target  # a ratio is > 1 when ours is better, whichever the direction

    @property
    def verdict(self) -> str:
        """The target's verdict: met, missed, "n/a (<reason>)"; "" without a target or a reason."""
        if self.reason:
            return f"n/a ({self.reason})"
        if self.target is None:
            return ""
        met = self.met
        return "n/a" if met is None else ("met" if met else "missed")

    def to_dict(self) -> dict[str, Any]:
        """The fields, plus the computed ratio, target text, met and verdict (for readers of the JSON)."""
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("ours", "baseline"):  # JSON holds no infinity (an out-of-memory peak)
            if isinstance(d[key], float) and not math.isfinite(d[key]):
                d[key] = str(d[key])
        return {
            **d,
            "ratio": self.ratio,
            "target_text": self.target_text,
            "met": self.met,
            "verdict": self.verdict,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measure:
        """A measure from :meth:`to_dict`'s output; the computed keys are computed again."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        for key in ("ours", "baseline", "target"):
            if kw.get(key) is not None:
                kw[key] = float(kw[key]) if not isinstance(kw[key], int) else kw[key]
        return cls(**kw)


def write_result(
    path: str | Path,
    *,
    benchmark: str,
    device: str,
    setting: dict[str, Any],
    measures: list[Measure],
    rows: list[dict[str, Any]] | None = None,
) -> Path:
    """Write one benchmark result atomically (the old file stays if anything fails); return the path.

    ``benchmark`` is the readable name (the page's heading), ``device`` the machine in words,
    ``setting`` what was measured how (sizes, batch, threads, steps), ``rows`` an optional detail
    grid (one dict a row). The date is recorded.
    """
    if not all(isinstance(m, Measure) for m in measures):
        raise TypeError("measures must be Measure objects")
    data = {
        "schema": SCHEMA,
        "benchmark": benchmark,
        "device": device,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "setting": dict(setting),
        "measures": [m.to_dict() for m in measures],
        "rows": list(rows or []),
    }
    return write_json(path, data)


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), for a result's device line."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


# -- rendering --------------------------------------------------------------------------------
def format_quantity(value: Any, unit: str = "") -> str:
    """A number with its unit at a sensible precision: "0.0455 ms", "3.05 images/s", "1,234 MB"."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        text = f"{value:,}"
    elif math.isnan(value):
        return "n/a"
    elif math.isinf(value):
        text = "∞" if value > 0 else "-∞"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    elif abs(value) >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}" if unit else text


def format_ratio(ratio: float | None) -> str:
    """A ratio as a factor: "0.54x", "1.6x", "4.7x", "12x"; "—" without one."""
    if ratio is None:
        return "—"
    if ratio >= 10:
        return f"{ratio:.0f}x"
    return f"{ratio:.1f}x" if ratio >= 1 else f"{ratio:.2f}x"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _setting_text(setting: dict[str, Any]) -> str:
    parts = []
    for key, value in setting.items():
        if isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value))
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        elif isinstance(value, (int, float)):
            value = format_quantity(value)
        parts.append(f"{str(key).replace('_', ' ')}: {value}")
    return "; ".join(parts)


def _baseline_cell(m: Measure) -> str:
    """The baseline's value and what it is, e.g. "0.215 ms (Kaggle-kernel RLE decoder)"."""
    if m.baseline is None:
        return m.baseline_is or "—"
    value = format_quantity(m.baseline, m.unit)
    return f"{value} ({m.baseline_is})" if m.baseline_is else value


def result_markdown(data: dict[str, Any], source: str) -> str:
    """The page's section for one result in the schema of :func:`write_result`."""
    measures = [Measure.from_dict(m) for m in data["measures"]]
    title = data.get("benchmark") or Path(source).stem
    line = [f"**Device:** {data.get('device') or 'not recorded'}"]
    if data.get("setting"):
        line.append(f"**Setting:** {_setting_text(data['setting'])}")
    if data.get("date"):
        line.append(f"**Measured:** {data['date']}")
    line.append(f"from `{source}`")
    table = _table(
        ["measure", "ours", "baseline", "ratio", "target", "verdict"],
        [
            [
                m.name,
                format_quantity(m.ours, m.unit),
                _baseline_cell(m),
                format_ratio(m.ratio),
                m.target_text or "—",
                m.verdict or "—",
            ]
            for m in measures
        ],
    )
    parts = [f"## {title}", " · ".join(line), table]
    rows = [r for r in data.get("rows") or [] if isinstance(r, dict)]
    if rows:
        columns = list(dict.fromkeys(k for r in rows for k in r))
        columns = [c for c in columns if any(r.get(c) is not None for r in rows)]  # drop all-n/a columns
        parts.append("**Detail: every setting measured**")
        parts.append(_table(columns, [[format_quantity(r.get(c)) for c in columns] for r in rows]))
    return "\n\n".join(parts) + "\n"


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
    """The performance page's sections for the benchmark JSON files in ``results_dir`` ("" when
    there are none): results in :func:`write_result`'s schema as measure/baseline/ratio/target
    tables; older files (no "measures") as generic tables; an unreadable file as a sentence."""
    parts = []
    for path in sorted(Path(results_dir).glob("*.json")):
        if path.name.startswith("."):  # a write in progress (fileio's temporary files)
            continue
        source = f"bench/results/{path.name}"
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            parts.append(f"## {path.stem}\n\n`{source}` is not readable JSON; run its benchmark again.\n")
            continue
        if isinstance(data, dict) and "measures" in data:
            try:
                parts.append(result_markdown(data, source))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                parts.append(
                    f"## {path.stem}\n\n`{source}` has measures this version cannot read "
                    f"({type(exc).__name__}: {exc}); run its benchmark again.\n"
                )
            continue
        tables = "\n\n".join(_markdown_table(t.map(_fmt)) for t in _bench_tables(data))
        parts.append(f"## {path.stem}\n\nFrom `{source}` (an older result format).\n\n{tables}\n")
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
