"""How far post-processing could lift each run: tuned on the test images themselves.

For every run folder under ``weights_dir`` (each evaluated by 03_train), post-processing is tuned
on its held-out test images, with the TTA and tuning size its evaluation used, and the score it
reaches there is printed beside the study's own (tuned on validation, scored on test) and what
predicting nothing scores. No tuning on validation can pass that bound, so a run whose bound is
close to predicting nothing falls short in its model, not in its tuning. A probe, not a result:
tuning on the test images is what the study never does.

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
    from steelnb import evaluation, report
    from steelnb.config import TrainConfig
    from steelnb.dataset import SteelDataModule

    evaluated = [m for m in report.read_metrics(args.weights_dir) if "test" in m]
    if not evaluated:
        print(f"{args.weights_dir}: no run folder with a test-split evaluation", file=sys.stderr)
        return 1
    print("run | all-empty | tuned on validation (test) | tuned on test (bound)")
    for m in evaluated:
        run, test = Path(m["_path"]), m["test"]
        cfg = TrainConfig.from_yaml(run / "config.yaml")
        dm = SteelDataModule(cfg)
        bound = evaluation.tune(
            run,
            images=dm.images_dir,
            labels=cfg.resolve(cfg.labels),
            image_ids=dm.test_ids,
            tta=test["tta"],
            size=tuple(test["tune_size"]),
            save=False,
            progress=False,
        )
        print(
            f"{run.name} | {test['all_empty_kaggle']:.3f} | {test['kaggle']:.3f} | {bound.score:.3f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
