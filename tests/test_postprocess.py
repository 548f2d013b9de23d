"""Post-processing: thresholds, small components, image-level gates, YAML, tuning."""

from __future__ import annotations

import numpy as np
import pytest

from steelnb.judge import postprocess as pp
from steelnb.judge.postprocess import ClassParams, PostParams
from steelnb.model.metrics import kaggle_metric


def _params(**kw) -> PostParams:
    return PostParams(classes=(ClassParams(**kw),) * 4)


def _blob_probs() -> np.ndarray:
    """(4, 256, 1600): class 1 a big blob (40x40 at 0.9) and a small spot (3x3 at 0.9)."""
    probs = np.zeros((4, 256, 1600), np.float32)
    probs[0, 10:50, 10:50] = 0.9
    probs[0, 100:103, 500:503] = 0.9
    probs[1, 200:210, 800:810] = 0.55  # a faint class-2 patch: 100 pixels
    return probs


def test_default_is_plain_threshold() -> None:
    probs = np.random.default_rng(0).random((2, 4, 8, 16)).astype(np.float32)
    assert np.array_equal(pp.apply(probs), (probs > 0.5).astype(np.uint8))
    assert pp.apply(probs).dtype == np.uint8


def test_small_component_dropped() -> None:
    masks = pp.apply(_blob_probs(), _params(min_area=50))
    assert masks[0, 10:50, 10:50].all() and masks[0].sum() == 1600  # blob kept, 3x3 spot dropped
    assert masks[1].sum() == 100  # 100-pixel patch survives min_area 50
    assert pp.apply(_blob_probs())[0].sum() == 1609


def test_min_area_scales_with_size() -> None:
    """Areas are full-resolution pixels: at half height and width a 100-px area means 25 px."""
    probs = np.zeros((4, 128, 800), np.float32)
    probs[2, :5, :5] = 0.9  # 25 px here = 100 px at full size
    probs[2, 50:54, 50:54] = 0.9  # 16 px here = 64 px at full size
    masks = pp.apply(probs, _params(min_area=100))
    assert masks[2].sum() == 25


def test_gates_empty_a_class() -> None:
    probs = _blob_probs()
    gated = pp.apply(probs, _params(min_top_prob=0.6))  # class 2 peaks at 0.55: emptied
    assert gated[1].sum() == 0 and gated[0].sum() == 1609
    by_area = pp.apply(probs, _params(min_total_area=200))  # class 2 has only 100 px left
    assert by_area[1].sum() == 0 and by_area[0].sum() == 1609


def test_uint8_probabilities_read_as_x255() -> None:
    probs = _blob_probs()
    q = np.round(probs * 255).astype(np.uint8)
    assert np.array_equal(pp.apply(q, _params(min_area=50)), pp.apply(probs, _params(min_area=50)))


def test_bad_shape_and_params() -> None:
    with pytest.raises(pp.PostprocessError, match="shape"):
        pp.apply(np.zeros((3, 8, 8)))
    with pytest.raises(pp.PostprocessError):
        ClassParams(threshold=1.5)
    with pytest.raises(pp.PostprocessError):
        PostParams(classes=(ClassParams(),))


def test_yaml_round_trip(tmp_path) -> None:
    params = PostParams(
        classes=(
            ClassParams(0.4, 500, 0.7, 0),
            ClassParams(),
            ClassParams(0.6, 0, 0.0, 2000),
            ClassParams(0.35),
        ),
        score=0.91,
    )
    path = params.to_yaml(tmp_path)  # a run folder: written as postprocess.yaml
    assert path == tmp_path / "postprocess.yaml"
    assert PostParams.from_yaml(path) == params
    assert pp.load_params(tmp_path / "best.ckpt") == params  # beside a checkpoint
    (tmp_path / "other").mkdir()
    assert pp.load_params(tmp_path / "other") is None
    path.write_text("classes: [1, 2]\n")
    with pytest.raises(pp.PostprocessError, match="postprocess.yaml"):
        PostParams.from_yaml(path)


def test_kaggle_score_counts_empty_pairs_as_one() -> None:
    truth = np.zeros((2, 4, 4, 4), np.uint8)
    truth[0, 0, :2] = 1  # 8 px
    pred = truth.copy()
    pred[0, 0, 2, :] = 1  # 4 false positives: Dice 16/20
    assert kaggle_metric(pred, truth) == pytest.approx((7 + 0.8) / 8)


def _synthetic_validation(n: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Truth (N, 4, 64, 320) with blobs, probabilities = truth + noise + small false spots."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, 4, 64, 320), np.uint8)
    for i in range(n):
        for c in range(4):
            if rng.random() < 0.4:
                y, x = rng.integers(0, 40), rng.integers(0, 280)
                truth[i, c, y : y + rng.integers(10, 24), x : x + rng.integers(15, 40)] = 1
    probs = np.clip(truth * 0.75 + rng.normal(0.15, 0.12, truth.shape), 0, 1)
    for i in range(n):  # small confident false positives, the typical failure post-processing fixes
        for c in range(4):
            for _ in range(rng.integers(0, 3)):
                y, x = rng.integers(0, 60), rng.integers(0, 316)
                probs[i, c, y : y + 3, x : x + 3] = 0.8
    return probs.astype(np.float32), truth


def test_tuning_beats_default_threshold() -> None:
    probs, truth = _synthetic_validation()
    before = kaggle_metric(pp.apply(probs), truth)
    params = pp.tune_postprocess(
        probs,
        truth,
        thresholds=(0.3, 0.4, 0.5, 0.6),
        min_areas=(0, 500, 1500),
        top_probs=(0.0, 0.9),
        total_areas=(0, 4000),
    )
    after = kaggle_metric(pp.apply(probs, params), truth)
    assert after > before + 0.05
    # the score the search reports is the one apply() reaches: both count pixels the same way
    assert params.score == pytest.approx(after)
    assert all(c.min_area > 0 for c in params.classes)  # the 9-px spots (~320 px full size) must go


def test_tuning_on_quantised_probabilities() -> None:
    probs, truth = _synthetic_validation(seed=1)
    q = np.round(probs * 255).astype(np.uint8)
    params = pp.tune_postprocess(
        q, truth, thresholds=(0.4, 0.5), min_areas=(0, 1500), top_probs=(0.0,), total_areas=(0,)
    )
    assert params.score == pytest.approx(kaggle_metric(pp.apply(q, params), truth))
    with pytest.raises(pp.PostprocessError):
        pp.tune_postprocess(q, truth[:, :, :10])


def test_tuning_turns_off_a_class_that_only_hurts() -> None:
    """A class whose every prediction is a confident false positive on images without it:
    no threshold, area or gate of the grid removes it, so tuning switches the class off."""
    rng = np.random.default_rng(0)
    probs = np.zeros((6, 4, 64, 400), np.float32)
    truth = np.zeros((6, 4, 64, 400), np.uint8)
    truth[:3, 0, 10:30, 10:60] = 1
    probs[:3, 0, 10:30, 10:60] = 0.95  # class 1 found exactly
    probs[3, 0, 0:40, 100:300] = 0.999  # ... and an 8,000-pixel false alarm on one other image
    probs[:, 3] = rng.uniform(0.95, 1.0, (6, 64, 400))  # class 4: everywhere, never true
    params = pp.tune_postprocess(
        probs, truth, thresholds=(0.5, 0.8), min_areas=(0, 1000), top_probs=(0.0, 0.9), total_areas=(0, 8000)
    )
    assert params.classes[3] == ClassParams(enabled=False)
    assert params.classes[0].enabled  # one that helps stays on
    assert not pp.apply(probs, params)[:, 3].any()
    assert params.score == pytest.approx(kaggle_metric(pp.apply(probs, params), truth))


def test_a_class_that_only_ties_with_predicting_nothing_is_switched_off() -> None:
    """No image of the validation set has class 2 and its probabilities stay below 0.6 there, so
    a threshold of 0.6 or more predicts nothing on validation: it ties with switching the class
    off. Tuning switches it off, so the class predicts nothing on a new image where the model is
    confident, instead of keeping a setting that validation never saw fire."""
    rng = np.random.default_rng(0)
    probs = np.zeros((6, 4, 64, 400), np.float32)
    truth = np.zeros((6, 4, 64, 400), np.uint8)
    truth[:3, 0, 10:30, 10:60] = 1
    probs[:3, 0, 10:30, 10:60] = 0.95  # class 1 found exactly: it beats predicting nothing
    probs[:, 1] = rng.uniform(0.0, 0.59, (6, 64, 400))  # class 2: never present, never confident
    params = pp.tune_postprocess(
        probs, truth, thresholds=(0.5, 0.6, 0.7), min_areas=(0, 1000), top_probs=(0.0,), total_areas=(0,)
    )
    assert params.classes[0].enabled
    assert params.classes[1] == ClassParams(enabled=False)
    assert params.score == pytest.approx(kaggle_metric(pp.apply(probs, params), truth))
    new = np.zeros((1, 4, 64, 400), np.float32)
    new[0, 1, 20:40, 100:200] = 0.9  # a confident class-2 blob on an image validation did not have
    assert not pp.apply(new, params)[:, 1].any()


def test_switched_off_class_round_trips_and_old_files_load(tmp_path) -> None:
    params = PostParams(classes=(ClassParams(), ClassParams(enabled=False), ClassParams(), ClassParams()))
    assert PostParams.from_yaml(params.to_yaml(tmp_path)) == params
    old = tmp_path / "old.yaml"  # written before the switch existed: every class on
    old.write_text(
        "classes:\n"
        + "".join(
            f"  {c}: {{threshold: 0.5, min_area: 0, min_top_prob: 0.0, min_total_area: 0}}\n"
            for c in range(1, 5)
        )
    )
    assert all(c.enabled for c in PostParams.from_yaml(old).classes)


# --- the classifier gate ------------------------------------------------------------------------
def test_gate_empties_exactly_the_classes_below_threshold() -> None:
    rng = np.random.default_rng(0)
    probs = rng.uniform(0.6, 1.0, (5, 4, 16, 40)).astype(np.float32)  # every class predicted everywhere
    class_probs = np.array(
        [
            [0.1, 0.9, 0.5, 0.49],
            [0.6, 0.2, 0.3, 0.8],
            [0.9, 0.9, 0.9, 0.9],
            [0.0, 0.1, 0.2, 0.3],
            [0.5, 0.5, 0.5, 0.5],  # exactly at the threshold: not below, kept
        ]
    )
    thresholds = (0.5, 0.3, 0.5, 0.5)
    params = PostParams(classes=tuple(ClassParams(cls_threshold=t) for t in thresholds))
    masks = pp.apply(probs, params, class_probs)
    below = class_probs < np.array(thresholds)
    assert below.any() and (~below).any()
    assert not masks[below].any()  # the gated classes are empty ...
    assert np.array_equal(masks[~below], pp.apply(probs)[~below])  # ... and only those change
    assert np.array_equal(pp.emptied(class_probs, params), below)
    assert pp.screened(class_probs, params).tolist() == [False, False, False, True, False]
    # one image (4,) with (4,) class probabilities; no class probabilities or the gate off: as before
    assert np.array_equal(pp.apply(probs[0], params, class_probs[0]), masks[0])
    assert np.array_equal(pp.apply(probs, params), pp.apply(probs))
    assert np.array_equal(pp.apply(probs, PostParams(), class_probs), pp.apply(probs))
    assert not pp.screened(None, params, n=5).any()
    with pytest.raises(pp.PostprocessError, match="class probabilities of shape"):
        pp.apply(probs, params, class_probs[:2])


def test_gate_min_area_variant_keeps_large_components() -> None:
    """khornlund's variant: a gated class keeps its components of at least gate_min_area pixels."""
    params = _params(cls_threshold=0.5, gate_min_area=500)
    low, high = np.array([0.2, 0.2, 0.9, 0.9]), np.array([0.9, 0.9, 0.9, 0.9])
    gated = pp.apply(_blob_probs(), params, low)
    assert gated[0, 10:50, 10:50].all() and gated[0].sum() == 1600  # 1600-px blob kept, 9-px spot dropped
    assert gated[1].sum() == 0  # the 100-px class-2 patch is below 500 px
    assert np.array_equal(pp.apply(_blob_probs(), params, high), pp.apply(_blob_probs()))  # not gated
    assert not pp.screened(low[None], params)[0]  # a raised area still needs the mask decoded
    assert (
        pp.apply(_blob_probs(), _params(min_area=2000, cls_threshold=0.5, gate_min_area=500), low)[0].sum()
        == 0
    )


def test_gate_fields_round_trip_and_old_files_load(tmp_path) -> None:
    params = PostParams(
        classes=(
            ClassParams(0.4, 500, cls_threshold=0.6),
            ClassParams(0.5, cls_threshold=0.4, gate_min_area=4000),
            ClassParams(enabled=False),
            ClassParams(),
        ),
        score=0.8,
    )
    assert PostParams.from_yaml(params.to_yaml(tmp_path)) == params
    assert PostParams.from_dict(params.to_dict()) == params
    old = tmp_path / "old.yaml"  # written before the gate existed
    old.write_text(
        "classes:\n"
        + "".join(
            f"  {c}: {{threshold: 0.5, min_area: 0, min_top_prob: 0.0, min_total_area: 0, enabled: true}}\n"
            for c in range(1, 5)
        )
    )
    assert all(c.cls_threshold == 0 and c.gate_min_area == 0 for c in PostParams.from_yaml(old).classes)
    with pytest.raises(pp.PostprocessError, match="cls_threshold"):
        ClassParams(cls_threshold=1.5)
    with pytest.raises(pp.PostprocessError, match="areas"):
        ClassParams(gate_min_area=-1)


def _class_probs(truth: np.ndarray, seed: int, noise: float) -> np.ndarray:
    """Image-level class probabilities (N, 4): high where the class is present, plus noise."""
    rng = np.random.default_rng(seed)
    present = truth.any((2, 3)).astype(float)
    return np.clip(0.2 + 0.6 * present + rng.normal(0, noise, present.shape), 0, 1)


GRIDS = dict(
    thresholds=(0.4, 0.5, 0.6), min_areas=(0, 500, 1500), top_probs=(0.0, 0.9), total_areas=(0, 2000)
)


@pytest.mark.parametrize("noise", [0.05, 0.5])
def test_tuning_with_class_probs_never_scores_below_without(noise: float) -> None:
    probs, truth = _synthetic_validation(n=24, seed=2)
    without = pp.tune_postprocess(probs, truth, **GRIDS)
    assert all(c.cls_threshold == 0 for c in without.classes)  # no class probabilities: no gate
    cp = _class_probs(truth, seed=3, noise=noise)
    with_cp = pp.tune_postprocess(probs, truth, class_probs=cp, **GRIDS)
    assert with_cp.score >= without.score - 1e-12
    # the score the search reports is the one apply() reaches with the gate
    assert with_cp.score == pytest.approx(kaggle_metric(pp.apply(probs, with_cp, cp), truth))
    if noise < 0.1:  # with no area filter in the grid, only an informative classifier removes the
        # false spots on the images without the class
        bare = dict(thresholds=(0.5,), min_areas=(0,), top_probs=(0.0,), total_areas=(0,))
        plain = pp.tune_postprocess(probs, truth, **bare)
        gated = pp.tune_postprocess(probs, truth, class_probs=cp, **bare)
        assert gated.score > plain.score + 0.01 and all(c.cls_threshold > 0 for c in gated.classes)


def test_tuning_finds_the_min_area_gate() -> None:
    """Defects are large; false alarms are mid-sized blobs on images the classifier rejects: only
    the raised minimum area for gated images removes them without losing the defects it misses."""
    n = 12
    probs = np.zeros((n, 4, 64, 400), np.float32)
    truth = np.zeros((n, 4, 64, 400), np.uint8)
    cp = np.full((n, 4), 0.9)
    truth[:6, 0, 5:45, 10:110] = 1  # 4000 px here = 64,000 px at full size
    probs[:6, 0, 5:45, 10:110] = 0.9
    cp[3:6, 0] = 0.1  # the classifier misses half of the defects ...
    probs[6:, 0, 20:30, 200:220] = 0.9  # ... and rejects images holding 200-px (3200 full) false blobs
    cp[6:, 0] = 0.1
    truth[:, 1:] = 0
    params = pp.tune_postprocess(
        probs,
        truth,
        thresholds=(0.5,),
        min_areas=(0,),
        top_probs=(0.0,),
        total_areas=(0,),
        class_probs=cp,
        cls_thresholds=(0.5,),
        gate_min_areas=(0, 8000),
    )
    assert (params.classes[0].cls_threshold, params.classes[0].gate_min_area) == (0.5, 8000)
    assert params.score == pytest.approx(1.0)
    assert params.score == pytest.approx(kaggle_metric(pp.apply(probs, params, cp), truth))


def test_default_gate_grid_reaches_a_short_runs_low_class_probabilities() -> None:
    """A classifier that ranks images well but gives every one a low probability (the smoke's gate
    run: class-3 images at a median 0.02, the others below 0.01): only the default grid, which
    reaches such probabilities, gates the class instead of switching it off; the calibrated grid
    the gate had before (0.3 and up) cannot tell the two kinds of image apart."""
    n = 12
    probs = np.zeros((n, 4, 64, 400), np.float32)
    truth = np.zeros((n, 4, 64, 400), np.uint8)
    truth[:4, 2, 5:45, 10:110] = 1  # four images hold the class and the masks find them ...
    probs[:4, 2, 5:45, 10:110] = 0.9
    probs[4:, 2, 10:40, 200:300] = 0.9  # ... and fire as strongly on the eight that do not
    cp = np.full((n, 4), 0.002)
    cp[:4, 2] = 0.03
    bare = dict(thresholds=(0.5,), min_areas=(0,), top_probs=(0.0,), total_areas=(0,), class_probs=cp)
    old = pp.tune_postprocess(probs, truth, cls_thresholds=(0.3, 0.4, 0.5, 0.6, 0.7), **bare)
    assert not old.classes[2].enabled  # 4 hits against 8 false alarms: off
    params = pp.tune_postprocess(probs, truth, **bare)
    assert params.classes[2].enabled and 0 < params.classes[2].cls_threshold <= 0.03
    assert params.score == pytest.approx(1.0)
    assert params.score == pytest.approx(kaggle_metric(pp.apply(probs, params, cp), truth))
