"""How far post-processing could lift each run, on validation: tuned on the images it scores.

For every run folder under ``weights_dir`` (each evaluated by 03_train), post-processing is tuned
on its validation images, with the TTA and tuning size its evaluation used, and scored on those
same images (``evaluation.judge_on_validation``): no tuning can pass that number on those images,
so a run whose bound is close to predicting nothing there falls short in its model, not in its
tuning. It is printed beside the raw validation metric (threshold 0.5, the best epoch's) and what
predicting nothing scores on validation. A tool that informs choices, so it never reads the sealed
test split (``sampling.sealed`` refuses it; tests/test_sealed.py). Before 2026-12-02 this tool tuned on
the test images (bench/learning.md marks the rows it gave).

    cd notebooks && python ../bench/tuning_bound.py ../weights/smoke      (after steelnb run smoke)

from notebooks/, where the plans ran the runs, so that their data paths (``../data/synthetic``) hold.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights_dir", type=Path, help="folder of evaluated run folders")
    args = parser.parse_args(argv)
    from steelnb.batch import report
    from steelnb.judge import evaluation

    evaluated = [m for m in report.read_metrics(args.weights_dir) if "test" in m]
    if not evaluated:
        print(f"{args.weights_dir}: no run folder with an evaluation", file=sys.stderr)
        return 1
    print("run | validation all-empty | validation raw (0.5) | tuned on validation, scored there (bound)")
    for m in evaluated:
        run, done = m.path, m["test"]
        bound = evaluation.judge_on_validation(
            run, tta=done["tta"], tune_size=tuple(done["tune_size"]), who="bench/tuning_bound.py"
        )
        raw = (m.get("best") or {}).get("kaggle")
        print(
            f"{run.name} | {bound['all_empty_kaggle']:.3f} | "
            f"{'–' if raw is None else f'{raw:.3f}'} | {bound['kaggle']:.3f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
