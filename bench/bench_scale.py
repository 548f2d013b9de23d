"""The rehearsal's cost against the number of images: each stage's wall time and peak memory at
fractions of the Kaggle-size twin, and the fitted growth exponent of both.

For each fraction the script renders the twin (``steelnb synth --labels ... --fraction F``) into a
scratch copy of the project (notebooks, plans, book sources), runs ``steelnb run rehearsal`` there
(plans/rehearsal.yaml: plans/full.yaml with a CPU's encoders, size and steps) and follows it:
a sampler adds up the resident memory of the whole process tree (the runner, its workers and their
kernels) every 0.2 s, and each run's start and end come from book/runs/status.json, so a stage's
time is from its first run's start to its last run's end and its peak memory the tree's largest
sum within that time; "book" is what follows the last run. The exponent b of time ~ images^b is the
least-squares slope in log-log over the fractions (1: linear; well above 1 is a defect to find).

    OMP_NUM_THREADS=1 python bench/bench_scale.py --fractions 0.125 0.25 --out bench/results/bench_scale.json

Needs psutil (present wherever torch's stack is; the package does not depend on it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LABELS = REPO.parent / "shared" / "data" / "severstal-labels"


class TreeMemory(threading.Thread):
    """Samples the summed RSS (MB) of a process and all its descendants: [(time, MB)]."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        import psutil

        self.root, self.every, self.samples, self.stop = psutil.Process(pid), every, [], threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.samples.append((time.time(), total / 2**20))
            self.stop.wait(self.every)

    def peak(self, start: float, end: float) -> float:
        inside = [mb for t, mb in self.samples if start - 0.3 <= t <= end + 0.3]
        return max(inside, default=float("nan"))


def followed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, float, TreeMemory, int]:
    """Run ``cmd`` with its process tree's memory sampled: (start, end, peak MB, sampler, rc)."""
    start = time.time()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    mem = TreeMemory(proc.pid)
    mem.start()
    out, _ = proc.communicate()
    end = time.time()
    mem.stop.set()
    mem.join()
    if proc.returncode:
        print(out[-4000:], file=sys.stderr)
    return start, end, mem.peak(start, end), mem, proc.returncode


def scratch_project(root: Path) -> Path:
    """A copy of the notebooks, plans and book sources: the rehearsal writes only inside it."""
    for name in ("notebooks", "plans"):
        shutil.copytree(REPO / name, root / name)
    shutil.copytree(REPO / "book", root / "book", ignore=shutil.ignore_patterns("runs", "_build"))
    return root


def stage_rows(project: Path, mem: TreeMemory, end: float) -> list[dict]:
    """Per stage of the finished plan: (start, end, wall s, peak MB) from status.json and the sampler."""
    status = json.loads((project / "book" / "runs" / "status.json").read_text())
    spans: dict[str, list[float]] = {}
    failed = []
    for rec in status["runs"].values():
        stop = datetime.fromisoformat(rec["finished_at"]).timestamp()
        span = spans.setdefault(rec["stage"], [stop - rec["wall_s"], stop])
        span[0], span[1] = min(span[0], stop - rec["wall_s"]), max(span[1], stop)
        if rec["status"] != "done":
            failed.append(f"{rec['slug']}: {rec.get('error', '')}")
    rows = [{"stage": s, "wall_s": b - a, "peak_mb": mem.peak(a, b)} for s, (a, b) in spans.items()]
    last = max(b for _, b in spans.values())
    rows.append({"stage": "book", "wall_s": end - last, "peak_mb": mem.peak(last, end)})
    for f in failed:
        print("FAILED", f, file=sys.stderr)
    return rows


def one_fraction(fraction: float, labels: Path, work: Path) -> tuple[int, list[dict]]:
    """(train images of the twin, rows of stage, wall_s, peak_mb) at ``fraction``."""
    project = scratch_project(work / f"f{fraction:g}")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    steelnb = [sys.executable, "-m", "steelnb.cli"]
    synth = [*steelnb, "synth", "data/twin", "--labels", str(labels), "--fraction", str(fraction)]
    a, b, peak, _, rc = followed(synth, project, env)
    if rc:
        raise SystemExit(f"steelnb synth failed at fraction {fraction}")
    n_images = len(os.listdir(project / "data" / "twin" / "train_images"))
    rows = [{"stage": "twin", "wall_s": b - a, "peak_mb": peak}]
    _, end, _, mem, rc = followed([*steelnb, "run", "rehearsal"], project, env)
    rows += stage_rows(project, mem, end)
    print(f"fraction {fraction:g}: {n_images} train images, rc {rc}")
    for r in rows:
        print(f"  {r['stage']:<8} {r['wall_s']:8.1f} s {r['peak_mb']:8.0f} MB")
    return n_images, rows


def exponents(rows: list[dict], key: str) -> dict[str, float]:
    """Per stage, the log-log slope of ``key`` against the images (NaN with fewer than two sizes)."""
    out = {}
    for stage in dict.fromkeys(r["stage"] for r in rows):
        ok = [
            (r["images"], r[key]) for r in rows if r["stage"] == stage and r[key] > 0 and np.isfinite(r[key])
        ]
        out[stage] = (
            float(np.polyfit(*np.log(np.array(ok, float)).T, 1)[0])
            if len({n for n, _ in ok}) >= 2
            else float("nan")
        )
    return out


def earlier_rows(path: Path) -> list[dict]:
    """The rows of an earlier result of this script (``write_result``'s schema, or the raw form
    {"images": [...], "stages": [[{stage, wall_s, peak_mb}]]})."""
    data = json.loads(path.read_text())
    if "rows" in data:
        return list(data["rows"])
    return [{"images": n, **r} for n, table in zip(data["images"], data["stages"]) for r in table]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fractions", type=float, nargs="*", default=[0.125, 0.25])
    p.add_argument("--labels", type=Path, default=LABELS)
    p.add_argument(
        "--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed)"
    )
    p.add_argument(
        "--merge", type=Path, nargs="*", default=[], help="earlier results of this script to fit with"
    )
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "bench_scale.json")
    a = p.parse_args(argv)
    work = a.work or Path(tempfile.mkdtemp(prefix="bench_scale."))
    rows = [r for path in a.merge for r in earlier_rows(path)]
    try:
        for f in sorted(a.fractions):
            n, table = one_fraction(f, a.labels, work)
            rows += [{"images": n, **r} for r in table]
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    rows.sort(key=lambda r: r["images"])
    t_exp, m_exp = exponents(rows, "wall_s"), exponents(rows, "peak_mb")
    sizes = sorted({r["images"] for r in rows})
    print("stage    " + "".join(f"{n:>8} img: s, MB" for n in sizes) + "   time exp  mem exp")
    for stage in t_exp:
        cells = "".join(
            f"{r['wall_s']:>9.1f} {r['peak_mb']:>6.0f}"
            for n in sizes
            for r in rows
            if r["stage"] == stage and r["images"] == n
        )
        print(f"{stage:<9}{cells}   {t_exp[stage]:>8.2f}  {m_exp[stage]:>7.2f}")
    from steelnb.batch.benchmarks import Measure, cpu_name, write_result

    why = "fitted over fewer than two sizes" if len(sizes) < 2 else ""
    measures = [
        Measure(
            f"{stage}: growth exponent of {what} against train images ({', '.join(map(str, sizes))})",
            "",
            None if not np.isfinite(exp[stage]) else exp[stage],
            baseline_is="no baseline: 1 is linear",
            better="lower",
            target=1.2,
            target_on="value",
            reason=why,
        )
        for stage in t_exp
        for what, exp in (("wall time", t_exp), ("peak memory", m_exp))
    ]
    write_result(
        a.out,
        benchmark="Rehearsal of the full plan at fractions of the Kaggle-size twin (CPU)",
        device=f"CPU ({cpu_name()}), {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end",
        setting={
            "plan": "plans/rehearsal.yaml (plans/full.yaml: CPU encoders at 64x192 / 64x416, 1 epoch)",
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "train images": sizes,
            "memory": "peak summed RSS of the runner's process tree",
        },
        measures=measures,
        rows=[{k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
    )
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
