"""What a plan costs before it starts: its time on this device from measured parts.

``estimate_plan(plan)`` multiplies, for every training run of the plan, the images it will see
(its subset's training images x its maximum epochs, the validation images each epoch, then the
validation and test images of its evaluation with its TTA) by the images/s the benchmarks
measured on this kind of device (``bench/results/bench_train_<cpu|cuda>.json`` per encoder and
size, ``bench_infer_<cpu|cuda>.json`` per TTA), and says "unmeasured on this device" where no
benchmark ran. The counts come from the plan's data folder when it holds ``train.csv``; for a
plan whose synthetic set is not generated yet, from the labels its ``data.synthetic`` block will
draw (``synthetic.drawn_table``, no pixel drawn); else from the real label table beside the
checkout (``../shared/data/severstal-labels``), else from the counts 02_class_balance gives on it
(``KAGGLE_SPLIT``); split the way 02 splits (a set's sealed images are its test split).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["KAGGLE_SPLIT", "split_counts", "measured_rates", "estimate_runs", "estimate_text"]

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
LABELS = REPO.parent / "shared" / "data" / "severstal-labels"
#: 02_class_balance's split of the real label table (defect_types.csv, seed 0, per_class 250, 5
#: folds, test share 0.2): training images of each subset in the training folds of fold 0, and
#: the validation and test images (every run's).
KAGGLE_SPLIT = {"study": 1020, "balanced": 620, "val": 427, "test": 533}
TTA_PASSES = {"none": 1, "h": 2, "hv": 4}
_TRAIN = re.compile(r"^(?P<encoder>[\w.-]+): training images/s at (?P<size>\d+x\d+)")
_INFER = re.compile(r"^predict_tensor on uint8 tensors: images/s, TTA (?P<tta>\w+)")


def _defect_types(path: Path) -> pd.DataFrame:
    """The image table (ImageId, classes) and tidy rows of a ``defect_types.csv``."""
    dt = pd.read_csv(path).rename(columns={"ImageId_ClassId": "ImageId"})
    has = dt[["1", "2", "3", "4"]].to_numpy() > 0
    return pd.DataFrame(
        {"ImageId": dt["ImageId"], "classes": [" ".join(str(c + 1) for c in range(4) if h[c]) for h in has]}
    )


def split_counts(
    table: pd.DataFrame, per_class: int = 250, seed: int = 0, sealed: Sequence[str] | None = None
) -> dict[str, int]:
    """02_class_balance's split of an image table (ImageId, classes): {"study", "balanced": training
    images of that subset in fold 0's training folds, "val", "test": images}. ``sealed``: a
    generated set's sealed images, which 02 makes the test split."""
    from ..data import sampling

    rows = [(i, int(c), "1 1") for i, s in zip(table["ImageId"], table["classes"]) for c in str(s).split()]
    tidy = pd.DataFrame(rows, columns=["ImageId", "ClassId", "EncodedPixels"])
    balanced = set(sampling.balanced_subset(tidy, per_class=per_class, seed=seed)["ImageId"])
    study = set(sampling.study_subset(table, per_class=per_class, seed=seed)["ImageId"])
    chosen = sampling.fold_images(table, [balanced, study], seed=seed)
    if sealed:
        folds = sampling.sealed_folds(chosen, list(sealed), n_folds=5, seed=seed)
    else:
        folds = sampling.assign_folds(chosen, 5, seed, test_share=0.2, min_test=256)
    parts = sampling.split_ids(folds, 0)
    train = set(parts["train"])
    return {
        "study": len(train & study),
        "balanced": len(train & balanced),
        "val": len(parts["val"]),
        "test": len(parts["test"]),
    }


def _counts(data_dir: Path | None, synthetic: Mapping[str, Any] | None = None) -> tuple[dict[str, int], str]:
    """(split counts, where they come from). ``synthetic``: the plan's ``data.synthetic`` block."""
    if data_dir is not None and (data_dir / "train.csv").is_file() and (data_dir / "train_images").is_dir():
        from ..data.labels import image_table, read_labels
        from ..data.synthetic import sealed_ids

        table = image_table(read_labels(data_dir / "train.csv"), data_dir / "train_images", count_parts=False)
        return split_counts(table, sealed=sealed_ids(data_dir)), f"02's split of {data_dir}"
    if synthetic is not None:
        from ..data.synthetic import drawn_table, plan_set

        syn = plan_set(synthetic)
        table, sealed = drawn_table(**syn)
        return split_counts(table, sealed=sealed), (
            f"02's split of the plan's synthetic set, not generated yet ({syn['n_images']} images, "
            f"{syn['sealed']} sealed: the labels it will draw)"
        )
    if (LABELS / "defect_types.csv").is_file():
        return split_counts(
            _defect_types(LABELS / "defect_types.csv")
        ), f"02's split of {LABELS / 'defect_types.csv'}"
    return dict(KAGGLE_SPLIT), "02's split of the real defect_types.csv (stored counts)"


def measured_rates(
    results_dir: str | Path, kind: str
) -> tuple[dict[tuple[str, str], float], dict[str, float]]:
    """({(encoder, "HxW"): training images/s}, {tta: inference images/s at 256x1600}) measured by
    bench_train.py and bench_infer.py on a device of ``kind`` ("cpu" or "cuda"); empty where none ran."""
    train: dict[tuple[str, str], float] = {}
    infer: dict[str, float] = {}
    d = Path(results_dir)
    for name, pattern, into in (("bench_train", _TRAIN, train), ("bench_infer", _INFER, infer)):
        path = d / f"{name}_{kind}.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        for m in data.get("measures", []):
            hit = pattern.match(str(m.get("name", "")))
            if hit and isinstance(m.get("ours"), (int, float)) and m["ours"] > 0:
                key = (hit["encoder"], hit["size"]) if "encoder" in hit.groupdict() else hit["tta"]
                into[key] = float(m["ours"])  # type: ignore[index]
        for row in data.get("rows", []):  # CUDA: the full sheet at the largest batch that fits
            if name == "bench_train" and row.get("full images/s"):
                train.setdefault((str(row["encoder"]), "256x1600"), float(row["full images/s"]))
    return train, infer


def _train_rate(rates: Mapping[tuple[str, str], float], encoder: str, size: str) -> tuple[float | None, str]:
    if (encoder, size) in rates:
        return rates[(encoder, size)], "measured"
    same = [(s, v) for (e, s), v in rates.items() if e == encoder]
    if not same:
        return None, "unmeasured on this device"
    s, v = same[0]
    h, w = (int(x) for x in s.split("x"))
    H, W = (int(x) for x in size.split("x"))
    return v * h * w / (H * W), f"scaled by pixels from {s}"


def estimate_runs(
    runs: Sequence[Mapping[str, Any]], counts: Mapping[str, int], results_dir: str | Path, kind: str
) -> pd.DataFrame:
    """One row per training run of ``runs`` (``pipeline.effective_runs``): the images it sees and the
    hours that takes at the measured rates (NaN where unmeasured)."""
    train_rates, infer_rates = measured_rates(results_dir, kind)
    rows = []
    for r in runs:
        if r["notebook"] != "03_train":
            continue
        p = r["parameters"]
        size = f"{p['height']}x{p['width']}"
        subset = "balanced" if "balanced" in str(p.get("subset")) else "study"
        n_train = counts[subset] if not p.get("max_images") else min(counts[subset], int(p["max_images"]))
        epochs, tta = int(p["epochs"]), str(p.get("eval_tta", "none"))
        rate, source = _train_rate(train_rates, str(p["encoder"]), size)
        plain, tta_rate = infer_rates.get("none"), infer_rates.get(tta)
        if tta_rate is None and plain is not None:
            tta_rate = plain / TTA_PASSES.get(tta, 1)
        n_eval = counts["val"] + counts["test"]
        train_s = epochs * n_train / rate if rate else float("nan")
        eval_s = (epochs * counts["val"] / plain + n_eval / tta_rate) if plain and tta_rate else float("nan")
        rows.append(
            {
                "run": r["slug"],
                "encoder": p["encoder"],
                "size": size,
                "train images x epochs": f"{n_train} x {epochs}",
                "train images/s": rate,
                "train rate": source,
                "evaluated images": f"{counts['val']} x {epochs} + {n_eval} (TTA {tta})",
                "infer images/s": plain,
                "hours": (train_s + eval_s) / 3600,
            }
        )
    return pd.DataFrame(rows)


def estimate_text(
    runs: Sequence[Mapping[str, Any]],
    data_dir: Path | None,
    kind: str | None = None,
    results_dir: str | Path = RESULTS,
    synthetic: Mapping[str, Any] | None = None,
) -> str:
    """The dry run's estimate: per training run, the counts, the measured rates and the hours, and
    the total on one device (runs one after another; with K devices side by side about 1/K of it).
    ``synthetic``: the plan's ``data.synthetic`` block, whose labels count while its set is missing."""
    if kind is None:
        import torch

        kind = "cuda" if torch.cuda.is_available() else "cpu"
    counts, source = _counts(data_dir, synthetic)
    table = estimate_runs(runs, counts, results_dir, kind)
    if table.empty:
        return ""
    lines = [
        "",
        f"estimated time on this device ({kind}), at most (every epoch run; early stopping ends most sooner):",
        f"  counts: {source}: train {counts['study']} (study) / {counts['balanced']} (reference subset), "
        f"validation {counts['val']}, test {counts['test']} images",
        f"  rates: {Path(results_dir)}/bench_train_{kind}.json, bench_infer_{kind}.json",
    ]
    for row in table.to_dict("records"):
        hours = row["hours"]
        rate = (
            f"at {row['train images/s']:.1f} images/s ({row['train rate']})"
            if row["train images/s"]
            else f"({row['train rate']})"
        )
        infer = (
            f"at {row['infer images/s']:.1f} images/s"
            if row["infer images/s"]
            else "(unmeasured on this device)"
        )
        when = f"{hours:.1f} h" if hours == hours else "unmeasured on this device"
        lines.append(
            f"  {row['run']}: train {row['train images x epochs']} {rate}; "
            f"evaluate {row['evaluated images']} {infer}: {when}"
        )
    total = table["hours"].sum(min_count=len(table))
    lines.append(
        f"  total: {total:.1f} h on one device, one run after another"
        if total == total
        else "  total: unmeasured on this device (run bench/bench_train.py and bench/bench_infer.py here first)"
    )
    return "\n".join(lines)
