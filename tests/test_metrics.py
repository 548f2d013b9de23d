"""Metrics on hand-made masks: the Kaggle metric, IoU/Dice per class, the reference's soft IoU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steelnb.model import metrics


def masks(n: int = 1, c: int = 4, h: int = 4, w: int = 4) -> np.ndarray:
    return np.zeros((n, c, h, w), dtype=np.uint8)


def test_kaggle_both_empty_is_one() -> None:
    assert metrics.kaggle_metric(masks(), masks()) == 1.0
    assert metrics.dice_per_image(masks(2), masks(2)).tolist() == [[1.0] * 4] * 2


def test_kaggle_one_false_pixel_on_empty_pair_is_zero() -> None:
    pred = masks()
    pred[0, 2, 1, 1] = 1
    d = metrics.dice_per_image(pred, masks())
    assert d[0, 2] == 0.0 and d[0, [0, 1, 3]].tolist() == [1.0, 1.0, 1.0]
    assert metrics.kaggle_metric(pred, masks()) == pytest.approx(0.75)


def test_kaggle_partial_overlap() -> None:
    truth, pred = masks(2), masks(2)
    truth[0, 0, 0, :4] = 1  # 4 true pixels
    pred[0, 0, 0, 2:4] = 1  # 2 of them found + 2 false positives
    pred[0, 0, 1, :2] = 1
    # dice = 2*2 / (4 + 4) = 0.5 for (image 0, class 0); the other 7 pairs are empty -> 1
    d = metrics.dice_per_image(pred, truth)
    assert d[0, 0] == pytest.approx(0.5)
    assert metrics.kaggle_metric(pred, truth) == pytest.approx((0.5 + 7) / 8)


def test_probabilities_are_thresholded_and_torch_accepted() -> None:
    truth = torch.zeros(1, 4, 4, 4)
    truth[0, 1, :2] = 1
    probs = torch.full((1, 4, 4, 4), 0.2)
    probs[0, 1, :2] = 0.7
    assert metrics.kaggle_metric(probs, truth) == 1.0
    assert metrics.kaggle_metric(probs, truth, threshold=0.8) == pytest.approx(0.75)


def test_iou_dice_per_class() -> None:
    truth, pred = masks(2), masks(2)
    truth[0, 0, 0, :4] = 1
    pred[0, 0, 0, :2] = 1
    truth[1, 3, 0, :2] = 1  # class 3: missed entirely
    r = metrics.iou_dice(pred, truth)
    assert r["iou"] == pytest.approx([0.5, 1.0, 1.0, 0.0])
    assert r["dice"] == pytest.approx([2 * 2 / 6, 1.0, 1.0, 0.0])
    assert r["iou_mean"] == pytest.approx(2.5 / 4)


def test_soft_iou_is_reference_formula() -> None:
    truth = masks(1, 1, 1, 2).astype(np.float32)
    truth[0, 0, 0, 0] = 1
    probs = np.array([[[[0.5, 0.5]]]], dtype=np.float32)
    # inter 0.5, union 1 + 1 - 0.5 = 1.5
    assert metrics.soft_iou(probs, truth) == pytest.approx(1 / 3, rel=1e-5)


def test_segmentation_metrics_match_the_concatenated_batches() -> None:
    """Batch by batch (uneven batches) gives what the metric functions give on all images at once."""
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(7, 4, 8, 8, generator=g)
    truth = (torch.rand(7, 4, 8, 8, generator=g) > 0.7).float()
    truth[:2, 2] = 0
    truth[3] = 0
    m = metrics.SegmentationMetrics(4)
    for a, b in ((0, 4), (4, 6), (6, 7)):
        m.update(probs[a:b], truth[a:b])
    r = m.compute()
    whole = metrics.iou_dice(probs, truth)
    per_image = metrics.dice_per_image(probs, truth)
    empty = (truth.flatten(2) == 0).all(2).double()
    assert r["images"] == 7
    assert r["dice"] == pytest.approx(whole["dice"]) and r["iou"] == pytest.approx(whole["iou"])
    assert r["dice_mean"] == pytest.approx(whole["dice_mean"])
    assert r["iou_mean"] == pytest.approx(whole["iou_mean"])
    assert r["kaggle"] == pytest.approx(per_image.mean(0).tolist())
    assert r["kaggle_mean"] == pytest.approx(metrics.kaggle_metric(probs, truth))
    assert r["soft_iou"] == pytest.approx(metrics.soft_iou(probs, truth, per_class=True).tolist())
    assert r["soft_iou_mean"] == pytest.approx(metrics.soft_iou(probs, truth))
    assert r["empty_kaggle"] == pytest.approx(empty.mean(0).tolist())
    assert r["empty_kaggle_mean"] == pytest.approx(metrics.kaggle_metric(torch.zeros_like(truth), truth))
    assert set(r) == {
        *(f"{k}{s}" for k in ("dice", "iou", "kaggle", "soft_iou", "empty_kaggle") for s in ("", "_mean")),
        "images",
    }
    m.reset()
    m.update(probs[:1], truth[:1])
    assert m.compute()["images"] == 1


def test_segmentation_metrics_states_are_float64_sums_over_processes() -> None:
    """What DDP does in compute(): every state is summed over the processes, so two processes with
    half the images each report the whole set. The all-gather is simulated: it returns this
    process's state and the other one's."""
    g = torch.Generator().manual_seed(4)
    probs = torch.rand(5, 4, 8, 8, generator=g)
    truth = (torch.rand(5, 4, 8, 8, generator=g) > 0.6).float()
    whole = metrics.SegmentationMetrics(4)
    whole.update(probs, truth)
    other = metrics.SegmentationMetrics(4)
    other.update(probs[3:], truth[3:])
    names = (*metrics.SegmentationMetrics.SUMS, "images")

    def gather(x: torch.Tensor, group=None) -> list[torch.Tensor]:
        name = next(n for n in names if getattr(mine, n) is x)
        return [x, getattr(other, name)]

    mine = metrics.SegmentationMetrics(4, dist_sync_fn=gather, distributed_available_fn=lambda: True)
    mine.update(probs[:3], truth[:3])
    for n in metrics.SegmentationMetrics.SUMS:  # O(C) memory: one float64 number per class and sum
        assert getattr(mine, n).shape == (4,) and getattr(mine, n).dtype == torch.float64
    expected, got = whole.compute(), mine.compute()
    assert got["images"] == 5 and got.keys() == expected.keys()
    for k, v in expected.items():
        assert got[k] == pytest.approx(v), k
    assert int(mine.images) == 3  # the local state is back after compute


def test_bad_shapes_raise() -> None:
    with pytest.raises(metrics.MetricError, match="N, C, H, W"):
        metrics.kaggle_metric(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="equal"):
        metrics.kaggle_metric(masks(1), masks(2))


def test_segmentation_metrics_report_the_all_empty_baseline() -> None:
    """empty_kaggle is what predicting nothing scores: equal to kaggle_metric of an empty prediction."""
    g = torch.Generator().manual_seed(1)
    truth = torch.zeros(6, 4, 8, 8)
    truth[0, 0, :2, :2] = 1
    truth[1, 2] = 1
    truth[3, 3, 4:, 4:] = 1
    m = metrics.SegmentationMetrics(4)
    m.update(torch.rand(3, 4, 8, 8, generator=g), truth[:3])
    m.update(torch.rand(3, 4, 8, 8, generator=g), truth[3:].bool())
    res = m.compute()
    assert res["empty_kaggle"] == [5 / 6, 1.0, 5 / 6, 5 / 6]
    assert abs(res["empty_kaggle_mean"] - metrics.kaggle_metric(torch.zeros_like(truth), truth)) < 1e-12


def test_count_arrays_agree_with_the_mask_metrics() -> None:
    """One home for Dice: the numpy count helpers (bootstrap, tuning) give what the torch/smp path
    gives on the masks, pair by pair and pooled, empty pairs included."""
    rng = np.random.default_rng(3)
    pred = rng.random((6, 4, 8, 12)) > 0.8
    truth = rng.random((6, 4, 8, 12)) > 0.85
    pred[0], truth[0] = False, False  # an all-empty image: every pair scores 1
    truth[1, 2] = False  # false positives on an empty truth: Dice 0 unless pred is empty too
    c = metrics.pixel_counts(pred, truth)
    assert c.shape == (6, 4, 3) and c.dtype == np.int64
    np.testing.assert_allclose(metrics.dice_of(c), metrics.dice_per_image(pred, truth))
    assert metrics.dice_of(c)[0].tolist() == [1.0] * 4
    pooled = c.sum(0)
    got = metrics.iou_dice(pred, truth)
    np.testing.assert_allclose(metrics.dice_from_counts(*pooled.T), got["dice"])
    np.testing.assert_allclose(metrics.iou_from_counts(*pooled.T), got["iou"])
    # hand-computed: tp 3, fp 1, fn 2 -> Dice 6/9, IoU 3/6
    assert metrics.dice_from_counts(3, 1, 2) == pytest.approx(2 / 3)
    assert metrics.iou_from_counts(3, 1, 2) == pytest.approx(0.5)
