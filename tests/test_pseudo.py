"""Pseudo-labels: the confidence rule, the no-leak guarantee, and the set feeding training batches."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from factories import data_config

from steelnb.data import labels as lb
from steelnb.data import rle
from steelnb.data.config import TrainConfig
from steelnb.data.dataset import SteelDataModule
from steelnb.data.images import list_images
from steelnb.data.labels import summary_path
from steelnb.data.synthetic import generate
from steelnb.winners.pseudo import PseudoLabelError, exclusive_masks, make_pseudo_labels, select_confident

torch.set_num_threads(1)

#: head biases (logits) of the tiny models: class 1 certain everywhere, the others certainly absent
CLASS1 = [10.0, -10.0, -10.0, -10.0]
UNSURE = [-10.0, -10.0, -10.0, -10.0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Ten labelled train images and six unlabelled test images (synthetic, seed 5)."""
    return generate(tmp_path_factory.mktemp("pseudo") / "set", n_images=10, n_test=6, seed=5)


def run_config(data_dir: Path, **kw) -> TrainConfig:
    return data_config(data_dir, **{"n_folds": 3, **kw})


def tiny_run(folder: Path, data_dir: Path, bias: list[float]) -> Path:
    """A run folder (best.ckpt, config.yaml on ``data_dir``) of a resnet18 Unet whose logits are
    ``bias`` at every pixel (head weights zeroed)."""
    from steelnb.model.models import build_model

    torch.manual_seed(0)
    cfg = run_config(data_dir)
    model = build_model("Unet", "resnet18", encoder_weights=None, classes=4)
    with torch.no_grad():
        model.segmentation_head[0].weight.zero_()
        model.segmentation_head[0].bias.copy_(torch.tensor(bias))
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"config": cfg.to_dict()},
        },
        folder / "best.ckpt",
    )
    cfg.to_yaml(folder / "config.yaml")
    return folder


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "class1": tiny_run(root / "class1", data, CLASS1),
        "other": tiny_run(root / "other", data, [-10.0, -10.0, 10.0, -10.0]),
    }


# -- the rule -----------------------------------------------------------------------------------------
def test_select_confident_keeps_images_confident_and_agreeing_in_all_four_classes() -> None:
    n, h, w = 7, 4, 6
    probs = np.zeros((n, 4, h, w), np.float32)
    cls = np.full((n, 4), 0.01, np.float32)
    # 0: class 1 present (0.99) with a mask, the rest absent with none -> kept
    cls[0, 0], probs[0, 0, :2, :2] = 0.99, 0.9
    # 1: class 2 at 0.5 (unsure) -> dropped, whatever the masks
    cls[1, 1] = 0.5
    # 2: class 3 at 0.97 but its mask is empty -> the segmentation disagrees
    cls[2, 2] = 0.97
    # 3: every class absent but class 4 has mask pixels -> disagrees
    probs[3, 3, 1, 1] = 0.8
    # 4: every class absent, no mask -> kept (a confident defect-free image)
    # 5: exactly at the bounds (>= hi, <= lo) -> kept
    cls[5] = [0.95, 0.05, 0.05, 0.05]
    probs[5, 0, 0, 0] = 0.6
    # 6: class 4 at 0.96 and class 3 at 0.96, both with masks -> kept
    cls[6, 2:], probs[6, 2, 0, :] = 0.96, 0.7
    probs[6, 3, 3, :] = 0.7
    keep = select_confident(cls, probs)
    assert keep.tolist() == [True, False, False, False, True, True, True]
    assert keep.shape == (n,) and keep.dtype == bool
    # the same from areas (N, C) with class probabilities
    areas = exclusive_masks(probs).sum((2, 3))
    assert select_confident(cls, areas).tolist() == keep.tolist()
    # uint8 x255 probabilities (predict(quantize=True)) give the same answer
    assert select_confident(cls, (probs * 255).round().astype(np.uint8)).tolist() == keep.tolist()
    # min_area=2: a one-pixel mask counts as empty (image 5 loses its class 1, image 3 its stray class 4)
    assert select_confident(cls, probs, min_area=2).tolist() == [True, False, False, True, True, False, True]
    # tighter hi: 0.95 and 0.96 are no longer confident
    assert select_confident(cls, probs, hi=0.98).tolist() == [True, False, False, False, True, False, False]


def test_select_confident_falls_back_to_the_largest_pixel_probability() -> None:
    """Without class probabilities the class's largest pixel probability plays the image-level one."""
    probs = np.zeros((4, 4, 3, 3), np.float32)
    probs[0, 0, 1, 1] = 0.99  # one confident pixel of class 1, the rest ~0: kept
    probs[1, 1, 0, 0] = 0.6  # class 2 peaks at 0.6: unsure, dropped
    probs[2] = 0.01  # everything confidently absent: kept
    probs[3, 2] = 0.03
    probs[3, 2, 2, 2] = 0.97  # class 3 at 0.97, the rest absent: kept
    assert select_confident(None, probs).tolist() == [True, False, True, True]
    with pytest.raises(PseudoLabelError, match="mask areas"):
        select_confident(None, probs.sum((2, 3)))
    with pytest.raises(PseudoLabelError, match="lo < hi"):
        select_confident(None, probs, hi=0.05, lo=0.95)
    with pytest.raises(PseudoLabelError, match=r"expected the same \(N, C\)"):
        select_confident(np.zeros((4, 3)), probs)


def test_exclusive_masks_give_a_pixel_to_one_class() -> None:
    """Two classes above the threshold on one pixel: the more probable keeps it, so the labels decode."""
    probs = np.zeros((1, 4, 2, 2), np.float32)
    probs[0, 0] = [[0.9, 0.6], [0.2, 0.0]]
    probs[0, 1] = [[0.7, 0.8], [0.0, 0.0]]
    masks = exclusive_masks(probs)
    assert masks[0, 0].tolist() == [[True, False], [False, False]]
    assert masks[0, 1].tolist() == [[False, True], [False, False]]
    assert masks.sum(1).max() == 1


# -- making the set -----------------------------------------------------------------------------------
def test_pseudo_labels_never_hold_a_labelled_image(data, runs, tmp_path) -> None:
    """The no-leak guarantee: the labelled folder is refused, a labelled image (the run's train,
    validation or test split) among the unlabelled ones is refused or left out, and the CSV's ids
    all come from test_images, disjoint from the run's three splits."""
    test_ids = list_images(data / "test_images")
    dm = SteelDataModule(run_config(data))
    labelled = set(dm.train_ids) | set(dm.val_ids) | set(dm.test_ids)
    assert dm.val_ids and dm.test_ids and labelled == set(list_images(data / "train_images"))

    with pytest.raises(PseudoLabelError, match="train_images: this is the labelled image folder"):
        make_pseudo_labels(runs["class1"], data / "train_images", tmp_path / "no.csv")
    # a copy of the labelled folder elsewhere: refused by its ids
    shutil.copytree(data / "train_images", tmp_path / "copy")
    with pytest.raises(PseudoLabelError, match="copy: 10 image.s. are labelled"):
        make_pseudo_labels(runs["class1"], tmp_path / "copy", tmp_path / "no.csv")
    # the unlabelled folder with one validation and one test-split image slipped in
    mixed = tmp_path / "mixed"
    shutil.copytree(data / "test_images", mixed)
    for image in (dm.val_ids[0], dm.test_ids[0]):
        shutil.copy(data / "train_images" / image, mixed / image)
    with pytest.raises(PseudoLabelError, match="2 image.s. are labelled"):
        make_pseudo_labels(runs["class1"], mixed, tmp_path / "no.csv")
    assert not (tmp_path / "no.csv").exists() and not summary_path(tmp_path / "no.csv").exists()

    out = tmp_path / "pseudo" / "labels.csv"
    summary = make_pseudo_labels(runs["class1"], mixed, out, on_labelled="skip", batch_size=4)
    assert summary["labelled_left_out"] == 2 and summary["seen"] == len(test_ids)
    ids = set(pd.read_csv(out, dtype=str, keep_default_na=False)["ImageId"])
    assert ids == set(test_ids)  # every test image is confident for this model
    assert not ids & labelled
    assert not ids & (set(dm.val_ids) | set(dm.test_ids))

    # labelled ids given by hand are refused too (here: pretend two test images were labelled)
    with pytest.raises(PseudoLabelError, match=f"first {sorted(test_ids)[0]}"):
        make_pseudo_labels(
            runs["class1"], data / "test_images", tmp_path / "no.csv", labelled_ids=test_ids[:2]
        )
    # a model without a config and no labelled ids: nothing to check against, refused
    from steelnb.judge.inference import load

    model, info = load(runs["class1"])
    bare = SimpleNamespace(**{**vars(info), "config": None, "path": None})
    with pytest.raises(
        PseudoLabelError, match="model 0: cannot tell which images are labelled .it has no config."
    ):
        make_pseudo_labels([(model, bare)], data / "test_images", tmp_path / "no.csv")
    # a run whose data folder is not here: its labelled images are unknown, refused unless given
    moved = tiny_run(tmp_path / "moved", tmp_path / "gone", CLASS1)
    with pytest.raises(PseudoLabelError, match=r"moved: cannot tell .*gone/train_images is not here"):
        make_pseudo_labels(moved, data / "test_images", tmp_path / "no.csv")
    done = make_pseudo_labels(
        [(model, bare)], data / "test_images", tmp_path / "ok.csv", labelled_ids=sorted(labelled)
    )
    assert done["kept"] == len(test_ids)


def test_pseudo_label_file_and_summary(data, runs, tmp_path) -> None:
    """Kept images have four rows (RLE where the class is present, empty elsewhere) that
    read_labels reads; the JSON summary says which runs, thresholds and counts."""
    test_ids = list_images(data / "test_images")
    out = tmp_path / "pl.csv"
    summary = make_pseudo_labels(runs["class1"], data / "test_images", out, batch_size=4)
    raw = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(raw.columns) == lb.COLUMNS and len(raw) == 4 * len(test_ids)
    tidy = lb.read_labels(out)
    assert set(tidy["ClassId"]) == {1} and set(tidy["ImageId"]) == set(test_ids)
    full = np.ones((256, 1600), np.uint8)
    assert all(rle.decode(e).sum() == full.sum() for e in tidy["EncodedPixels"])  # class 1 everywhere
    on_disk = json.loads(summary_path(out).read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert summary["runs"] == [str(runs["class1"])] and summary["confidence"] == "largest pixel probability"
    assert (summary["seen"], summary["kept"], summary["clean"]) == (6, 6, 0)
    assert summary["per_class"] == {"1": 6, "2": 0, "3": 0, "4": 0}
    assert (summary["hi"], summary["lo"], summary["threshold"]) == (0.95, 0.05, 0.5)

    # two runs are averaged: class 1 at ~1 and ~0 -> ~0.5, and class 3 likewise: nothing is confident
    both = make_pseudo_labels([runs["class1"], runs["other"]], data / "test_images", tmp_path / "two.csv")
    assert both["kept"] == 0 and len(both["runs"]) == 2
    assert pd.read_csv(tmp_path / "two.csv").empty


def test_class_probabilities_drive_the_choice(data, runs, tmp_path, monkeypatch) -> None:
    """With a classification head (Batch.class_probs) the head's probability decides, and the
    segmentation must agree; a run without a head contributes its largest pixel probability."""
    import steelnb.judge.inference as inference

    real = inference.predict
    heads = {
        "class1": np.array([0.99, 0.01, 0.01, 0.01], np.float32),  # agrees with its masks
        "other": np.array([0.01, 0.01, 0.5, 0.01], np.float32),  # unsure of class 3
    }

    def with_head(model, images, *args, **kw):
        which = "class1" if float(model.segmentation_head[0].bias[0].detach()) > 0 else "other"
        for batch in real(model, images, *args, **kw):
            yield SimpleNamespace(
                ids=batch.ids,
                probs=batch.probs,
                skipped=batch.skipped,
                class_probs=np.tile(heads[which], (len(batch.ids), 1)),
            )

    monkeypatch.setattr(inference, "predict", with_head)
    one = make_pseudo_labels(runs["class1"], data / "test_images", tmp_path / "a.csv")
    assert one["kept"] == 6 and one["confidence"] == "classification head"
    other = make_pseudo_labels(runs["other"], data / "test_images", tmp_path / "b.csv")
    assert other["kept"] == 0  # its masks are confident, its head is not
    heads["class1"] = np.array([0.01, 0.01, 0.01, 0.01], np.float32)  # the head says clean, masks say class 1
    assert make_pseudo_labels(runs["class1"], data / "test_images", tmp_path / "c.csv")["kept"] == 0


# -- training on it -----------------------------------------------------------------------------------
def test_training_batches_draw_the_pseudo_share_and_nothing_else_changes(data, runs, tmp_path) -> None:
    out = tmp_path / "pl.csv"
    make_pseudo_labels(runs["class1"], data / "test_images", out)
    plain = SteelDataModule(run_config(data))
    dm = SteelDataModule(run_config(data, pseudo_labels=str(out), pseudo_share=0.5))
    assert set(dm.pseudo_ids) == set(list_images(data / "test_images"))
    assert not set(dm.pseudo_ids) & (set(dm.train_ids) | set(dm.val_ids) | set(dm.test_ids))
    assert (dm.train_ids, dm.val_ids, dm.test_ids) == (plain.train_ids, plain.val_ids, plain.test_ids)
    info = dm.pseudo_info
    assert info is not None and (info["n_images"], info["per_batch"], info["share"]) == (6, 2, 0.5)
    assert info["runs"] == [str(runs["class1"])]
    loader = dm.train_dataloader()
    pseudo = set(dm.pseudo_ids)
    batches = [[loader.dataset.image_ids[i] for i in b] for b in loader.batch_sampler]
    assert batches and all(len(b) == 4 and sum(i in pseudo for i in b) == 2 for b in batches)
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 64, 320) and y.shape == (4, 4, 64, 320)
    assert plain.pseudo_ids == [] and plain.pseudo_info is None
