"""Ensembles of runs (``steelnb.judge.ensemble``, ``evaluation.evaluate_ensemble``) and the classifier
gate's test-split summary: a run with itself is the run, numbers and files alike; members of other
splits are refused; the comparison code pairs an ensemble with its members. Tiny random models on
a small synthetic set with a test split."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from steelnb.batch import report
from steelnb.judge import comparison, evaluation
from steelnb.judge import postprocess as pp
from steelnb.judge.ensemble import EnsembleError, load_ensemble, load_run

torch.set_num_threads(1)
FAST = dict(tune_size=(32, 200), n_boot=200)


@pytest.fixture(scope="module")
def split_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 synthetic images: train, validation and test splits with subset "all"."""
    from steelnb.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("ens") / "data", n_images=30, n_test=0, seed=2)


@pytest.fixture()
def make_run(make_tiny_run: Callable[..., Path], split_data: Path) -> Callable[..., Path]:
    """``make(folder, classifier=False, seed=0, **config)``: a tiny run on ``split_data`` with the
    metrics.json a training run leaves (what the evaluation and the comparison read)."""

    def make(folder: Path, classifier: bool = False, seed: int = 0, **config) -> Path:
        from steelnb.data.dataset import SteelDataModule
        from steelnb.model.models import load_model

        run = make_tiny_run(
            folder, seed=seed, classifier=classifier, data_dir=str(split_data), subset="all", **config
        )
        data = SteelDataModule(load_model(run)[1].config)
        block = {"kind": "synthetic", "dir": str(split_data), "n_test": len(data.test_ids)}
        metrics = {"run": folder.name, "encoder": "resnet18", "loss": "dice_bce", "height": 64, "width": 320}
        (run / "metrics.json").write_text(json.dumps({**metrics, "data": block}))
        return run

    return make


@pytest.mark.slow  # 5-14 s on two cores (trains, exports or starts a process): CI runs it, the fast loop does not
@pytest.mark.parametrize("classifier", [False, True])
def test_a_run_with_itself_is_the_run(make_run, tmp_path: Path, classifier: bool) -> None:
    run = make_run(tmp_path / "run", classifier=classifier)
    single = evaluation.evaluate_run(run, tta="h", **FAST)
    out = tmp_path / "weights" / "ensemble__run+run"
    both = evaluation.evaluate_ensemble([run, run], out, tta="h", **FAST)
    assert json.loads(json.dumps(both)) == json.loads(json.dumps(single))  # every number, the gate's too
    assert ("gate" in both) == classifier
    a, b = evaluation.read_scores(run), evaluation.read_scores(out)
    pd.testing.assert_frame_equal(a, b)
    assert ("class_prob" in b.columns) == classifier
    assert pp.PostParams.from_yaml(out) == pp.PostParams.from_yaml(run)
    members = json.loads((out / "members.json").read_text())
    assert [m["run"] for m in members["members"]] == [str(run)] * 2 and members["tta"] == "h"
    m = json.loads((out / "metrics.json").read_text())
    assert m["kind"] == "ensemble" and m["members"] == [str(run)] * 2 and m["test"] == both
    assert (m["encoder"], m["height"], m["width"]) == ("resnet18+resnet18", 64, 320)
    # the comparison code reads the ensemble folder as a run's and pairs them on the same images
    runs = report.read_metrics([run, out])
    kept, left = comparison.comparable(runs)
    assert len(kept) == 2 and left.empty
    diff = comparison.paired(runs[1], runs[0], n_boot=200)
    assert diff["images"] == single["images"] and diff["kaggle"]["diff"] == 0
    assert comparison.test_row(runs[1])["Kaggle [95% CI]"] == comparison.test_row(runs[0])["Kaggle [95% CI]"]


def test_probabilities_of_a_run_with_itself(make_run, split_data: Path, tmp_path: Path) -> None:
    from steelnb.judge import inference as inf

    run = make_run(tmp_path / "head", classifier=True)
    images = sorted((split_data / "train_images").glob("*.jpg"))[:3]
    model, _ = inf.load(run)
    alone = next(inf.predict(model, images, (64, 320), "hv", progress=False))
    ens = load_ensemble([run, run])
    twice = next(ens.predict(images, "hv", progress=False))
    assert np.allclose(alone.probs, twice.probs) and np.allclose(alone.class_probs, twice.class_probs)
    assert len(ens) == 2 and ens.has_classifier and ens.sizes == [(64, 320)] * 2
    with pytest.raises(EnsembleError, match="none given"):
        load_ensemble([])


def test_members_must_share_their_splits(make_run, tmp_path: Path) -> None:
    a = make_run(tmp_path / "fold0")
    b = make_run(tmp_path / "fold1", fold=1)  # same test images, other validation images
    with pytest.raises(evaluation.EvaluationError, match=r"fold0 and .*fold1: .*validation images"):
        evaluation.evaluate_ensemble([a, b], tmp_path / "ens", **FAST)
    assert not (tmp_path / "ens").exists()  # refused before anything is written
    with pytest.raises(evaluation.EvaluationError, match="no run folders"):
        evaluation.evaluate_ensemble([], tmp_path / "ens", **FAST)


def test_two_members_average_and_a_member_without_head_drops_the_gate(make_run, tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", classifier=True, seed=1)
    b = make_run(tmp_path / "b", seed=2)
    block = evaluation.evaluate_ensemble([a, b], tmp_path / "ens", **FAST)
    assert "gate" not in block and "class_prob" not in evaluation.read_scores(tmp_path / "ens").columns
    assert block["images"] == json.loads((a / "metrics.json").read_text())["data"]["n_test"]


def test_gate_summary_from_hand_made_scores() -> None:
    """Three images: a clean one screened (every class gated), a clean one kept, a defective one
    wrongly screened; the false-positive pair the gate removed is counted with and without it."""
    rows = []
    cps = {"a.jpg": [0.1, 0.2, 0.1, 0.3], "b.jpg": [0.9, 0.1, 0.1, 0.1], "c.jpg": [0.2, 0.2, 0.2, 0.2]}
    for image, cp in cps.items():
        for c in range(1, 5):
            truth = 100 if (image, c) == ("c.jpg", 2) else 0
            fp_free = 50 if (image, c) == ("a.jpg", 1) else 0  # removed by the gate
            fp = 40 if (image, c) == ("b.jpg", 1) else 0  # not gated: kept
            tp_free = 80 if truth else 0  # found without the gate, lost with it
            rows.append(
                (image, c, 0, fp, truth, 0, 0, truth, cp[c - 1], tp_free, fp_free + fp, truth - tp_free)
            )
    columns = ["ImageId", "ClassId", *evaluation.COUNT_COLUMNS, *evaluation.GATE_COLUMNS]
    scores = pd.DataFrame(rows, columns=columns)
    params = pp.PostParams(classes=(pp.ClassParams(cls_threshold=0.5),) * 4)
    g = evaluation.gate_summary(scores, params, n_boot=200)
    assert (g["clean_images"], g["defective_images"]) == (2, 1)
    assert (g["screened_clean"], g["screened_clean_share"]) == (1, 0.5)
    assert (g["screened_defective"], g["screened_defective_share"]) == (1, 1.0)
    assert g["screened_share"] == pytest.approx(2 / 3) and g["gated_pairs"] == 11
    assert (g["false_positive_pairs"], g["false_positive_pairs_ungated"]) == (1, 2)
    assert (g["missed_defect_pairs"], g["missed_defect_pairs_ungated"]) == (1, 0)
    with_gate = evaluation.summarize(evaluation.counts_of(scores), n_boot=200)["kaggle"]
    assert g["gate_gain"] == pytest.approx(with_gate - g["kaggle_ungated"])
    assert evaluation.gate_summary(scores.drop(columns=evaluation.GATE_COLUMNS), params) is None


@pytest.mark.slow  # 5-14 s on two cores (trains, exports or starts a process): CI runs it, the fast loop does not
def test_a_run_is_loaded_once_and_its_splits_file_gives_the_same_numbers(
    make_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """evaluate_run and compare_variants each load the checkpoint once (evaluate_run loaded it
    three times); a run folder without splits.json (from before fit wrote it) gets its splits
    rebuilt from its config, and with the file the evaluation gives the same numbers."""
    from steelnb.data.dataset import SteelDataModule
    from steelnb.judge import ensemble
    from steelnb.model.runfolder import RunFolder, Splits

    run = make_run(tmp_path / "run")
    folder = RunFolder(run)
    assert not folder.splits_file.exists()
    loads: list[Path] = []
    real = ensemble.load
    monkeypatch.setattr(ensemble, "load", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    rebuilt = evaluation.evaluate_run(run, tta="h", **FAST)
    assert loads == [run]
    folder.write_splits(Splits.of(SteelDataModule(load_run(folder).infos[0].config)))
    loads.clear()
    assert evaluation.evaluate_run(run, tta="h", **FAST) == rebuilt
    evaluation.compare_variants(run, ttas=("h", "none"), tune_size=(32, 200), n_boot=200)
    assert loads == [run, run]
    model = load_run(folder)
    loads.clear()
    assert evaluation.evaluate_run(run, tta="h", model=model, **FAST) == rebuilt and loads == []
