"""The prediction run (``steelnb.judge.predict_run``) and the tuning before it (``evaluation.tune``):
submission round trip, evaluation tables, tuned post-processing, one-class checkpoints, bad
input, the ``steelnb predict`` command. All on a small synthetic set; one test reads the real
Severstal sample in ../shared and skips without it."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from factories import data_config

from steelnb.data import rle
from steelnb.data.labels import encodings_by_image, image_masks, read_labels
from steelnb.judge import inference as inf
from steelnb.judge import postprocess as pp
from steelnb.judge import submission as sub
from steelnb.judge.evaluation import evaluation_table, presence_table, tune
from steelnb.judge.predict_run import overlay_images, run_predict
from steelnb.model.metrics import iou_dice, kaggle_metric, pixel_counts

torch.set_num_threads(1)
REAL_SAMPLE_IDS = ["000a4bcdd.jpg", "01fd50e68.jpg", "0a058fcb6.jpg", "0a122ef42.jpg"]


def _copy(source: Path, names: list[str], folder: Path) -> Path:
    folder.mkdir()
    for name in names:
        shutil.copy(source / name, folder / name)
    return folder


@pytest.fixture()
def sample(synthetic_data, tmp_path) -> tuple[Path, Path, list[str]]:
    """(images folder, label file, ids): four synthetic images (one defect-free, three with a
    mask of class 1, 3 and 3) copied into tmp_path/images."""
    ids = sorted(p.name for p in (synthetic_data / "train_images").glob("*.jpg"))[:4]
    return _copy(synthetic_data / "train_images", ids, tmp_path / "images"), synthetic_data / "train.csv", ids


@pytest.fixture()
def real_sample(shared_data, tmp_path) -> tuple[Path, Path, list[str]]:
    """The same from ../shared: four real Severstal images and the sample's train.csv."""
    source = shared_data / "severstal-sample"
    images = _copy(source / "train_images", REAL_SAMPLE_IDS, tmp_path / "images")
    return images, source / "train.csv", REAL_SAMPLE_IDS


def _truth(labels: Path, ids: list[str]) -> np.ndarray:
    table = encodings_by_image(labels)
    return np.stack([image_masks(table.get(i, {}), image_id=i) for i in ids])


def _check_round_trip(images: Path, labels: Path, ids: list[str], run_dir: Path, out: Path) -> None:
    """run_predict with saved parameters, TTA h, labels and two overlays; every file checked."""
    params = pp.PostParams(classes=(pp.ClassParams(0.45, 100),) * 4)
    params.to_yaml(run_dir)
    try:
        res = run_predict(run_dir, images, out, labels=labels, tta="h", overlays=2, progress=False)
        # 05 shows the worst test images without predicting the split again: predicting just them
        # gives the same pictures (in the order asked, not sorted by name)
        worst2 = pd.read_csv(res["worst"])["ImageId"][:2].tolist()[::-1]
        again = overlay_images(run_dir, [images / i for i in worst2], out / "again", labels=labels, tta="h")
    finally:
        (run_dir / "postprocess.yaml").unlink()
    frame = pd.read_csv(res["submission"], dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["ImageId", "EncodedPixels", "ClassId"]
    assert len(frame) == 4 * len(ids) and res["images"] == len(ids) and res["skipped"] == 0
    assert sorted(set(frame["ImageId"])) == ids
    read_labels(res["submission"])  # the project's own reader accepts it, every RLE parsed
    # the RLE re-read equals the masks made from the probabilities
    model, _ = inf.load(run_dir)
    probs = np.concatenate(
        [b.probs for b in inf.predict(model, images, (64, 320), "h", quantize=True, progress=False)]
    )
    masks = pp.apply(probs, params)
    enc = {(i, int(c)): e for i, e, c in frame.itertuples(index=False)}
    decoded = np.stack([[rle.decode(enc[(i, c)]) for c in range(1, 5)] for i in ids])
    assert np.array_equal(decoded, masks)
    # the table agrees with steelnb.model.metrics on the same masks
    table = pd.read_csv(res["evaluation"], dtype={"class": str})
    assert set(zip(table.tta, table.postprocess)) == {
        ("none", "raw"),
        ("none", "postprocessed"),
        ("h", "raw"),
        ("h", "postprocessed"),
        ("–", "all-empty prediction"),
    }
    truth = _truth(labels, ids)
    main = table[(table.tta == "h") & (table.postprocess == "postprocessed")].set_index("class")
    assert main.loc["mean", "kaggle"] == pytest.approx(kaggle_metric(masks, truth))
    assert res["kaggle"] == pytest.approx(kaggle_metric(masks, truth))
    # predicting nothing beside it: its row, and the paired gain of each variant over it
    empty_share = (~truth.any((2, 3))).mean()
    base = table[table.postprocess == "all-empty prediction"].set_index("class")
    assert base.loc["mean", "kaggle"] == pytest.approx(empty_share) == res["all_empty_kaggle"]
    assert main.loc["mean", "gain"] == pytest.approx(kaggle_metric(masks, truth) - empty_share)
    assert table[table["class"] == "mean"]["verdict"].fillna("").str.contains("over 4 comparisons").sum() == 4
    assert res["gain_over_all_empty"].startswith(f"{main.loc['mean', 'gain']:.3f} [")
    ref = iou_dice(masks, truth)
    assert main.loc[["1", "2", "3", "4"], "dice"].tolist() == pytest.approx(ref["dice"])
    assert main.loc[["1", "2", "3", "4"], "iou"].tolist() == pytest.approx(ref["iou"])
    raw = table[(table.tta == "none") & (table.postprocess == "raw")].set_index("class")
    plain = np.concatenate(
        [b.probs for b in inf.predict(model, images, (64, 320), quantize=True, progress=False)]
    )
    assert raw.loc["mean", "kaggle"] == pytest.approx(kaggle_metric(pp.apply(plain), truth))
    presence = pd.read_csv(res["presence"])
    assert presence["images_with_defect"].tolist() == [int(truth[:, c].any((1, 2)).sum()) for c in range(4)]
    worst = pd.read_csv(res["worst"])
    assert worst["dice"].is_monotonic_increasing and len(worst) == len(ids)
    assert [p.name for p in res["overlays"]] == [Path(i).stem + ".png" for i in worst["ImageId"][:2]]
    assert [p.name for p in again] == [Path(i).stem + ".png" for i in worst2]
    for p in again:
        assert p.read_bytes() == (out / "overlays" / p.name).read_bytes(), p.name
    assert overlay_images(run_dir, [], out / "none") == [] and not (out / "none").exists()


@pytest.mark.slow  # 5-14 s on two cores (trains, exports or starts a process): CI runs it, the fast loop does not
def test_submission_round_trip_and_evaluation(sample, tiny_run, tmp_path) -> None:
    images, labels, ids = sample
    assert _truth(labels, ids).any()  # some truth to score against, and some empty images
    assert not _truth(labels, ids).any((1, 2, 3)).all()
    _check_round_trip(images, labels, ids, tiny_run, tmp_path / "out")


@pytest.mark.slow  # 5-14 s on two cores (trains, exports or starts a process): CI runs it, the fast loop does not
def test_real_severstal_sample_round_trip(real_sample, tiny_run, tmp_path) -> None:
    """The same on the real JPEGs and the real sample's train.csv (skips without ../shared)."""
    images, labels, ids = real_sample
    _check_round_trip(images, labels, ids, tiny_run, tmp_path / "out")


def test_validate_submission_rejects_bad_files(tmp_path) -> None:
    ids = ["a.jpg", "b.jpg"]
    rows = [(i, "", c) for i in ids for c in range(1, 5)]
    path = sub.write_submission(rows, tmp_path / "s.csv", ids)
    assert path.read_text().splitlines()[1] == "a.jpg,,1"
    with pytest.raises(sub.SubmissionError, match="7 rows"):
        sub.write_submission(rows[:-1], tmp_path / "s.csv", ids)
    with pytest.raises(sub.SubmissionError, match="line 3: image a.jpg class 2"):
        sub.write_submission(
            [(i, "5 3 1 2" if (i, c) == ("a.jpg", 2) else e, c) for i, e, c in rows], tmp_path / "s.csv", ids
        )
    assert len(pd.read_csv(path)) == 8  # the invalid writes above never replaced the valid file
    assert not list(tmp_path.glob(".*tmp"))  # nor left temporary files behind
    with pytest.raises(sub.SubmissionError, match="c.jpg"):
        sub.validate_submission(path, ["a.jpg", "c.jpg"])


def test_tune_saves_params_used_by_prediction(sample, make_tiny_run, tmp_path) -> None:
    images, labels, ids = sample
    run = make_tiny_run(tmp_path / "run")
    params = tune(
        run,
        images,
        labels,
        image_ids=ids,
        size=(64, 400),
        progress=False,
        thresholds=(0.3, 0.5, 0.7),
        min_areas=(0, 1000),
        top_probs=(0.0, 0.8),
        total_areas=(0,),
    )
    assert (run / "postprocess.yaml").is_file() and pp.load_params(run) == params
    res = run_predict(run / "best.ckpt", images, tmp_path / "out", labels=labels, progress=False)
    assert res["postprocess"] == str(run / "postprocess.yaml")
    table = pd.read_csv(res["evaluation"], dtype={"class": str}).set_index(["postprocess", "class"])
    # tuning on these very images cannot do worse than the plain 0.5 threshold (up to resizing)
    assert table.loc[("postprocessed", "mean"), "kaggle"] >= table.loc[("raw", "mean"), "kaggle"] - 0.02


def test_one_class_checkpoint(sample, make_tiny_run, tmp_path) -> None:
    from steelnb.model.models import build_model

    images, labels, ids = sample
    table = encodings_by_image(labels)
    name = next(i for i in ids if 3 in table.get(i, {}))  # an image with a class-3 mask
    one = _copy(images, [name], tmp_path / "one")
    torch.manual_seed(0)
    model = build_model("Unet", "resnet18", encoder_weights=None, classes=1)
    torch.save(
        {"model_state_dict": model.state_dict()}, tmp_path / "ref.pth"
    )  # the reference's Catalyst layout
    with pytest.raises(inf.InferenceError, match="class_id"):
        run_predict(tmp_path / "ref.pth", one, tmp_path / "out", progress=False)
    res = run_predict(tmp_path / "ref.pth", one, tmp_path / "out", labels=labels, class_id=3, progress=False)
    assert "class 3 only" in res["note"]
    frame = pd.read_csv(res["submission"], dtype=str, keep_default_na=False)
    assert len(frame) == 4 and (frame.loc[frame.ClassId != "3", "EncodedPixels"] == "").all()
    table = pd.read_csv(res["evaluation"], dtype={"class": str})
    assert set(table["class"]) == {"3", "mean"}
    with pytest.raises(inf.InferenceError, match="class_id=2 given"):
        run_predict(make_tiny_run(tmp_path / "four"), one, tmp_path / "out", class_id=2, progress=False)


def test_bad_inputs(odd_images, tiny_run, tmp_path) -> None:
    images, names = odd_images
    out = tmp_path / "out"
    with pytest.raises(inf.InferenceError, match="truncated.jpg") as err:
        run_predict(tiny_run, images, out, batch_size=2, progress=False)
    assert "submission.partial.csv" in str(err.value)
    partial = pd.read_csv(out / "submission.partial.csv", dtype=str, keep_default_na=False)
    assert len(partial) > 0 and len(partial) % 4 == 0  # predictions made before the bad file are kept
    res = run_predict(tiny_run, images, out, on_error="skip", batch_size=2, progress=False)
    assert not (out / "submission.partial.csv").exists()  # a former run's partial file is gone
    skipped = pd.read_csv(res["skipped_csv"])
    assert skipped["ImageId"].tolist() == ["truncated.jpg", "zz_text.jpg"]
    assert skipped["reason"].str.contains("truncated|not a readable image").all()
    frame = pd.read_csv(res["submission"], dtype=str, keep_default_na=False)
    assert len(frame) == 4 * (len(names) + 3) and "truncated.jpg" not in set(frame.ImageId)
    # nothing readable at all, an empty folder, a missing checkpoint
    bad = _copy(images, ["truncated.jpg", "zz_text.jpg"], tmp_path / "bad")
    with pytest.raises(inf.InferenceError, match="no image could be read .2 skipped"):
        run_predict(tiny_run, bad, out, on_error="skip", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(inf.InferenceError, match="empty.*no images"):
        run_predict(tiny_run, tmp_path / "empty", out, progress=False)
    with pytest.raises(inf.InferenceError, match="nope.ckpt"):
        run_predict(tmp_path / "nope.ckpt", images, out, progress=False)


def test_evaluation_table_matches_metrics() -> None:
    rng = np.random.default_rng(0)
    pred = (rng.random((6, 4, 16, 40)) > 0.7).astype(np.uint8)
    truth = (rng.random((6, 4, 16, 40)) > 0.8).astype(np.uint8)
    truth[0] = pred[0] = 0  # an empty image: Dice 1 for all its pairs
    counts = np.stack([pixel_counts(p, t) for p, t in zip(pred, truth)])
    full = evaluation_table({("none", "raw"): counts}, n_boot=500)
    table = full[full.postprocess == "raw"].set_index("class")
    ref = iou_dice(pred, truth)
    assert table.loc[["1", "2", "3", "4"], "dice"].tolist() == pytest.approx(ref["dice"])
    assert table.loc["mean", "iou"] == pytest.approx(ref["iou_mean"])
    assert table.loc["mean", "kaggle"] == pytest.approx(kaggle_metric(pred, truth))
    presence = presence_table(counts)
    assert presence["recall"].tolist() == [1.0] * 4  # every image with a defect also has predictions
    # the all-empty baseline by hand: Dice 1 on the (image, class) pairs without truth, 0 elsewhere
    clean = ~truth.any((2, 3))  # (N, C)
    base = full[full.postprocess == "all-empty prediction"].set_index("class")
    assert list(base.index) == ["1", "2", "3", "4", "mean"] and set(base.tta) == {"–"}
    assert base.loc["mean", "kaggle"] == pytest.approx(clean.mean()) == pytest.approx(1 / 6)  # image 0 only
    assert base.loc["1", "kaggle"] == pytest.approx(clean[:, 0].mean())
    assert base.loc["mean", "dice"] == 0.0 and base.loc["mean", "gain"] == 0.0
    mean = table.loc["mean"]
    assert mean["all_empty_kaggle"] == pytest.approx(clean.mean())
    assert mean["gain"] == pytest.approx(kaggle_metric(pred, truth) - clean.mean())
    assert mean["kaggle_low"] <= mean["kaggle"] <= mean["kaggle_high"]
    assert mean["gain_low"] <= mean["gain"] <= mean["gain_high"]
    assert mean["verdict"].endswith("(one comparison, unadjusted); single seed")


def test_cli_predict(sample, tiny_run, tmp_path, capsys) -> None:
    from steelnb.cli import main

    images, labels, _ = sample
    out = tmp_path / "o"
    args = ["predict", "--weights", str(tiny_run), "--images", str(images), "--out", str(out)]
    assert main([*args, "--labels", str(labels), "--tta", "hv", "--overlays", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"submission: {out / 'submission.csv'}" in printed and "evaluation: " in printed
    assert (out / "submission.csv").is_file() and len(list((out / "overlays").glob("*.png"))) == 1
    args[2] = str(tmp_path / "missing")
    assert main(args) == 2
    assert "missing: checkpoint or run folder not found" in capsys.readouterr().err


@pytest.mark.slow
def test_tuning_a_trained_synthetic_run(tmp_path) -> None:
    """Train a tiny model on synthetic data, tune on its validation fold, predict with the result."""
    from steelnb.data.dataset import SteelDataModule
    from steelnb.data.synthetic import generate
    from steelnb.model.training import fit

    data = generate(tmp_path / "data", n_images=32, n_test=0, seed=0)
    cfg = data_config(
        data,
        epochs=2,
        batch_size=8,
        out_dir=str(tmp_path / "weights"),
        run_name="tiny",
        early_stopping_patience=0,
        n_folds=4,
    )
    run = fit(cfg, progress_bar=False)
    params = tune(run, size=(64, 400), progress=False)
    assert pp.load_params(run) == params
    # the default (threshold 0.5, no area, no gate) is in the grid: tuning can only match or beat it
    val = SteelDataModule(cfg).val_ids
    model, _ = inf.load(run)
    probs = np.concatenate(
        [
            b.probs
            for b in inf.predict(
                model,
                [data / "train_images" / i for i in val],
                (64, 320),
                out_size=(64, 400),
                quantize=True,
                progress=False,
            )
        ]
    )
    truth = np.stack(
        [
            [cv2.resize(m, (400, 64), interpolation=cv2.INTER_NEAREST) for m in t]
            for t in _truth(data / "train.csv", val)
        ]
    )
    assert params.score >= kaggle_metric(pp.apply(probs), truth)
    res = run_predict(
        run,
        [data / "train_images" / i for i in val],
        tmp_path / "out",
        labels=data / "train.csv",
        progress=False,
    )
    assert res["postprocess"].endswith("postprocess.yaml") and res["images"] == len(val)


@pytest.mark.slow  # 5-14 s on two cores (trains, exports or starts a process): CI runs it, the fast loop does not
def test_predict_with_two_runs_writes_one_submission_and_members(sample, make_tiny_run, tmp_path) -> None:
    import json

    from steelnb.judge.ensemble import load_ensemble

    images, labels, ids = sample
    a, b = make_tiny_run(tmp_path / "a", seed=1), make_tiny_run(tmp_path / "b", seed=2)
    out = tmp_path / "out"
    res = run_predict([a, b], images, out, labels=labels, tta="h", progress=False)
    sub.validate_submission(res["submission"], ids)
    assert res["members"] == [str(a), str(b)] and res["postprocess"] == "default"
    record = json.loads((out / "members.json").read_text())
    assert [m["run"] for m in record["members"]] == [str(a), str(b)] and record["tta"] == "h"
    assert res["members_json"] == out / "members.json"
    # the masks are the post-processed mean of the two members' probabilities
    probs = np.concatenate(
        [x.probs for x in load_ensemble([a, b]).predict(images, "h", quantize=True, progress=False)]
    )
    frame = pd.read_csv(res["submission"], dtype=str, keep_default_na=False)
    enc = {(i, int(c)): e for i, e, c in frame.itertuples(index=False)}
    decoded = np.stack([[rle.decode(enc[(i, c)]) for c in range(1, 5)] for i in ids])
    assert np.array_equal(decoded, pp.apply(probs))
    # a tuned file given for the ensemble is applied; one run afterwards leaves no members.json behind
    params = pp.PostParams(classes=(pp.ClassParams(0.6, 500),) * 4)
    (tmp_path / "ens").mkdir()
    params.to_yaml(tmp_path / "ens")
    res = run_predict([a, b], images, out, tta="h", postprocess=tmp_path / "ens", progress=False)
    assert res["postprocess"] == str(tmp_path / "ens" / "postprocess.yaml")
    frame = pd.read_csv(res["submission"], dtype=str, keep_default_na=False)
    enc = {(i, int(c)): e for i, e, c in frame.itertuples(index=False)}
    decoded = np.stack([[rle.decode(enc[(i, c)]) for c in range(1, 5)] for i in ids])
    assert np.array_equal(decoded, pp.apply(probs, params))
    single = run_predict(a, images, out, progress=False)
    assert "members" not in single and not (out / "members.json").exists()


def test_cli_predict_with_several_weights(sample, make_tiny_run, tmp_path, capsys) -> None:
    from steelnb.cli import main

    images, _, ids = sample
    a, b = make_tiny_run(tmp_path / "a", seed=1), make_tiny_run(tmp_path / "b", seed=2)
    out = tmp_path / "o"
    assert main(["predict", "--weights", str(a), str(b), "--images", str(images), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"members: {[str(a), str(b)]}" in printed
    sub.validate_submission(out / "submission.csv", ids)
    assert (out / "members.json").is_file()


def test_predict_with_a_classifier_gate(sample, make_tiny_run, tmp_path) -> None:
    """A run with a classification head: the gate of its postprocess.yaml empties the classes whose
    class probability is below the threshold; the summary counts the images screened out."""
    images, labels, ids = sample
    run = make_tiny_run(tmp_path / "head", classifier=True)
    model, _ = inf.load(run)
    batches = list(inf.predict(model, images, (64, 320), quantize=True, progress=False))
    probs = np.concatenate([x.probs for x in batches])
    cp = np.concatenate([x.class_probs for x in batches])
    cut = float(np.median(cp))  # about half of the (image, class) pairs are gated
    params = pp.PostParams(classes=(pp.ClassParams(0.3, cls_threshold=cut),) * 4)
    params.to_yaml(run)
    res = run_predict(run, images, tmp_path / "out", labels=labels, progress=False)
    frame = pd.read_csv(res["submission"], dtype=str, keep_default_na=False)
    enc = {(i, int(c)): e for i, e, c in frame.itertuples(index=False)}
    decoded = np.stack([[rle.decode(enc[(i, c)]) for c in range(1, 5)] for i in ids])
    assert np.array_equal(decoded, pp.apply(probs, params, cp))
    gated = cp < cut
    assert gated.any() and not decoded[gated].any()
    assert decoded[~gated].any((1, 2)).all()  # threshold 0.3 on a random model: the others predict
    assert res["screened"] == int(pp.screened(cp, params).sum())
