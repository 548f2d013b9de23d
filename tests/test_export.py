"""``steelnb export`` and ``steelnb predict --model``: the ONNX graph against torch (probabilities
within 1e-4, the same submission and overlays row by row and byte by byte) on synthetic images and
on the real Severstal files in ../shared (skipped without them); the metadata and model card; a
classifier head and an ensemble as one graph; and bad input (an untuned run, missing or mismatched
metadata, images of the wrong size) named in the error, with nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from steelnb.cli import main
from steelnb.judge import evaluation
from steelnb.judge import postprocess as pp
from steelnb.judge.ensemble import load_ensemble
from steelnb.judge.export import METRIC_KEYS, export_runs
from steelnb.judge.exported import ExportError, load_exported, predict_exported
from steelnb.judge.inference import InferenceError
from steelnb.judge.predict_run import run_predict

torch.set_num_threads(1)
PARAMS = pp.PostParams(classes=(pp.ClassParams(0.45, 100),) * 4)
REAL_IDS = ["000a4bcdd.jpg", "01fd50e68.jpg", "0a058fcb6.jpg"]


def _evaluated(run: Path, params: pp.PostParams = PARAMS, tta: str = "h") -> Path:
    """A run folder with tuned post-processing and the metrics.json test block evaluate_run writes."""
    params.to_yaml(run)
    counts = np.zeros((6, 4, 3), np.int64)
    counts[::2, 2] = (80, 10, 20)  # three images with a class-3 defect found in part
    test = evaluation.summarize(counts, n_boot=200)
    test.update(split="test", tta=tta, n_val_tuned=5)
    data = {"kind": "synthetic", "subset": "all", "n_train": 20, "n_val": 5, "n_test": 6, "test_split": "abc"}
    code = {"commit": "f" * 40, "dirty": False}
    metrics = {"run": run.name, "test": test, "postprocess": params.to_dict(), "data": data, "code": code}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def _sharp(run: Path, images: list[Path]) -> Path:
    """Rescale the random run's segmentation head so that its probabilities look like a trained
    model's: near 0 on most of the sheet, above the threshold on blobs (the 0.7 % upper tail of
    each class's logits on ``images``), steep between. A random head gives ~0.5 everywhere, where
    a 1e-6 difference flips pixels lying on the threshold; a trained model has few of them."""
    import cv2

    from steelnb.data.images import IMAGENET_MEAN, IMAGENET_STD, read_image
    from steelnb.judge.inference import load

    model, _ = load(run)
    x = np.stack([cv2.resize(read_image(p), (320, 64), interpolation=cv2.INTER_LINEAR) for p in images])
    x = (x / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    with torch.no_grad():
        out = model(torch.tensor(x, dtype=torch.float32).permute(0, 3, 1, 2))
    logits = (out[0] if isinstance(out, tuple) else out).transpose(0, 1).reshape(4, -1)
    mean, std = logits.mean(1), logits.std(1)
    ckpt = torch.load(run / "best.ckpt", weights_only=True)
    state = ckpt["state_dict"]
    scale = 4.0 / std
    state["model.segmentation_head.0.weight"] *= scale.view(-1, 1, 1, 1)
    state["model.segmentation_head.0.bias"] = (state["model.segmentation_head.0.bias"] - mean) * scale - 10.0
    torch.save(ckpt, run / "best.ckpt")
    return run


@pytest.fixture(scope="module")
def exported(make_tiny_run, synthetic_data, tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, its export's model.onnx): the tiny random run, sharpened, evaluated with TTA h."""
    run = make_tiny_run(tmp_path_factory.mktemp("export") / "tiny")
    run = _evaluated(_sharp(run, _images(synthetic_data)))
    return run, export_runs([run], run.parent / "out" / "model.onnx")["model"]


def _images(data: Path, n: int = 6) -> list[Path]:
    return sorted((data / "train_images").glob("*.jpg"))[:n]


def _frame(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _max_diff(run: Path | list[Path], model: Path, images: list[Path], tta: str) -> float:
    """Largest |onnxruntime - torch| of the probabilities at 256 x 1600 (and class probabilities);
    other batch sizes on the two sides (the graph's batch axis is dynamic)."""
    torch_ens = load_ensemble([run] if isinstance(run, Path) else run, "cpu")
    sides = []
    for ens, batch in ((torch_ens, 2), (load_exported(model).ensemble, 3)):
        batches = list(ens.predict(images, tta, batch_size=batch, device="cpu", progress=False))
        ids = [i for b in batches for i in b.ids]
        probs = np.concatenate([b.probs for b in batches])
        cls = [b.class_probs for b in batches if b.class_probs is not None]
        sides.append((ids, probs, np.concatenate(cls) if cls else np.zeros(0)))
    (ids_a, a, ca), (ids_b, b, cb) = sides
    assert ids_a == ids_b == [p.name for p in images] and a.shape == b.shape and ca.shape == cb.shape
    _TORCH_PROBS.update(zip(ids_a, a))
    return max(float(np.abs(a - b).max()), float(np.abs(ca - cb).max(initial=0.0)))


_TORCH_PROBS: dict[str, np.ndarray] = {}  # torch's probabilities (4, 256, 1600) of the images compared


def _assert_same_rows(a: pd.DataFrame, b: pd.DataFrame, threshold: float = 0.45) -> int:
    """Submissions identical row by row, but for pixels on the threshold: a pixel may differ only
    where torch's probability lies within the parity bound (1e-4) of the threshold's rounding point
    (masks are cut from probabilities quantised to 1/255), and at most 10 of them an image: no
    implementation can promise more for a pixel that sits on the threshold. Returns their count
    (0-2 on the images here; a difference in the recipe would move thousands, off the threshold)."""
    from steelnb.data import rle

    assert a[["ImageId", "ClassId"]].equals(b[["ImageId", "ClassId"]])
    edge, flipped = (np.floor(threshold * 255) + 0.5) / 255, 0
    for (image, enc_a, c), enc_b in zip(a.itertuples(index=False), b["EncodedPixels"]):
        if enc_a == enc_b:
            continue
        where = rle.decode(enc_a) != rle.decode(enc_b)
        p = _TORCH_PROBS[image][int(c) - 1][where]
        assert np.abs(p - edge).max() <= 1e-4, (
            f"{image} class {c}: {where.sum()} pixels differ off the threshold"
        )
        flipped += int(where.sum())
    print(f"pixels on the threshold that differ: {flipped} over {a['ImageId'].nunique()} images")
    assert flipped <= 10 * a["ImageId"].nunique()
    return flipped


def _same_prediction(run: Path | list[Path], model: Path, images: Path, out: Path, **kw) -> pd.DataFrame:
    """run_predict (torch) and predict_exported (onnxruntime): identical submissions and overlays."""
    want = run_predict(run, images, out / "torch", tta="h", overlays=2, progress=False, **kw)
    got = predict_exported(model, images, out / "onnx", overlays=2, progress=False)
    a, b = _frame(want["submission"]), _frame(got["submission"])
    flipped = _assert_same_rows(a, b)
    assert [p.name for p in want["overlays"]] == [p.name for p in got["overlays"]]
    if not flipped:  # overlays are drawn from the submission's rows: the same rows, the same bytes
        assert [p.read_bytes() for p in want["overlays"]] == [p.read_bytes() for p in got["overlays"]]
    assert got["tta"] == "h" and got["postprocess"].endswith("model.json")
    return b


@pytest.mark.slow  # 5-14 s on two cores (trains, exports or starts a process): CI runs it, the fast loop does not
def test_parity_on_synthetic_images(exported, synthetic_data, tmp_path) -> None:
    run, model = exported
    diff = _max_diff(run, model, _images(synthetic_data), "h")
    assert diff <= 1e-4, diff
    frame = _same_prediction(run, model, synthetic_data / "train_images", tmp_path)
    assert (frame["EncodedPixels"] != "").sum() > 0  # masks to compare, not four empty rows an image


@pytest.mark.slow  # 5-14 s on two cores (trains, exports or starts a process): CI runs it, the fast loop does not
def test_parity_on_real_images(exported, shared_data, tmp_path) -> None:
    """The real train sample and unlabelled test sheets (JPEGs from the competition)."""
    run, model = exported
    folder = tmp_path / "real"
    folder.mkdir()
    tests = sorted((shared_data / "severstal-test-sample" / "test_images").glob("*.jpg"))[:3]
    for path in [shared_data / "severstal-sample" / "train_images" / i for i in REAL_IDS] + tests:
        shutil.copy(path, folder / path.name)
    assert _max_diff(run, model, sorted(folder.iterdir()), "h") <= 1e-4
    frame = _same_prediction(run, model, folder, tmp_path)
    assert len(frame) == 4 * 6 and (frame["EncodedPixels"] != "").sum() > 0


def test_metadata_and_model_card(exported) -> None:
    run, model = exported
    meta = json.loads(model.with_suffix(".json").read_text())
    assert meta["input"]["shape"] == ["batch", 3, 64, 320] and meta["image_size"] == [256, 1600]
    assert meta["input"]["normalisation"]["mean"] == [123.675, 116.28, 103.53]
    assert meta["class_names"] == {"1": "class 1", "2": "class 2", "3": "class 3", "4": "class 4"}
    assert pp.PostParams.from_dict(meta["postprocess"]).classes == PARAMS.classes
    assert meta["tta"] == {"name": "h", "flips": [[], [-1]], "how": meta["tta"]["how"]}
    assert meta["gate"]["active"] is False and meta["members"][0]["encoder"] == "resnet18"
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert meta["metrics"] == {k: test.get(k) for k in METRIC_KEYS} and meta["metrics"]["split"] == "test"
    assert meta["metrics"]["kaggle_ci95"] and meta["metrics"]["all_empty_kaggle"] == pytest.approx(
        21 / 24
    )  # 3 of 24 pairs with a defect
    assert meta["trained_on"]["kind"] == "synthetic" and meta["training_code"]["commit"] == "f" * 40
    assert meta["exported_by"]["versions"]["steelnb"] and "commit" in meta["exported_by"]
    assert meta["exported_by"]["versions"]["onnxruntime"] and meta["export_parity_max_diff"] <= 1e-4
    card = model.with_suffix(".md").read_text()
    kaggle = f"{test['kaggle']:.3f} [{test['kaggle_ci95'][0]:.3f}, {test['kaggle_ci95'][1]:.3f}]"
    assert kaggle in card and "**test** split (6 images" in card
    assert "predicting nothing (baseline), Kaggle metric | 0.875" in card
    assert "## Must not be used for" in card and "**Synthetic images**" in card


@pytest.mark.slow  # 5-14 s on two cores (trains, exports or starts a process): CI runs it, the fast loop does not
def test_a_classifier_head_exports_its_gate(make_tiny_run, synthetic_data, tmp_path) -> None:
    gated = pp.PostParams(classes=(pp.ClassParams(0.45, 100, cls_threshold=0.5),) * 4)
    images = _images(synthetic_data, 3)
    run = _evaluated(_sharp(make_tiny_run(tmp_path / "gate", classifier=True, seed=1), images), gated)
    model = export_runs([run], tmp_path / "gate.onnx")["model"]
    meta = json.loads(model.with_suffix(".json").read_text())
    assert list(meta["outputs"]) == ["masks", "classes"] and meta["gate"]["active"]
    assert _max_diff(run, model, images, "h") <= 1e-4
    want = run_predict(run, images, tmp_path / "torch", tta="h", progress=False)
    got = predict_exported(model, images, tmp_path / "onnx", progress=False)
    assert want["screened"] == got["screened"]
    _assert_same_rows(_frame(want["submission"]), _frame(got["submission"]))


@pytest.mark.slow  # 5-14 s on two cores (trains, exports or starts a process): CI runs it, the fast loop does not
def test_an_ensemble_is_one_graph(make_tiny_run, synthetic_data, tmp_path) -> None:
    images = _images(synthetic_data, 3)
    runs = [_sharp(make_tiny_run(tmp_path / f"m{s}", seed=s), images) for s in (2, 3)]
    folder = tmp_path / "ensemble"
    folder.mkdir()
    PARAMS.to_yaml(folder)
    (folder / "members.json").write_text(json.dumps({"members": [], "tta": "h"}))
    with pytest.raises(ExportError, match="ensemble's post-processing"):
        export_runs(runs, tmp_path / "no.onnx")
    model = export_runs(runs, tmp_path / "ens.onnx", postprocess=folder)["model"]
    meta = json.loads(model.with_suffix(".json").read_text())
    assert [m["weight"] for m in meta["members"]] == [0.5, 0.5] and meta["metrics"] is None
    assert _max_diff(runs, model, images, "h") <= 1e-4
    want = run_predict(runs, images, tmp_path / "torch", tta="h", postprocess=folder, progress=False)
    got = predict_exported(model, images, tmp_path / "onnx", progress=False)
    _assert_same_rows(_frame(want["submission"]), _frame(got["submission"]))


def test_an_untuned_run_is_not_exported(make_tiny_run, tmp_path) -> None:
    run = make_tiny_run(tmp_path / "untuned")
    out = tmp_path / "out" / "model.onnx"
    with pytest.raises(ExportError, match=r"untuned: no tuned post-processing \(postprocess.yaml\)"):
        export_runs([run], out)
    _evaluated(run, tta="h")
    with pytest.raises(ExportError, match="tuned with TTA h .* with TTA none would apply"):
        export_runs([run], out, tta="none")
    assert not out.parent.exists() or not list(out.parent.iterdir())  # nothing written, no temporary left


def test_missing_or_mismatched_metadata(exported, synthetic_data, tmp_path) -> None:
    _, model = exported
    images, out = synthetic_data / "train_images", tmp_path / "pred"
    alone = tmp_path / "alone" / "model.onnx"
    alone.parent.mkdir()
    shutil.copy(model, alone)
    with pytest.raises(ExportError, match=r"alone/model.json: metadata file not found beside model.onnx"):
        predict_exported(alone, images, out)
    meta = json.loads(model.with_suffix(".json").read_text())
    alone.with_suffix(".json").write_text(json.dumps({**meta, "model_sha256": "0" * 64}))
    with pytest.raises(ExportError, match=r"alone/model.json: written for another model file"):
        predict_exported(alone, images, out)
    alone.with_suffix(".json").write_text(json.dumps({**meta, "input": {**meta["input"], "width": 416}}))
    with pytest.raises(ExportError, match=r"alone/model.onnx: graph input .* does not match model.json"):
        predict_exported(_with_sha(alone), images, out)
    del meta["postprocess"]
    alone.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ExportError, match=r"alone/model.json: missing field\(s\) postprocess"):
        predict_exported(alone, images, out)
    assert not out.exists()  # every check before the output folder is made


def _with_sha(model: Path) -> Path:
    """The metadata beside ``model`` given the model's real SHA-256 (its other fields kept)."""
    from steelnb.judge.exported import sha256

    meta_file = model.with_suffix(".json")
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "model_sha256": sha256(model)}))
    return model


def test_images_of_the_wrong_size(exported, odd_images, tmp_path) -> None:
    _, model = exported
    folder, names = odd_images
    small = [folder / "small.jpg"]
    with pytest.raises(
        InferenceError, match=r"small.jpg: image is 128x800 \(height x width\); expected 256x1600"
    ):
        predict_exported(model, small, tmp_path / "a", progress=False)
    assert not (tmp_path / "a" / "submission.csv").exists()
    assert not (tmp_path / "a" / "submission.partial.csv").exists()
    res = predict_exported(model, [folder / n for n in names] + small, tmp_path / "b", on_error="skip")
    skipped = pd.read_csv(res["skipped_csv"])
    assert res["images"] == 4 and skipped["ImageId"].tolist() == ["small.jpg"]


def test_cli_export_and_predict(exported, synthetic_data, tmp_path, capsys) -> None:
    run, model = exported
    out = tmp_path / "cli" / "m.onnx"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".json").is_file() and out.with_suffix(".md").is_file()
    images = synthetic_data / "train_images"
    assert main(["predict", "--model", str(out), "--images", str(images), "--out", str(tmp_path / "p")]) == 0
    assert "tta: h" in capsys.readouterr().out
    pd.testing.assert_frame_equal(
        _frame(tmp_path / "p" / "submission.csv"), _frame(_submission(model, images, tmp_path))
    )
    assert (
        main(["predict", "--model", str(tmp_path / "none.onnx"), "--images", str(images), "--out", "x"]) == 2
    )
    assert "none.onnx: model file not found" in capsys.readouterr().err


def _submission(model: Path, images: Path, tmp_path: Path) -> Path:
    return predict_exported(model, images, tmp_path / "direct", progress=False)["submission"]
