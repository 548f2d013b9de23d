"""What a wider classifier-gate grid costs in tuning, side by side with the narrower one.

Predicts a run's validation images once (its evaluation's TTA and tuning size), then times
``postprocess.tune_postprocess`` on those same probabilities with each gate grid in turn, the two
alternating ``--repeats`` times, and prints the median seconds of each and their ratio. It reads
the validation images only (``sampling.sealed`` refuses the test split). The run needs a
classification head (the smoke's gate run), else there is no gate to search.

    cd notebooks && python ../bench/bench_tuning.py ../weights/smoke-variants/tu-tf_efficientnet_lite0__dice_bce__gate

from notebooks/, where the plans ran the runs, so that their data paths hold.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

#: The gate thresholds searched before 2026-12-03 (calibrated classifiers only).
OLD_GRID = (0.3, 0.4, 0.5, 0.6, 0.7)


def _probabilities(run: Path, batch_size: int) -> tuple:
    """(probs, truth, class probs) of the run's validation images at its tuning size."""
    from steelnb.judge.ensemble import load_run
    from steelnb.judge.tuning import run_validation_arrays
    from steelnb.model.runfolder import RunFolder

    folder = RunFolder.of(run)
    arrays = run_validation_arrays(load_run(folder, "cpu"), folder, batch_size, "bench/bench_tuning.py")
    if arrays[2] is None:
        raise SystemExit(f"{run}: the model has no classification head, so there is no gate to tune")
    return arrays


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="an evaluated run folder with a classification head")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4)
    args = p.parse_args(argv)
    from steelnb.judge import postprocess as pp

    probs, truth, cps = _probabilities(args.run, args.batch_size)
    grids = {"old": OLD_GRID, "default": pp.CLS_THRESHOLDS}
    times: dict[str, list[float]] = {k: [] for k in grids}
    chosen = {}
    for _ in range(args.repeats):
        for name, grid in grids.items():
            start = time.perf_counter()
            chosen[name] = pp.tune_postprocess(probs, truth, class_probs=cps, cls_thresholds=grid)
            times[name].append(time.perf_counter() - start)
    for name, grid in grids.items():
        gates = [c.cls_threshold for c in chosen[name].classes]
        print(
            f"{name:8s} gate grid {grid}: {statistics.median(times[name]):.2f} s (median of {args.repeats}), "
            f"validation Kaggle {chosen[name].score:.4f}, gate thresholds chosen {gates}"
        )
    ratio = statistics.median(times["default"]) / statistics.median(times["old"])
    print(f"tuning time, default grid / old grid: {ratio:.2f}x on {len(probs)} validation images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
