"""A trained run judged on its held-out test split, with 95% bootstrap intervals.

``evaluate_run(run_dir)`` loads the run's model once, tunes post-processing on the run's
validation images (with the same TTA it is then applied with), predicts the test images once,
and writes into the run folder (``runfolder.RunFolder``)

- ``test_scores.csv``: one row per (test image, class) with tp / fp / fn pixels, raw (threshold
  0.5) and post-processed (``scoring.score_images``), so that any two runs can be compared image
  by image later;
- ``postprocess.yaml``: the tuned parameters (``tuning``), where ``predict_run.run_predict``
  finds them;
- the ``test`` block of ``metrics.json`` (``summaries.summarize``): the Kaggle metric with its
  interval, what predicting nothing scores on the same images, the paired interval of the gain
  over it, Dice, IoU and defect Dice, each with an interval; ``test_raw``, the same at threshold
  0.5; and for a run with a classification head the ``gate`` block (``summaries.gate_summary``).

``evaluate_ensemble(run_dirs, out)`` does the same, through the same tune -> score -> write
path, for an ensemble of runs that share their data, validation and test images
(``ensemble.Ensemble``), into a folder of its own that the comparison code reads like a run's
(``members.json`` naming the run folders beside it). ``compare_variants`` sets TTAs side by
side on the test split; ``judge_on_validation`` scores validation only, for probes.

Validation selects (epoch, schedule, post-processing); the test split only reports. Each
function takes an already loaded ``model`` (an ``Ensemble``) too, so that a notebook that
evaluates, shows and predicts with one run loads it once.

Imports: this module orchestrates ``scoring``, ``tuning`` and ``summaries`` (which it
re-exports, so ``steelnb.judge.evaluation`` keeps every name it had); the prediction run
(``predict_run``) uses it for its tables, never the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..data.config import TrainConfig
from ..data.fileio import write_csv
from ..data.sampling import sealed
from ..model import metrics
from ..model.runfolder import RunFolder, Splits
from . import postprocess as pp
from . import stats
from .ensemble import Ensemble, load_ensemble, load_run, write_members
from .inference import check_classes
from .scoring import (
    COUNT_COLUMNS,
    GATE_COLUMNS,
    SCORES_FILE,
    EvaluationError,
    counts_of,
    read_scores,
    score_images,
)
from .summaries import (
    EVALUATION_COLUMNS,
    class_dice,
    evaluation_table,
    gate_summary,
    presence_table,
    summarize,
    test_blocks,
    worst_images,
    write_evaluation,
)
from .tuning import tune, tune_on

__all__ = [
    "COUNT_COLUMNS",
    "EVALUATION_COLUMNS",
    "GATE_COLUMNS",
    "SCORES_FILE",
    "EvaluationError",
    "RunData",
    "compare_variants",
    "counts_of",
    "evaluate_ensemble",
    "evaluate_run",
    "evaluation_table",
    "gate_summary",
    "judge_on_validation",
    "presence_table",
    "read_scores",
    "score_images",
    "summarize",
    "tune",
    "worst_images",
    "write_evaluation",
]


@dataclass(frozen=True)
class RunData:
    """What judging a run reads besides its model: the config its checkpoint carries and the
    splits it was trained on (``RunFolder.splits``)."""

    config: TrainConfig
    splits: Splits

    @property
    def images_dir(self) -> Path:
        return self.config.resolve(self.config.images)

    @property
    def labels_csv(self) -> Path:
        return self.config.resolve(self.config.labels)

    @property
    def val_ids(self) -> list[str]:
        return list(self.splits.validation)

    @property
    def test_ids(self) -> list[str]:
        return list(self.splits.test)


def _run_data(run: RunFolder, info: Any) -> RunData:
    """A loaded member's ``RunData``; errors when its checkpoint has no config or the run no test split."""
    if info.config is None:
        raise EvaluationError(
            f"{info.path}: the checkpoint carries no training config; cannot find its splits"
        )
    splits = run.splits(info.config)
    if not splits.test:
        raise EvaluationError(
            f"{run.path}: the run has no test split (folds without fold -1, or test_share=0)"
        )
    return RunData(info.config, splits)


def _loaded(run_dir: str | Path, device: str, model: Ensemble | None) -> tuple[RunFolder, Ensemble, RunData]:
    """(the run folder, its model, loaded once unless ``model`` is given, and its ``RunData``)."""
    run = RunFolder.of(run_dir)
    ens = model if model is not None else load_run(run, device)
    check_classes(ens.infos[0], None)
    return run, ens, _run_data(run, ens.infos[0])


def _tuned_scores(
    ens: Ensemble,
    data: RunData,
    tta: str,
    tune_size: tuple[int, int],
    batch_size: int,
    device: str,
    progress: bool,
    score_ids: Sequence[str] | None = None,
) -> tuple[pp.PostParams, pd.DataFrame]:
    """Post-processing tuned on the validation images (saving nothing), then ``score_ids``
    (default: the test images) scored with it: (parameters, scores)."""
    params = tune_on(
        ens,
        data.images_dir,
        data.labels_csv,
        data.val_ids,
        tta,
        tune_size,
        batch_size,
        device,
        None,
        progress,
        {},
    )
    ids = data.test_ids if score_ids is None else score_ids
    scores = score_images(
        ens, data.images_dir, data.labels_csv, ids, params, tta, batch_size, device, progress
    )
    return params, scores


def _judge(
    ens: Ensemble,
    data: RunData,
    out: RunFolder,
    tta: str,
    tune_size: tuple[int, int],
    batch_size: int,
    device: str,
    n_boot: int,
    progress: bool,
) -> tuple[pp.PostParams, dict[str, Any], dict[str, Any]]:
    """Tune -> score -> write, for a run or an ensemble: ``postprocess.yaml`` and
    ``test_scores.csv`` into ``out``; returns (parameters, test block, raw test block)."""
    params, scores = _tuned_scores(ens, data, tta, tune_size, batch_size, device, progress)
    params.to_yaml(out.postprocess_file)
    out.write_scores(scores)
    block, raw = test_blocks(scores, params, len(data.val_ids), tta, tune_size, n_boot, data.config.seed)
    return params, block, raw


def evaluate_run(
    run_dir: str | Path,
    tta: str = "none",
    tune_size: tuple[int, int] = (128, 800),
    batch_size: int = 8,
    device: str = "auto",
    n_boot: int = 2000,
    progress: bool = False,
    model: Ensemble | None = None,
) -> dict[str, Any]:
    """Tune post-processing on validation, score the test split, write the test block.

    Writes ``postprocess.yaml``, ``test_scores.csv`` and ``metrics.json["test"]`` (and
    ``["test_raw"]``, the same at threshold 0.5 without post-processing) in ``run_dir``;
    returns the test block (with ``gate`` for a run with a classification head). ``model``:
    the run's model already loaded (``load_run``), else it is loaded here, once.
    """
    run = RunFolder.of(run_dir)
    if not run.has_metrics():
        raise EvaluationError(f"{run.metrics_file}: not found; train the run first")
    _, ens, data = _loaded(run.path, device, model)
    params, block, raw = _judge(ens, data, run, tta, tune_size, batch_size, device, n_boot, progress)
    run.update_metrics(test=block, test_raw=raw, postprocess=params.to_dict())
    return block


def judge_on_validation(
    run_dir: str | Path,
    tta: str = "none",
    tune_size: tuple[int, int] = (128, 800),
    batch_size: int = 8,
    device: str = "auto",
    n_boot: int = 2000,
    who: str = "a probe",
    model: Ensemble | None = None,
) -> dict[str, Any]:
    """How a run does on its validation images only, for probes and bench tools (which must never
    read the sealed test split: ``sampling.sealed`` checks the ids): post-processing tuned on the
    validation images as ``evaluate_run`` tunes it, then those images scored with it.

    Tuned and scored on the same images, the number is optimistic (an upper bound of what tuning
    reaches there), and it is what chooses the best run (``val_tuned_kaggle``), so a probe and the
    study's choice read alike. Returns ``summarize``'s block of the validation images (interval,
    all-empty baseline, paired gain) with split "validation"; writes nothing.
    """
    _, ens, data = _loaded(run_dir, device, model)
    ids = sealed(data.val_ids, data.test_ids, who)
    # tuned as evaluate_run tunes (on the validation images, not saved), then those images scored
    params, scores = _tuned_scores(ens, data, tta, tune_size, batch_size, device, False, ids)
    counts = counts_of(scores, image_ids=sorted(ids))
    block = summarize(counts, n_boot=n_boot, seed=data.config.seed)
    block.update(class_dice(counts))
    block["class_dice_raw"] = class_dice(counts_of(scores, image_ids=sorted(ids), raw=True))["class_dice"]
    block.update(
        split="validation",
        tta=tta,
        postprocess="tuned on these validation images (optimistic)",
        val_tuned_kaggle=params.score,
        tune_size=list(tune_size),
    )
    return block


def _shared_splits(run_dirs: Sequence[Path], datas: Sequence[RunData]) -> None:
    """Raise ``EvaluationError`` naming two runs that do not share data, validation or test images."""

    def what(d: RunData) -> dict[str, Any]:
        return {
            "data (images folder and label file)": (
                Path(d.images_dir).resolve(),
                Path(d.labels_csv).resolve(),
            ),
            "validation images": sorted(d.val_ids),
            "test images": sorted(d.test_ids),
        }

    ref = what(datas[0])
    for run, d in zip(run_dirs[1:], datas[1:]):
        for name, value in what(d).items():
            if value != ref[name]:
                sizes = f" ({len(ref[name])} and {len(value)})" if isinstance(value, list) else ""
                raise EvaluationError(
                    f"{run_dirs[0]} and {run}: the members do not share the {name}{sizes}; an ensemble is "
                    "tuned on one validation split and scored on one test split (members of other "
                    "folds can still predict together: steelnb predict --weights RUN RUN ...)"
                )


def evaluate_ensemble(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    tta: str = "none",
    tune_size: tuple[int, int] = (128, 800),
    batch_size: int = 8,
    device: str = "auto",
    n_boot: int = 2000,
    progress: bool = False,
) -> dict[str, Any]:
    """``evaluate_run`` for an ensemble of runs: post-processing tuned on the ensemble's validation
    probabilities (each member at its own size with ``tta``, averaged; the classifier gate too when
    every member has a head), the test split scored with it; returns the test block.

    The members must share data, validation and test images (else ``EvaluationError`` naming the
    runs). Writes into ``out`` (e.g. weights/<plan>/ensemble__<names>/): ``postprocess.yaml``,
    ``test_scores.csv``, ``members.json`` (the run folders and their models) and ``metrics.json``
    (``_ensemble_metrics``), so that ``comparison.paired`` pairs it with its members on the same
    test images.
    """
    run_dirs = [Path(r) for r in run_dirs]
    if not run_dirs:
        raise EvaluationError("evaluate_ensemble: no run folders given")
    folder = RunFolder.of(out)
    ens = load_ensemble(run_dirs, device)
    datas = [_run_data(RunFolder.of(run), info) for info, run in zip(ens.infos, run_dirs)]
    _shared_splits(run_dirs, datas)
    params, block, raw = _judge(ens, datas[0], folder, tta, tune_size, batch_size, device, n_boot, progress)
    write_members(folder.path, ens, tta=tta, tune_size=list(tune_size))
    folder.write_metrics(_ensemble_metrics(folder, ens, block, raw, params))
    return block


def _ensemble_metrics(
    folder: RunFolder, ens: Ensemble, block: dict[str, Any], raw: dict[str, Any], params: pp.PostParams
) -> dict[str, Any]:
    """An ensemble's ``metrics.json``: run, kind "ensemble", members, encoder and loss joined by
    "+", the mask size when the members share it, the first member's data block, ``test``,
    ``test_raw``, ``postprocess``."""
    first = RunFolder(ens.run_dirs[0])
    sizes = set(ens.sizes)
    height, width = sizes.pop() if len(sizes) == 1 else (None, None)
    return {
        "run": folder.name,
        "kind": "ensemble",
        "members": [str(r) for r in ens.run_dirs],
        "arch": "+".join(i.arch for i in ens.infos),
        "encoder": "+".join(i.encoder for i in ens.infos),
        "loss": "+".join(dict.fromkeys(i.config.loss for i in ens.infos)),
        "height": height,
        "width": width,
        "seed": ens.infos[0].config.seed,
        "data": first.metrics().get("data") if first.has_metrics() else None,
        "test": block,
        "test_raw": raw,
        "postprocess": params.to_dict(),
    }


def _stored_scores(
    run: RunFolder, data: RunData, tta: str, tune_size: tuple[int, int]
) -> tuple[pp.PostParams, pd.DataFrame] | None:
    """(parameters, ``test_scores.csv``) of the run's own evaluation when ``evaluate_run`` wrote
    them with this TTA and tuning size on these test images (the same prediction again would give
    the same table), else None."""
    found = run.metrics() if run.has_metrics() else {}
    block = found.get("test") or {}
    if block.get("tta") != tta or block.get("tune_size") != list(tune_size) or not found.get("postprocess"):
        return None
    scores = run.scores()
    if scores is None or set(scores["ImageId"]) != set(data.test_ids):
        return None
    return pp.PostParams.from_dict(found["postprocess"], source=str(run.metrics_file)), scores


def _variant_scores(
    run: RunFolder,
    ens: Ensemble,
    data: RunData,
    tta: str,
    tune_size: tuple[int, int],
    batch_size: int,
    device: str,
    progress: bool,
    save: bool,
) -> pd.DataFrame:
    """The test scores of one TTA: the run's own evaluation when it is this one, else tuned and
    predicted again; with ``save`` its parameters go to ``postprocess.yaml``."""
    stored = _stored_scores(run, data, tta, tune_size)
    if stored is None:
        params, scores = _tuned_scores(ens, data, tta, tune_size, batch_size, device, progress)
    else:
        params, scores = stored
    if save:
        params.to_yaml(run.postprocess_file)
    return scores


#: the two post-processings ``compare_variants`` sets side by side: (key, raw counts?); their
#: labels on a page are ``tables.POSTPROCESS_LABELS``'
VARIANTS = (("raw", True), ("tuned", False))


def compare_variants(
    run_dir: str | Path,
    ttas: Sequence[str] = ("none", "hv"),
    tune_size: tuple[int, int] = (128, 800),
    batch_size: int = 8,
    device: str = "auto",
    n_boot: int = 2000,
    progress: bool = False,
    worst: int = 20,
    model: Ensemble | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw and post-processed, for each TTA in ``ttas``, on the test split of a run.

    Post-processing is tuned on validation separately for each TTA (it is applied to the
    probabilities it was tuned on); the last TTA's parameters stay in ``postprocess.yaml``. A TTA
    and tuning size that the run's own evaluation used are not predicted again: its parameters
    and test scores are read back. The ``worst`` test images of lowest mean Dice under the last TTA,
    post-processed, go to ``<run_dir>/evaluation/worst.csv`` (``worst_images``), so that showing
    them needs no second prediction of the whole split (``predict_run.overlay_images``).
    Returns (table: one row per (tta, postprocess: "raw", "tuned") with the test block's numbers
    and the all-empty row (tta "–", postprocess "all_empty"); paired: each variant (tta,
    postprocess) against the first one (against_tta, against_postprocess) with the paired
    difference of the Kaggle metric (kaggle_diff, kaggle_diff_ci95), its Holm p over the variants
    (p_holm) and ``stats.verdict``'s words (verdict)). ``tables.variants_table`` and
    ``tables.variants_paired_table`` render them for a person.
    """
    run, ens, data = _loaded(run_dir, device, model)
    seed = data.config.seed
    dice, rows = {}, []
    for i, tta in enumerate(ttas):
        scores = _variant_scores(
            run, ens, data, tta, tune_size, batch_size, device, progress, save=i == len(ttas) - 1
        )
        for post, raw in VARIANTS:
            counts = counts_of(scores, raw=raw)
            dice[(tta, post)] = metrics.dice_of(counts)
            rows.append({"tta": tta, "postprocess": post, **summarize(counts, n_boot=n_boot, seed=seed)})
    # counts: the last TTA's, post-processed (the loop's last), in sorted image order
    ids = sorted(scores["ImageId"].unique())
    write_csv(run.evaluation_dir / "worst.csv", worst_images(counts, ids, k=worst))
    empty = metrics.truth_empty_of(counts)
    base = {
        "tta": "–",
        "postprocess": "all_empty",
        "kaggle": float(empty.mean()),
        "images": len(empty),
        "defect_dice": 0.0,
    }
    table = pd.concat([pd.DataFrame(rows), pd.DataFrame([base])], ignore_index=True)
    return table, _paired_variants(dice, n_boot, seed)


def _paired_variants(dice: dict[tuple[str, str], Any], n_boot: int, seed: int) -> pd.DataFrame:
    """Each variant's per-image Dice against the first variant's: the paired bootstrap, Holm p
    over the variants and the verdict."""
    first = next(iter(dice))
    others = [v for v in dice if v != first]
    diffs = stats.adjust(
        [stats.paired_bootstrap(dice[v], dice[first], n_boot=n_boot, seed=seed) for v in others]
    )
    return pd.DataFrame(
        [
            {
                "tta": variant[0],
                "postprocess": variant[1],
                "against_tta": first[0],
                "against_postprocess": first[1],
                "kaggle_diff": g["diff"],
                "kaggle_diff_ci95": [g["low"], g["high"]],
                "p_holm": g["p_holm"],
                "verdict": stats.verdict(g),
            }
            for variant, g in zip(others, diffs)
        ]
    )
