"""What post-processing and TTA gain on a small trained model: the evaluation table, end to end.

Trains a small UNet on a synthetic set (CPU, a few minutes), tunes post-processing on its
validation fold, then evaluates on a second synthetic set generated here with another seed (images
used neither to train nor to tune, and not the study's sealed test split, which it never reads;
it chooses no setting, only reports): Dice, IoU and the Kaggle metric per class, raw and
post-processed, without and with TTA, beside the all-empty prediction's score.

    python bench/eval_synthetic.py                       # resnet18, 64x320, 96 images, 10 epochs
    python bench/eval_synthetic.py --encoder efficientnet-b4 --height 256 --width 768 --device cuda
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--images", type=int, default=96, help="synthetic train images")
    p.add_argument("--eval-images", type=int, default=32, help="held-out synthetic images (another seed)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--tta", default="hv")
    p.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    a = p.parse_args(argv)

    import pandas as pd

    from steelnb.data.config import TrainConfig
    from steelnb.data.labels import read_labels
    from steelnb.data.synthetic import generate
    from steelnb.judge import evaluation, predict_run
    from steelnb.model.runfolder import RunFolder
    from steelnb.model.training import fit

    work = a.work or Path(tempfile.mkdtemp(prefix="steelnb-eval-"))
    train_dir = generate(work / "train", n_images=a.images, seed=0)
    eval_dir = generate(work / "eval", n_images=a.eval_images, n_test=0, seed=1)
    cfg = TrainConfig(
        data_dir=str(train_dir),
        subset="all",
        encoder=a.encoder,
        height=a.height,
        width=a.width,
        epochs=a.epochs,
        batch_size=a.batch_size,
        early_stopping_patience=0,
        device=a.device,
        out_dir=str(work / "weights"),
        run_name="eval",
    )
    start = time.time()
    run = RunFolder(fit(cfg, progress_bar=False))
    metrics = run.metrics()
    print(
        f"trained {a.encoder} {a.height}x{a.width}, {a.epochs} epochs in {time.time() - start:.0f} s; "
        f"validation Kaggle metric per epoch: {[round(h['val_kaggle'], 3) for h in metrics['history']]}"
    )
    model = evaluation.load_run(run, a.device)  # loaded once: tuned, then predicting the held-out images
    params = evaluation.tune(model, device=a.device, progress=False)  # the run's validation fold
    print(
        "tuned per class (threshold, min_area, min_top_prob, min_total_area): "
        + "; ".join(
            f"{c.threshold}, {c.min_area}, {c.min_top_prob}, {c.min_total_area}" for c in params.classes
        )
    )
    result = predict_run.run_predict(
        model,
        eval_dir / "train_images",
        work / "eval_out",
        labels=eval_dir / "train.csv",
        tta=a.tta,
        device=a.device,
        progress=False,
    )
    table = pd.read_csv(result["evaluation"])
    mean = table[table["class"] == "mean"].drop(columns="class").set_index(["tta", "postprocess"])
    print(f"\nheld-out synthetic images ({a.eval_images}, seed 1), mean over the 4 classes:")
    print(mean.round(3).to_string())
    pairs = 4 * a.eval_images  # every (image, class) pair; a labelled mask makes one non-empty
    empty_pairs = pairs - len(read_labels(eval_dir / "train.csv"))
    print(f"all-empty prediction: Kaggle metric {empty_pairs / pairs:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
