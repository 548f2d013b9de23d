"""How well a plan's last run kept its workers busy, from its record (``book/runs/status.json``).

    python bench/packing.py [book/runs/status.json] [--workers 2]

Prints each run's start and end (its ``finished_at`` less its ``wall_s``), the notebooks' summed
time, their span (first start to last end) and the packing: the summed time over the workers
times the span. With stage barriers a stage of one notebook leaves the other workers idle; runs
that wait only for what they read (``after``) fill them. Benchmarks and the book come after the
notebooks and are outside the span.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta
from pathlib import Path


def spans(status: dict) -> list[tuple[str, datetime, datetime]]:
    """(slug, start, end) of each run with a recorded time, in start order."""
    out = []
    for slug, rec in status["runs"].items():
        if rec.get("finished_at") and rec.get("wall_s") is not None:
            end = datetime.fromisoformat(rec["finished_at"])
            out.append((slug, end - timedelta(seconds=rec["wall_s"]), end))
    return sorted(out, key=lambda row: row[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("status", nargs="?", default="book/runs/status.json", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    rows = spans(json.loads(args.status.read_text()))
    if not rows:
        raise SystemExit(f"{args.status}: no run with a recorded time")
    first = rows[0][1]
    for slug, start, end in rows:
        print(f"{(start - first).total_seconds():7.0f} s {(end - first).total_seconds():7.0f} s  {slug}")
    total = sum((end - start).total_seconds() for _, start, end in rows)
    span = (max(end for _, _, end in rows) - first).total_seconds()
    print(
        f"notebooks: {total:.0f} s summed, {span:.0f} s span ({span / 60:.1f} min) on {args.workers} workers"
    )
    print(f"packing: {total / (args.workers * span):.1%} (summed time over workers x span)")


if __name__ == "__main__":
    main()
