"""Are two runs of a plan the same study? Compares two project folders after ``steelnb run smoke``
(or any plan): every file under ``weights/`` (JSON with its timing and provenance fields masked,
the rest byte for byte), every executed notebook's outputs under ``book/runs/`` (times, rates,
temporary paths and pandas' random table ids masked) and ``book/runs/status.json`` run by run
(its stage, times and notebook hash masked). A refactoring that claims "same numbers" runs the
plan before and after it on one machine and shows this script's verdict.

    python bench/same_smoke.py BEFORE AFTER      # two checkouts where the plan ran; exit 1 on a difference
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

#: keys whose values are the machine's or the moment's, not the study's
MASKED = {"wall_time_s", "git", "provenance", "versions", "created", "started", "finished", "host", "code"}
STATUS_MASKED = {"stage", "wall_s", "finished_at", "run_hash"}
#: a rate or a duration in a page (images/s of 08's steps, seconds of a run): measured, not computed
TIMED = re.compile(r"\d+(\.\d+)? ?(s|ms|seconds|min|images/s|it/s)\b")


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items() if k not in MASKED and not k.endswith(("_s", "_at"))}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    if isinstance(x, str):
        return re.sub(r"/tmp/[\w.-]+", "<tmp>", x)
    return x


def _texts(page: Path) -> list[str]:
    out = []
    for cell in json.loads(page.read_text())["cells"]:
        for o in cell.get("outputs", []):
            d = o.get("data", {})
            t = "".join(
                d.get("text/html") or d.get("text/markdown") or d.get("text/plain") or o.get("text") or ""
            )
            t = re.sub(r"T_[0-9a-f]{5}", "T_id", re.sub(r"/tmp/[\w.-]+", "<tmp>", t))
            out.append(TIMED.sub("<timed>", _timed_columns(t)))
    return out


def _timed_columns(html: str) -> str:
    """A rendered table's cells under a measured column (header "images/s") blanked."""
    heads = re.findall(r'<th [^>]*class="col_heading level0 col(\d+)"[^>]*>([^<]*)</th>', html)
    for k, name in heads:
        if "images/s" in name:
            html = re.sub(rf'(class="data row\d+ col{k}" >)[^<]*', r"\1<timed>", html)
    return html


def _csv_cells(path: Path) -> list[list[str]]:
    """A CSV's cells, a measured column (a rate: its header names images/s) blanked."""
    import csv

    rows = list(csv.reader(path.read_text().splitlines()))
    timed = {j for j, name in enumerate(rows[0] if rows else []) if "images/s" in name or name.endswith("_s")}
    return [["<timed>" if j in timed else c for j, c in enumerate(row)] for row in rows]


def compare(before: Path, after: Path) -> list[str]:
    """The differences between two project folders, one line each ([] when the same study)."""
    found = []
    old = {p.relative_to(before / "weights"): p for p in (before / "weights").rglob("*") if p.is_file()}
    new = {p.relative_to(after / "weights"): p for p in (after / "weights").rglob("*") if p.is_file()}
    for rel in sorted(set(old) | set(new)):
        if rel.suffix in (".ckpt", ".png", ".onnx", ".lock") or "logs" in rel.parts:
            continue  # a checkpoint holds its save time, logs their clock; pictures are drawn from the numbers compared here
        if rel not in old or rel not in new:
            found.append(f"weights/{rel}: only in {'after' if rel in new else 'before'}")
        elif rel.suffix == ".json":
            if _clean(json.loads(old[rel].read_text())) != _clean(json.loads(new[rel].read_text())):
                found.append(f"weights/{rel}: differs")
        elif rel.suffix == ".csv":
            if _csv_cells(old[rel]) != _csv_cells(new[rel]):
                found.append(f"weights/{rel}: differs")
        elif old[rel].read_bytes() != new[rel].read_bytes():
            found.append(f"weights/{rel}: differs")
    for page in sorted((before / "book" / "runs").glob("*.ipynb")):
        other = after / "book" / "runs" / page.name
        if not other.is_file():
            found.append(f"book/runs/{page.name}: only before")
        elif _texts(page) != _texts(other):
            found.append(f"book/runs/{page.name}: its outputs differ")
    sa, sb = (json.loads((p / "book" / "runs" / "status.json").read_text()) for p in (before, after))
    ra, rb = sa["runs"], sb["runs"]
    if set(ra) != set(rb):
        found.append(f"status.json: other runs ({sorted(set(ra) ^ set(rb))})")
    for slug in sorted(set(ra) & set(rb)):
        a, b = ({k: v for k, v in r[slug].items() if k not in STATUS_MASKED} for r in (ra, rb))
        if _clean(a) != _clean(b):
            found.append(f"status.json: run {slug} differs")
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    a = ap.parse_args(argv)
    found = compare(a.before, a.after)
    print("\n".join(found) if found else "the same study: every number, page and run record equal")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
