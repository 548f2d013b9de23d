"""Reading images, the Dataset's tensors and lazy masks, and the DataModule's split."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from factories import data_config

from steelnb.data import labels as lb
from steelnb.data import rle
from steelnb.data.config import TrainConfig
from steelnb.data.dataset import (
    SteelDataModule,
    SteelDataset,
    train_transforms,
    val_transforms,
)
from steelnb.data.images import ImageError, list_images, read_image
from steelnb.data.synthetic import generate

MEAN = np.array([0.485, 0.456, 0.406]) * 255
STD = np.array([0.229, 0.224, 0.225]) * 255


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("ds") / "set", n_images=24, n_test=0, seed=3)


@pytest.fixture(scope="module")
def small_labels(small_set) -> pd.DataFrame:
    return lb.read_labels(small_set / "train.csv")


def test_read_image_jpeg_png_and_grey(tmp_path) -> None:
    grey = (np.arange(40 * 60).reshape(40, 60) % 251).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    (tmp_path / "png_named.jpg").write_bytes((tmp_path / "grey.png").read_bytes())  # PNG under a .jpg name
    for name in ("grey.png", "png_named.jpg"):
        img = read_image(tmp_path / name)
        assert img.shape == (40, 60, 3) and img.dtype == np.uint8
        for ch in range(3):
            np.testing.assert_array_equal(img[..., ch], grey)  # lossless: exact values
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 2] = 200  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), colour)
    assert read_image(tmp_path / "red.png")[0, 0].tolist() == [200, 0, 0]  # returned as RGB


def test_read_image_errors_name_the_file(tmp_path, small_set) -> None:
    src = sorted((small_set / "train_images").iterdir())[0]
    data = src.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cut.jpg.*truncated"):
        read_image(tmp_path / "cut.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ImageError, match="text.jpg"):
        read_image(tmp_path / "text.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty.jpg"):
        read_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageError, match="absent.jpg"):
        read_image(tmp_path / "absent.jpg")
    assert issubclass(ImageError, ValueError)


def test_item_shapes_and_dtypes(small_set, small_labels) -> None:
    ids = list_images(small_set / "train_images")[:4]
    ds = SteelDataset(small_set / "train_images", small_labels, ids, train_transforms(128, 384))
    assert len(ds) == 4
    image, masks = ds[0]
    assert image.shape == (3, 128, 384) and image.dtype == torch.float32
    assert masks.shape == (4, 128, 384) and masks.dtype == torch.float32
    assert set(torch.unique(masks).tolist()) <= {0.0, 1.0}
    raw_image, raw_masks = SteelDataset(small_set / "train_images", small_labels, ids)[0]
    assert raw_image.shape == (3, 256, 1600) and 0 <= raw_image.min() and raw_image.max() <= 1
    assert raw_masks.shape == (4, 256, 1600)


def test_masks_match_rle_at_full_size(small_set, small_labels) -> None:
    ids = sorted(set(small_labels["ImageId"]))[:6]
    ds = SteelDataset(small_set / "train_images", small_labels, ids, val_transforms(256, 1600))
    for i, image_id in enumerate(ids):
        image, masks = ds[i]
        rows = small_labels[small_labels["ImageId"] == image_id]
        expected = lb.image_masks(dict(zip(rows["ClassId"], rows["EncodedPixels"])))
        np.testing.assert_array_equal(masks.numpy().astype(np.uint8), expected)
        # image: ImageNet normalisation of the file's pixels
        raw = read_image(small_set / "train_images" / image_id).astype(np.float64)
        np.testing.assert_allclose(image.numpy().transpose(1, 2, 0), (raw - MEAN) / STD, atol=1e-4)


def test_real_sample_masks(shared_data) -> None:
    root = shared_data / "severstal-sample"
    labels = lb.read_labels(root / "train.csv")
    ids = sorted(set(labels["ImageId"]))[:3]
    ds = SteelDataset(root / "train_images", labels, ids, val_transforms(256, 1600))
    for i, image_id in enumerate(ids):
        _, masks = ds[i]
        for c, enc in labels.loc[labels["ImageId"] == image_id, ["ClassId", "EncodedPixels"]].itertuples(
            index=False
        ):
            assert rle.encode(masks[c - 1].numpy()) == enc


def test_downsized_masks_follow_the_flip(small_set, small_labels) -> None:
    image_id = small_labels["ImageId"].iloc[0]
    ds = SteelDataset(small_set / "train_images", small_labels, [image_id], train_transforms(128, 384))
    _, ref = SteelDataset(small_set / "train_images", small_labels, [image_id], val_transforms(128, 384))[0]
    variants = {tuple(ds[0][1].flatten().tolist()[::97]) for _ in range(16)}
    flips = [ref, ref.flip(-1), ref.flip(-2), ref.flip(-1).flip(-2)]
    assert len(variants) >= 2  # augmentation does change the masks
    for _ in range(8):
        _, m = ds[0]
        assert any(torch.equal(m, f) for f in flips)  # and only by flips


def test_lazy_masks(small_set, small_labels) -> None:
    ids = list_images(small_set / "train_images")
    ds = SteelDataset(small_set / "train_images", small_labels, ids, val_transforms(64, 320))
    stored = [v for enc in ds.encodings.values() for pair in enc for v in pair]
    assert all(isinstance(v, (str, int)) for v in stored)
    assert not any(isinstance(v, (np.ndarray, torch.Tensor)) for v in vars(ds).values())
    assert sum(len(e) for e in ds.encodings.values()) == len(small_labels)
    clean = next(i for i, name in enumerate(ids) if name not in ds.encodings)
    assert ds[clean][1].sum() == 0  # a defect-free image has empty masks


def test_bad_rle_names_the_image(small_set) -> None:
    image_id = list_images(small_set / "train_images")[0]
    bad = pd.DataFrame([(image_id, 2, "409600 5")], columns=lb.COLUMNS)
    with pytest.raises(lb.LabelError, match=f"{image_id} class 2"):
        SteelDataset(small_set / "train_images", bad, [image_id])[0]


def config(data_dir: Path, **kw) -> TrainConfig:
    return data_config(data_dir, **{"n_folds": 4, "fold": 1, **kw})


def test_datamodule_split(small_set) -> None:
    dm = SteelDataModule(config(small_set))
    assert len(dm.table) == 24
    splits = [set(dm.train_ids), set(dm.val_ids), set(dm.test_ids)]
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    assert sorted(dm.train_ids + dm.val_ids + dm.test_ids) == sorted(dm.table["ImageId"])
    assert (len(dm.test_ids), len(dm.val_ids)) == (4, 5)  # 20 % held out, the rest in 4 folds
    again = SteelDataModule(config(small_set))
    assert (again.train_ids, again.val_ids, again.test_ids) == (dm.train_ids, dm.val_ids, dm.test_ids)
    other = SteelDataModule(config(small_set, fold=2))
    assert not set(other.val_ids) & set(dm.val_ids)
    assert other.test_ids == dm.test_ids  # the test split does not move with the fold
    assert set(dm.labels["ImageId"]) <= set(dm.table["ImageId"])
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 64, 320) and y.shape == (4, 4, 64, 320)
    loader = dm.val_dataloader()
    assert loader.num_workers == 0 and not loader.persistent_workers
    assert sum(len(b[0]) for b in loader) == 5
    assert sum(len(b[0]) for b in dm._loader("test")) == 4


def test_datamodule_subsets_cap_and_folds_file(small_set, small_labels, tmp_path) -> None:
    dm = SteelDataModule(config(small_set, subset="balanced", per_class=2))
    chosen = set(dm.table["ImageId"])
    assert chosen <= set(small_labels["ImageId"]) and len(chosen) <= 8
    # all masks of a chosen image are kept
    assert len(dm.labels) == small_labels["ImageId"].isin(chosen).sum()
    dm = SteelDataModule(config(small_set, subset="images", per_class=1, clean_images=3))
    assert (~dm.table["has_defect"]).sum() == 3
    dm = SteelDataModule(config(small_set, max_images=10))
    assert (
        len(dm.train_ids) == 10 and len(dm.val_ids) == 5 and len(dm.test_ids) == 4
    )  # the cap is on training
    assert dm.train_ids == SteelDataModule(config(small_set, max_images=10)).train_ids
    ids = list_images(small_set / "train_images")[:8]
    pd.DataFrame({"ImageId": ids}).to_csv(tmp_path / "subset.csv", index=False)
    pd.DataFrame({"ImageId": ids, "fold": [0, 1, -1, 2] * 2}).to_csv(tmp_path / "folds.csv", index=False)
    dm = SteelDataModule(
        config(small_set, subset=str(tmp_path / "subset.csv"), folds=str(tmp_path / "folds.csv"))
    )
    assert dm.val_ids == ids[1::4] and dm.test_ids == ids[2::4]
    assert dm.train_ids == sorted(ids[0::4] + ids[3::4])
    # a folds file decides validation and test whatever the subset: a smaller subset trains on less
    pd.DataFrame({"ImageId": ids[:1]}).to_csv(tmp_path / "one.csv", index=False)
    dm = SteelDataModule(
        config(small_set, subset=str(tmp_path / "one.csv"), folds=str(tmp_path / "folds.csv"))
    )
    assert dm.train_ids == ids[:1] and dm.val_ids == ids[1::4] and dm.test_ids == ids[2::4]
    pd.DataFrame({"ImageId": ids[:4], "fold": [0, 1, -1, 2]}).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(lb.LabelError, match="no fold for image"):
        SteelDataModule(
            config(small_set, subset=str(tmp_path / "subset.csv"), folds=str(tmp_path / "short.csv"))
        )
    with pytest.raises(lb.LabelError, match="subset="):
        SteelDataModule(config(small_set, subset="nonsense"))


def test_folds_file_errors_name_the_file(small_set, tmp_path) -> None:
    ids = list_images(small_set / "train_images")[:8]
    pd.DataFrame({"ImageId": ids}).to_csv(tmp_path / "subset.csv", index=False)
    cases = {
        "no_test.csv": ([0, 1, 2, 3] * 2, r"no_test.csv: the test split\(s\) are empty"),
        "no_train.csv": ([1, -1] * 4, r"no_train.csv: the train split\(s\) are empty"),
        "text.csv": (["0", "1", "test", "2"] * 2, r"text.csv: fold 'test' is not a whole number"),
    }
    for name, (folds, message) in cases.items():
        pd.DataFrame({"ImageId": ids, "fold": folds}).to_csv(tmp_path / name, index=False)
        with pytest.raises(lb.LabelError, match=message):
            SteelDataModule(
                config(small_set, subset=str(tmp_path / "subset.csv"), folds=str(tmp_path / name))
            )
    # an image in the test split and in a training fold: the overlap is refused, naming both
    frame = pd.DataFrame({"ImageId": ids + ids[:1], "fold": [0, 1, -1, 2] * 2 + [-1]})
    frame.to_csv(tmp_path / "overlap.csv", index=False)
    with pytest.raises(
        lb.LabelError, match=rf"overlap.csv: image {ids[0]} is listed twice \(fold 0 and test\)"
    ):
        SteelDataModule(
            config(small_set, subset=str(tmp_path / "subset.csv"), folds=str(tmp_path / "overlap.csv"))
        )


def test_crop_training_keeps_full_size_validation(small_set) -> None:
    dm = SteelDataModule(config(small_set, crop_width=128))
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 64, 128) and y.shape == (4, 4, 64, 128)
    xv, _ = next(iter(dm.val_dataloader()))
    assert xv.shape[-2:] == (64, 320)


def test_unpadded_sampler_sees_each_image_once() -> None:
    from steelnb.data.dataset import UnpaddedDistributedSampler

    data = list(range(7))
    seen = [list(UnpaddedDistributedSampler(data, 3, r)) for r in range(3)]
    assert sorted(sum(seen, [])) == data and [len(s) for s in seen] == [3, 2, 2]
    assert [len(UnpaddedDistributedSampler(data, 3, r)) for r in range(3)] == [3, 2, 2]


def test_datamodule_workers(small_set) -> None:
    dm = SteelDataModule(config(small_set, num_workers=1))
    loader = dm.train_dataloader()
    assert loader.num_workers == 1 and loader.persistent_workers
    assert loader.pin_memory == torch.cuda.is_available()
    torch.manual_seed(0)
    first = next(iter(loader))
    torch.manual_seed(0)
    again = next(iter(SteelDataModule(config(small_set, num_workers=1)).train_dataloader()))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_augmentation_reproducible_for_a_seed(small_set, small_labels) -> None:
    ids = list_images(small_set / "train_images")[:3]

    def images(seed: int) -> list[torch.Tensor]:
        ds = SteelDataset(small_set / "train_images", small_labels, ids, train_transforms(64, 320, seed=seed))
        return [ds[i % 3][0] for i in range(9)]

    a, b, c = images(1), images(1), images(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


# -- pseudo-labels at a fixed share of each training batch ---------------------------------------------
@pytest.fixture(scope="module")
def pseudo_set(tmp_path_factory) -> Path:
    """Twelve labelled images, six unlabelled test images and a hand-made pseudo-label CSV of the
    test images (four rows each; the first two with a class-2 rectangle) in ``pseudo.csv``."""
    root = generate(tmp_path_factory.mktemp("pl") / "set", n_images=12, n_test=6, seed=4)
    mask = np.zeros((256, 1600), np.uint8)
    mask[40:90, 100:400] = 1
    rows = [
        (image, c, rle.encode(mask) if c == 2 and k < 2 else "")
        for k, image in enumerate(list_images(root / "test_images"))
        for c in (1, 2, 3, 4)
    ]
    pd.DataFrame(rows, columns=lb.COLUMNS).to_csv(root / "pseudo.csv", index=False)
    return root


def pseudo_config(data_dir: Path, **kw) -> TrainConfig:
    return config(data_dir, **{**dict(n_folds=3, pseudo_labels="pseudo.csv", pseudo_share=0.5), **kw})


def test_each_training_batch_holds_the_pseudo_share(pseudo_set) -> None:
    test_images = set(list_images(pseudo_set / "test_images"))
    for share, per_batch in ((0.25, 1), (0.5, 2), (0.75, 3)):
        dm = SteelDataModule(pseudo_config(pseudo_set, pseudo_share=share))
        assert set(dm.pseudo_ids) == test_images
        loader = dm.train_dataloader()
        real, pseudo = set(dm.train_ids), set(dm.pseudo_ids)
        for epoch in (0, 1):
            loader.sampler.set_epoch(epoch)
            batches = [[loader.dataset.image_ids[i] for i in b] for b in loader.batch_sampler]
            # an epoch is one pass over the real training images, at (4 - per_batch) per batch
            assert len(batches) == max(1, len(dm.train_ids) // (4 - per_batch))
            for b in batches:
                assert len(b) == 4 and sum(i in pseudo for i in b) == per_batch
                assert sum(i in real for i in b) == 4 - per_batch
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 64, 320) and y.shape == (4, 4, 64, 320)
    # the pseudo items carry their labels: the masks of a pseudo-labelled image decode
    ds = SteelDataModule(pseudo_config(pseudo_set)).dataset("pseudo")
    first = ds.image_ids.index(sorted(test_images)[0])
    assert ds[first][1][1].sum() > 0 and ds[first][1][[0, 2, 3]].sum() == 0


def test_pseudo_batches_reproducible_with_the_seed_and_split_under_ddp(pseudo_set) -> None:
    from steelnb.data.dataset import PseudoShareSampler

    def batches(seed: int, epoch: int = 0) -> list[list[int]]:
        loader = SteelDataModule(pseudo_config(pseudo_set, seed=seed)).train_dataloader()
        loader.sampler.set_epoch(epoch)
        return [list(b) for b in loader.batch_sampler]

    assert batches(0) == batches(0) and batches(0) != batches(1) and batches(0) != batches(0, epoch=1)
    dm = SteelDataModule(pseudo_config(pseudo_set))
    a, b = (next(iter(SteelDataModule(pseudo_config(pseudo_set)).train_dataloader())) for _ in range(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # same images, same augmentation
    # DDP: each process takes its own batches of the same global list, as many as the others
    n_real, n_pseudo = len(dm.train_ids), len(dm.pseudo_ids)
    data = list(range(n_real + n_pseudo))
    ranks = [PseudoShareSampler(data, n_real, n_pseudo, 2, 1, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    whole = ranks[0].global_batches()
    assert len(ranks[0]) == len(ranks[1]) == len(whole) // 2 * 2
    for r, sampler in enumerate(ranks):
        mine = np.array(list(sampler)).reshape(-1, 2)
        assert (mine == whole[r::2]).all()
        assert ((mine >= n_real).sum(1) == 1).all()  # one pseudo item in each batch of two


def test_pseudo_option_leaves_validation_and_test_alone(pseudo_set) -> None:
    plain = SteelDataModule(config(pseudo_set, n_folds=3))
    dm = SteelDataModule(pseudo_config(pseudo_set))
    assert (dm.train_ids, dm.val_ids, dm.test_ids) == (plain.train_ids, plain.val_ids, plain.test_ids)
    for split in ("val", "test"):
        assert dm.dataset(split).image_ids == plain.dataset(split).image_ids
        ours, theirs = list(dm._loader(split)), list(plain._loader(split))
        assert len(ours) == len(theirs)
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(ours, theirs))
    assert dm.val_dataloader().dataset.image_ids == plain.val_ids
    assert not set(dm.pseudo_ids) & (set(dm.val_ids) | set(dm.test_ids) | set(dm.train_ids))
    assert set(dm.labels["ImageId"]) == set(plain.labels["ImageId"])  # the pseudo labels stay apart


def test_pseudo_options_are_checked(pseudo_set, tmp_path) -> None:
    from steelnb.data.config import ConfigError

    for kw, message in (
        (dict(pseudo_share=1.0), r"pseudo_share=1.0: expected a share of each batch in \[0, 1\)"),
        (dict(pseudo_share=-0.1), "pseudo_share=-0.1"),
        (dict(pseudo_share=0.1), "gives 0 pseudo-labelled image"),
        (dict(pseudo_share=0.9), "gives 4 pseudo-labelled image"),
        (dict(pseudo_labels=""), "pseudo_share=0.5 needs pseudo_labels"),
    ):
        with pytest.raises(ConfigError, match=message):
            pseudo_config(pseudo_set, **kw)
    with pytest.raises(
        ConfigError, match=r"pseudo_labels='nope.csv': .*nope.csv: pseudo-label file not found"
    ):
        SteelDataModule(pseudo_config(pseudo_set, pseudo_labels="nope.csv")).train_dataloader()
    with pytest.raises(ConfigError, match=r"pseudo_images='gone': .*gone: image folder not found"):
        _ = SteelDataModule(pseudo_config(pseudo_set, pseudo_images="gone")).pseudo_ids
    with pytest.raises(ConfigError, match="train_images is the labelled image folder"):
        _ = SteelDataModule(pseudo_config(pseudo_set, pseudo_images="train_images")).pseudo_ids
    # the data module is made without reading the set (evaluating a pseudo-labelled run does not need it)
    SteelDataModule(pseudo_config(pseudo_set, pseudo_labels="nope.csv"))
    # a pseudo-label file that names a validation image (copied into the pseudo folder) is refused
    dm = SteelDataModule(pseudo_config(pseudo_set))
    folder = tmp_path / "pl_images"
    folder.mkdir()
    for name in list_images(pseudo_set / "test_images"):
        (folder / name).write_bytes((pseudo_set / "test_images" / name).read_bytes())
    leaked = dm.val_ids[0]
    (folder / leaked).write_bytes((pseudo_set / "train_images" / leaked).read_bytes())
    frame = pd.read_csv(pseudo_set / "pseudo.csv", dtype=str, keep_default_na=False)
    frame = pd.concat([frame, pd.DataFrame([(leaked, "1", "")], columns=lb.COLUMNS)])
    frame.to_csv(tmp_path / "leak.csv", index=False)
    with pytest.raises(
        lb.LabelError,
        match=f"leak.csv: 1 pseudo-labelled image.s. are in the validation split, first {leaked}",
    ):
        _ = SteelDataModule(
            pseudo_config(pseudo_set, pseudo_labels=str(tmp_path / "leak.csv"), pseudo_images=str(folder))
        ).pseudo_ids
    frame.iloc[:-1].assign(ImageId=lambda f: f["ImageId"].where(f.index != 0, "missing.jpg")).to_csv(
        tmp_path / "absent.csv", index=False
    )
    with pytest.raises(lb.LabelError, match="absent.csv: 1 pseudo-labelled image.s. absent from"):
        _ = SteelDataModule(pseudo_config(pseudo_set, pseudo_labels=str(tmp_path / "absent.csv"))).pseudo_ids


def test_without_a_folds_file_the_sealed_images_are_the_test_split(tmp_path) -> None:
    """A run that cuts its own folds (no folds file) tests on a generated set's sealed images, as
    02's folds do, so its test split is the one every other run of that set reports on."""
    from steelnb.data.config import TrainConfig
    from steelnb.data.dataset import SteelDataModule
    from steelnb.data.synthetic import generate, sealed_ids

    data = generate(tmp_path / "synthetic", n_images=30, n_test=0, seed=2, class_mix="study", sealed=10)
    dm = SteelDataModule(TrainConfig(data_dir=str(data), subset="all", folds="", height=32, width=192))
    assert sorted(dm.test_ids) == sorted(sealed_ids(data))
    assert not set(dm.train_ids) & set(dm.test_ids) and not set(dm.val_ids) & set(dm.test_ids)
