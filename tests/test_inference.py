"""Inference: TTA, streaming batches, submission, evaluation, one-class checkpoints, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from steelnb import inference as inf
from steelnb import postprocess as pp
from steelnb import rle
from steelnb import submission as sub
from steelnb.config import TrainConfig
from steelnb.evaluation import evaluation_table, presence_table
from steelnb.labels import read_labels
from steelnb.metrics import kaggle_metric, pixel_counts

torch.set_num_threads(1)
SAMPLE_IDS = ["000a4bcdd.jpg", "01fd50e68.jpg", "0a058fcb6.jpg", "0a122ef42.jpg"]


class FlipSymmetric(nn.Module):
    """A model made flip-equivariant by construction: the mean of f over the four flips."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flips = [(), (-1,), (-2,), (-2, -1)]
        return torch.stack(
            [self.inner(x.flip(f) if f else x).flip(f) if f else self.inner(x) for f in flips]
        ).mean(0)


def _conv_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 5, padding=2)).eval()


def _images(n: int = 2, h: int = 32, w: int = 96, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8))


def test_tta_of_a_symmetric_model_equals_plain() -> None:
    model = FlipSymmetric(_conv_net())
    x = _images()
    plain, _ = inf.predict_tensor(model, x, "none", out_size=None)
    for tta in ("h", "hv"):
        out, identity = inf.predict_tensor(model, x, tta, out_size=None, with_plain=True)
        assert torch.allclose(out, plain, atol=1e-5), tta
        assert torch.allclose(identity, plain, atol=1e-6)
    # a model that is not symmetric: TTA must change the output (so the test above can fail)
    asym = _conv_net()
    a, _ = inf.predict_tensor(asym, x, "none", out_size=None)
    b, _ = inf.predict_tensor(asym, x, "hv", out_size=None)
    assert (a - b).abs().max() > 1e-3
    # hv is the mean of the four flipped predictions, flipped back
    # images are (B, H, W, 3): width is dim 2, height dim 1; outputs (B, C, H, W): dims 3 and 2
    flipped = []
    for image_dims, out_dims in [((), ()), ((2,), (3,)), ((1,), (2,)), ((1, 2), (2, 3))]:
        p, _ = inf.predict_tensor(asym, x.flip(image_dims) if image_dims else x, "none", out_size=None)
        flipped.append(p.flip(out_dims) if out_dims else p)
    manual = torch.stack(flipped)
    assert torch.allclose(b, manual.mean(0), atol=1e-5)
    with pytest.raises(inf.InferenceError, match="tta"):
        inf.predict_tensor(asym, x, "vh")


def test_preprocessing_matches_val_transforms(tmp_path) -> None:
    from steelnb.dataset import val_transforms

    image = np.random.default_rng(1).integers(0, 256, (256, 1600, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image[..., ::-1])
    model = _conv_net()
    batch = next(inf.predict(model, tmp_path, size=(64, 320), out_size=(64, 320), progress=False))
    x = torch.as_tensor(val_transforms(64, 320)(image=image)["image"])[None]
    with torch.no_grad():
        expected = torch.sigmoid(model(x)).numpy()
    assert np.abs(batch.probs - expected).max() < 1e-4


def test_predict_streams_batches(tmp_path) -> None:
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), _images(1, 128, 800, seed=i)[0].numpy())
    batches = list(
        inf.predict(_conv_net(), tmp_path, size=(64, 320), batch_size=2, quantize=True, progress=False)
    )
    assert [b.ids for b in batches] == [["0.jpg", "1.jpg"], ["2.jpg", "3.jpg"], ["4.jpg"]]
    assert batches[0].probs.shape == (2, 4, 256, 1600) and batches[0].probs.dtype == np.uint8


def _lightning_run(folder: Path, classes: int = 4, seed: int = 0) -> Path:
    """A run folder holding a tiny random Unet (resnet18, 64x320) as training.fit saves it."""
    from steelnb.models import build_model

    torch.manual_seed(seed)
    cfg = TrainConfig(encoder="resnet18", height=64, width=320, classes=classes)
    model = build_model("Unet", "resnet18", encoder_weights=None, classes=classes)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"config": cfg.to_dict()},
        },
        folder / "best.ckpt",
    )
    return folder


@pytest.fixture()
def sample(shared_data, tmp_path) -> tuple[Path, Path]:
    """Four real images copied into tmp_path/images and their labels."""
    images = tmp_path / "images"
    images.mkdir()
    for name in SAMPLE_IDS:
        shutil.copy(shared_data / "severstal-sample" / "train_images" / name, images / name)
    return images, shared_data / "severstal-sample" / "train.csv"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return _lightning_run(tmp_path_factory.mktemp("run") / "tiny")


def test_submission_round_trip_and_evaluation(sample, run_dir, tmp_path) -> None:
    from steelnb.metrics import iou_dice, kaggle_metric

    images, labels = sample
    params = pp.PostParams(classes=(pp.ClassParams(0.45, 100),) * 4)
    params.to_yaml(run_dir)
    try:
        res = inf.run_predict(
            run_dir, images, tmp_path / "out", labels=labels, tta="h", overlays=2, progress=False
        )
    finally:
        (run_dir / "postprocess.yaml").unlink()
    frame = pd.read_csv(res["submission"], dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["ImageId", "EncodedPixels", "ClassId"]
    assert len(frame) == 4 * len(SAMPLE_IDS) and res["images"] == 4 and res["skipped"] == 0
    assert sorted(set(frame["ImageId"])) == SAMPLE_IDS
    read_labels(res["submission"])  # the project's own reader accepts it, every RLE parsed
    # the RLE re-read equals the masks made from the probabilities
    model, _ = inf.load(run_dir)
    probs = np.concatenate(
        [b.probs for b in inf.predict(model, images, (64, 320), "h", quantize=True, progress=False)]
    )
    masks = pp.apply(probs, params)
    enc = {(i, int(c)): e for i, e, c in frame.itertuples(index=False)}
    decoded = np.stack([[rle.decode(enc[(i, c)]) for c in range(1, 5)] for i in SAMPLE_IDS])
    assert np.array_equal(decoded, masks)
    # the table agrees with steelnb.metrics on the same masks
    table = pd.read_csv(res["evaluation"], dtype={"class": str})
    assert set(zip(table.tta, table.postprocess)) == {
        ("none", "raw"),
        ("none", "postprocessed"),
        ("h", "raw"),
        ("h", "postprocessed"),
    }
    truth_all = inf._by_image(labels)
    truth = np.stack([inf._truth(truth_all, i) for i in SAMPLE_IDS])
    main = table[(table.tta == "h") & (table.postprocess == "postprocessed")].set_index("class")
    assert main.loc["mean", "kaggle"] == pytest.approx(kaggle_metric(masks, truth))
    assert res["kaggle"] == pytest.approx(kaggle_metric(masks, truth))
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
    assert worst["dice"].is_monotonic_increasing and len(worst) == 4
    assert [p.name for p in res["overlays"]] == [Path(i).stem + ".png" for i in worst["ImageId"][:2]]


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


def test_tune_saves_params_used_by_prediction(sample, tmp_path) -> None:
    images, labels = sample
    run = _lightning_run(tmp_path / "run")
    params = inf.tune(
        run,
        images,
        labels,
        image_ids=SAMPLE_IDS,
        size=(64, 400),
        progress=False,
        thresholds=(0.3, 0.5, 0.7),
        min_areas=(0, 1000),
        top_probs=(0.0, 0.8),
        total_areas=(0,),
    )
    assert (run / "postprocess.yaml").is_file() and pp.load_params(run) == params
    res = inf.run_predict(run / "best.ckpt", images, tmp_path / "out", labels=labels, progress=False)
    assert res["postprocess"] == str(run / "postprocess.yaml")
    table = pd.read_csv(res["evaluation"], dtype={"class": str}).set_index(["postprocess", "class"])
    # tuning on these very images cannot do worse than the plain 0.5 threshold (up to resizing)
    assert table.loc[("postprocessed", "mean"), "kaggle"] >= table.loc[("raw", "mean"), "kaggle"] - 0.02


def test_one_class_checkpoint(sample, tmp_path) -> None:
    from steelnb.models import build_model

    images, labels = sample
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(images / SAMPLE_IDS[1], one / SAMPLE_IDS[1])
    torch.manual_seed(0)
    model = build_model("Unet", "resnet18", encoder_weights=None, classes=1)
    torch.save(
        {"model_state_dict": model.state_dict()}, tmp_path / "ref.pth"
    )  # the reference's Catalyst layout
    with pytest.raises(inf.InferenceError, match="class_id"):
        inf.run_predict(tmp_path / "ref.pth", one, tmp_path / "out", progress=False)
    res = inf.run_predict(
        tmp_path / "ref.pth", one, tmp_path / "out", labels=labels, class_id=3, progress=False
    )
    assert "class 3 only" in res["note"]
    frame = pd.read_csv(res["submission"], dtype=str, keep_default_na=False)
    assert len(frame) == 4 and (frame.loc[frame.ClassId != "3", "EncodedPixels"] == "").all()
    table = pd.read_csv(res["evaluation"], dtype={"class": str})
    assert set(table["class"]) == {"3", "mean"}
    with pytest.raises(inf.InferenceError, match="class_id=2 given"):
        inf.run_predict(_lightning_run(tmp_path / "four"), one, tmp_path / "out", class_id=2, progress=False)


def test_bad_inputs(sample, run_dir, tmp_path) -> None:
    images, _ = sample
    first = images / SAMPLE_IDS[0]
    image = cv2.imread(str(first))
    # handled: PNG content under a .jpg name, a single-channel image, an image of another size
    cv2.imwrite(str(tmp_path / "x.png"), image)
    shutil.move(tmp_path / "x.png", images / "png_named.jpg")
    cv2.imwrite(str(images / "grey.jpg"), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(images / "small.jpg"), cv2.resize(image, (800, 128)))
    # reported: truncated JPEG, not an image at all
    data = first.read_bytes()
    (images / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (images / "zz_text.jpg").write_text("not an image")
    model, _ = inf.load(run_dir)
    out = tmp_path / "out"
    with pytest.raises(inf.InferenceError, match="truncated.jpg") as err:
        inf.run_predict(run_dir, images, out, batch_size=2, progress=False)
    assert "submission.partial.csv" in str(err.value)
    partial = pd.read_csv(out / "submission.partial.csv", dtype=str, keep_default_na=False)
    assert len(partial) > 0 and len(partial) % 4 == 0  # predictions made before the bad file are kept
    res = inf.run_predict(run_dir, images, out, on_error="skip", batch_size=2, progress=False)
    skipped = pd.read_csv(res["skipped_csv"])
    assert skipped["ImageId"].tolist() == ["truncated.jpg", "zz_text.jpg"]
    assert skipped["reason"].str.contains("truncated|not a readable image").all()
    frame = pd.read_csv(res["submission"], dtype=str, keep_default_na=False)
    assert len(frame) == 4 * (len(SAMPLE_IDS) + 3) and "truncated.jpg" not in set(frame.ImageId)
    probs = {
        b.ids[k]: b.probs[k]
        for b in inf.predict(model, images, (64, 320), on_error="skip", progress=False)
        for k in range(len(b.ids))
    }
    assert np.array_equal(probs["png_named.jpg"], probs[SAMPLE_IDS[0]])  # decoded by content, same pixels
    assert probs["grey.jpg"].shape == probs["small.jpg"].shape == (4, 256, 1600)
    # an empty folder, a missing checkpoint, a bad option
    (tmp_path / "empty").mkdir()
    with pytest.raises(inf.InferenceError, match="empty.*no images"):
        inf.run_predict(run_dir, tmp_path / "empty", out, progress=False)
    with pytest.raises(inf.InferenceError, match="nope.ckpt"):
        inf.run_predict(tmp_path / "nope.ckpt", images, out, progress=False)
    with pytest.raises(inf.InferenceError, match="on_error"):
        next(inf.predict(model, images, on_error="ignore"))


def test_evaluation_table_matches_metrics() -> None:
    from steelnb.metrics import iou_dice, kaggle_metric

    rng = np.random.default_rng(0)
    pred = (rng.random((6, 4, 16, 40)) > 0.7).astype(np.uint8)
    truth = (rng.random((6, 4, 16, 40)) > 0.8).astype(np.uint8)
    truth[0] = pred[0] = 0  # an empty image: Dice 1 for all its pairs
    counts = np.stack([pixel_counts(p, t) for p, t in zip(pred, truth)])
    table = evaluation_table({("none", "raw"): counts}).set_index("class")
    ref = iou_dice(pred, truth)
    assert table.loc[["1", "2", "3", "4"], "dice"].tolist() == pytest.approx(ref["dice"])
    assert table.loc["mean", "iou"] == pytest.approx(ref["iou_mean"])
    assert table.loc["mean", "kaggle"] == pytest.approx(kaggle_metric(pred, truth))
    presence = presence_table(counts)
    assert presence["recall"].tolist() == [1.0] * 4  # every image with a defect also has predictions


def test_cli_predict(sample, run_dir, tmp_path, capsys) -> None:
    from steelnb.cli import main

    images, labels = sample
    assert (
        main(
            [
                "predict",
                "--weights",
                str(run_dir),
                "--images",
                str(images),
                "--out",
                str(tmp_path / "o"),
                "--labels",
                str(labels),
                "--tta",
                "hv",
                "--overlays",
                "1",
            ]
        )
        == 0
    )
    assert (tmp_path / "o" / "submission.csv").is_file() and len(
        list((tmp_path / "o" / "overlays").glob("*.png"))
    ) == 1
    assert (
        main(
            [
                "predict",
                "--weights",
                str(tmp_path / "missing"),
                "--images",
                str(images),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "missing: checkpoint or run folder not found" in capsys.readouterr().err


@pytest.mark.slow
def test_tuning_a_trained_synthetic_run(tmp_path) -> None:
    """Train a tiny model on synthetic data, tune on its validation fold, predict with the result."""
    from steelnb.dataset import SteelDataModule
    from steelnb.synthetic import generate
    from steelnb.training import fit

    data = generate(tmp_path / "data", n_images=32, n_test=0, seed=0)
    cfg = TrainConfig(
        data_dir=str(data),
        subset="all",
        height=64,
        width=320,
        encoder="resnet18",
        epochs=2,
        batch_size=8,
        out_dir=str(tmp_path / "weights"),
        run_name="tiny",
        early_stopping_patience=0,
        n_folds=4,
    )
    run = fit(cfg, progress_bar=False)
    params = inf.tune(run, size=(64, 400), progress=False)
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
    labels = inf._by_image(data / "train.csv")
    truth = np.stack(
        [
            [cv2.resize(m, (400, 64), interpolation=cv2.INTER_NEAREST) for m in inf._truth(labels, i)]
            for i in val
        ]
    )
    assert params.score >= kaggle_metric(pp.apply(probs), truth)
    res = inf.run_predict(
        run,
        [data / "train_images" / i for i in val],
        tmp_path / "out",
        labels=data / "train.csv",
        progress=False,
    )
    assert res["postprocess"].endswith("postprocess.yaml") and res["images"] == len(val)
