"""Overlays: outlines in the class colours, vertical truth/prediction panels, PNG files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from steelnb.data import rle
from steelnb.judge import viz


def _image_and_masks() -> tuple[np.ndarray, np.ndarray]:
    image = np.full((64, 320, 3), 60, np.uint8)
    masks = np.zeros((4, 64, 320), np.uint8)
    masks[0, 10:30, 20:60] = 1
    masks[2, 30:60, 200:300] = 1
    return image, masks


def test_outline_colours_follow_the_class() -> None:
    image, masks = _image_and_masks()
    out = viz.draw_outlines(image, masks, thickness=1, fill_alpha=0.0)
    assert out.shape == (64, 320, 3) and out.dtype == np.uint8
    assert tuple(out[10, 40]) == viz.class_rgb(0)  # top edge of the class-1 box
    assert tuple(out[45, 200]) == viz.class_rgb(2)  # left edge of the class-3 box
    assert tuple(out[20, 40]) == (60, 60, 60)  # inside, no fill: untouched
    assert tuple(out[5, 5]) == (60, 60, 60)
    assert np.array_equal(image, np.full((64, 320, 3), 60, np.uint8))  # input not modified
    filled = viz.draw_outlines(image[..., 0], masks, fill_alpha=0.5)  # grey input accepted
    assert filled[20, 40, 0] > 60 and filled.shape == (64, 320, 3)


def test_outlines_resize_masks_to_the_image() -> None:
    image, masks = _image_and_masks()
    big = np.zeros((4, 128, 640), np.uint8)
    big[0, 20:60, 40:120] = 1
    out = viz.draw_outlines(image, big, thickness=1, fill_alpha=0.0)
    assert tuple(out[10, 40]) == viz.class_rgb(0)


def test_colours_distinct_and_consistent() -> None:
    assert len(set(viz.CLASS_COLORS)) == 4
    handles = viz.legend_handles()
    assert [h.get_label() for h in handles] == ["class 1", "class 2", "class 3", "class 4"]


def test_overlay_figure_stacks_truth_above_prediction(tmp_path) -> None:
    image, masks = _image_and_masks()
    pred = masks.copy()
    pred[1, 0:5, 0:5] = 1
    fig = viz.overlay_figure(image, pred, masks, title="a.jpg")
    assert isinstance(fig, Figure)
    axes = fig.axes
    assert [a.get_title(loc="left") for a in axes] == ["a.jpg  truth", "a.jpg  prediction"]
    assert axes[0].get_position().y0 > axes[1].get_position().y0  # truth on top
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["class 1", "class 2", "class 3"]
    path = viz.save_figure(fig, tmp_path / "a.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    only_pred = viz.overlay_figure(image, pred)
    assert len(only_pred.axes) == 1
    paths = viz.save_overlays([("b.jpg", image, pred, None), ("c.jpg", image, None, masks)], tmp_path / "ov")
    assert [p.name for p in paths] == ["b.png", "c.png"] and all(p.stat().st_size > 1000 for p in paths)


def test_show_examples_on_real_images(shared_data) -> None:
    pytest.importorskip("steelnb.data.dataset")
    sample = shared_data / "severstal-sample"
    labels = pd.read_csv(sample / "train.csv")
    ids = ["000a4bcdd.jpg", "0a058fcb6.jpg"]
    truth = viz.masks_from_labels(labels, ids[0])
    assert truth[0].sum() == rle.area(labels.loc[labels.ImageId == ids[0], "EncodedPixels"].iloc[0])
    fig = viz.show_examples(sample / "train_images", sample / "train.csv", ids, preds={ids[0]: truth})
    assert len(fig.axes) == 3
    assert "classes 1" in fig.axes[0].get_title(loc="left")


def test_plot_metrics_and_probabilities() -> None:
    table = pd.DataFrame(
        {
            "tta": ["none"] * 5 * 2,
            "postprocess": ["raw"] * 5 + ["tuned"] * 5,
            "class": ["1", "2", "3", "4", "mean"] * 2,
            "dice": np.linspace(0.1, 0.9, 10),
        }
    )
    fig = viz.plot_metrics(table)
    assert len(fig.axes[0].patches) == 8  # 4 classes x 2 variants
    image, masks = _image_and_masks()
    fig = viz.plot_probabilities(image, masks.astype(np.float32) * 0.8)
    assert "max 0.80" in fig.axes[1].get_title(loc="left")
