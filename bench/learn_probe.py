"""What a training setting buys on the embedded study: one run of the smoke plan's recipe with
some settings changed, trained on one CPU thread as the smoke plan's workers are, then judged on
its validation images only (``evaluation.judge_on_validation``: post-processing tuned there, as
03_train tunes it, and those images scored). A probe chooses settings, so it never reads the
sealed test split, which only reports (``sampling.sealed`` refuses it; tests/test_sealed.py).

    python bench/learn_probe.py                                  # the smoke recipe, EfficientNet-B3
    python bench/learn_probe.py encoder=resnet50 head_prior=0    # ... without the head prior
    python bench/learn_probe.py loss=tversky cls_weight=1 --tta none

Needs the smoke plan's data and split (``steelnb run smoke`` writes them; so does running
02_class_balance). Settings are TrainConfig fields as KEY=VALUE (JSON values: lists, numbers);
the rest come from ``plans/smoke.yaml``. Prints one line and appends it as JSON to
``bench/results/learning.jsonl``: training seconds, the validation Kaggle metric (post-processing
tuned on those images: optimistic, and what chooses the study's best run), its all-empty baseline,
the paired 95% interval of the gain, the defect Dice and each class's Dice over the validation
images that hold it (tuned, and raw at threshold 0.5) with its Kaggle score. One seed per line: a single run, not a
distribution; read differences smaller than the intervals as noise. Lines before 2026-12-02 have
no "split" key: they were judged on the test split (bench/learning.md marks them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


def judge(run: Path, tta: str, tune_size: tuple[int, int], batch_size: int) -> dict:
    """The probe's verdict on a trained run: its validation images only (never the test split)."""
    from steelnb.judge import evaluation

    return evaluation.judge_on_validation(
        run, tta=tta, tune_size=tune_size, batch_size=batch_size, device="cpu", who="bench/learn_probe.py"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("settings", nargs="*", help="KEY=VALUE TrainConfig fields (over the smoke plan's)")
    p.add_argument("--tta", default=None, help="evaluation TTA (default: the plan's eval_tta)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the smoke plan's workers use 1)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "learning.jsonl"))
    args = p.parse_args(argv)

    import torch
    import yaml

    torch.set_num_threads(args.threads)
    from steelnb.batch import report
    from steelnb.data.config import TrainConfig
    from steelnb.model import training

    plan = yaml.safe_load((ROOT / "plans" / "smoke.yaml").read_text())
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    notebooks = ROOT / "notebooks"
    kw = {k: v for k, v in plan["defaults"].items() if k in fields}
    kw.update(
        data_dir=str((notebooks / kw["data_dir"]).resolve()),
        encoder="efficientnet-b3",
        loss="dice_bce",
        device="cpu",
        out_dir=str(ROOT / "weights" / "probe"),
    )
    changed = {}
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            p.error(f"{item!r}: expected KEY=VALUE with KEY a TrainConfig field")
        try:
            changed[key] = json.loads(value)
        except json.JSONDecodeError:
            changed[key] = value
    kw.update(changed)
    if "run_name" not in changed:  # a folder name of its own for each probe (no path separators)
        name = "__".join(f"{k}-{v}" for k, v in changed.items()).replace(" ", "").replace("/", "_")
        kw["run_name"] = name or "smoke-settings"
    folds = Path(kw["data_dir"]) / kw.get("folds", "")
    if kw.get("folds") and not folds.is_file():
        p.error(f"{folds}: not found; run `steelnb run smoke` (or 02_class_balance) first")
    cfg = TrainConfig(**kw)
    tta = args.tta or plan["defaults"].get("eval_tta", "none")
    start = time.time()
    run = training.fit(cfg, progress_bar=False)
    train_s = time.time() - start
    val = judge(run, tta, (cfg.height, cfg.width), cfg.batch_size)
    metrics = report.read_metrics(run)[0]
    row = {
        "settings": changed,
        "encoder": cfg.encoder,
        "loss": cfg.loss,
        "tta": tta,
        "train_s": round(train_s, 1),
        "epochs": metrics["epochs_run"],
        "split": "validation",
        "val_images": val["images"],
        "kaggle": round(val["kaggle"], 4),
        "all_empty": round(val["all_empty_kaggle"], 4),
        "gain_ci95": [round(v, 4) for v in val["kaggle_gain_ci95"]],
        "gain_excludes_0": val["gain_real"],
        "defect_dice": None if val["defect_dice"] is None else round(val["defect_dice"], 4),
        "class_images": val["class_images"],
        "class_dice": [None if d is None else round(d, 4) for d in val["class_dice"]],
        "class_dice_raw": [None if d is None else round(d, 4) for d in val["class_dice_raw"]],
        "class_kaggle": [round(v, 4) for v in val["per_class_kaggle"]],
    }
    shown = " / ".join("-" if d is None else f"{d:.2f}" for d in row["class_dice"])
    print(
        f"{cfg.encoder} {cfg.loss} {changed or '(smoke recipe)'}: train {train_s:.0f} s, validation Kaggle "
        f"{row['kaggle']:.3f} (all-empty {row['all_empty']:.3f}), gain [{row['gain_ci95'][0]:+.3f}, "
        f"{row['gain_ci95'][1]:+.3f}] {'excludes 0' if row['gain_excludes_0'] else 'includes 0'} (one seed), "
        f"defect Dice {row['defect_dice']}, class Dice {shown} (images {row['class_images']})"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
