"""Bootstrap intervals: coverage on simulated data, shapes, NaN handling, errors."""

from __future__ import annotations

import numpy as np
import pytest

from steelnb.judge.stats import (
    StatsError,
    bootstrap_ci,
    bootstrap_p,
    defect_mean,
    defect_values,
    format_ci,
    holm,
    paired_bootstrap,
    seed_bootstrap,
)

SIMS, N, BOOT = 300, 60, 1000


def close(x: tuple[float, ...], y: tuple[float, ...]) -> bool:
    """Equal up to float rounding (a row's mean may differ from sum / count in the last bit)."""
    return bool(np.allclose(x, y, rtol=0.0, atol=1e-12))


def close_dict(x: dict, y: dict) -> bool:
    keys = ("diff", "low", "high")
    return (
        close(tuple(x[k] for k in keys), tuple(y[k] for k in keys))
        and x["real"] == y["real"]
        and x["n"] == y["n"]
    )


def test_bootstrap_ci_coverage_of_known_mean() -> None:
    rng = np.random.default_rng(1)
    true_mean = 2.0 / 7.0  # Beta(2, 5)
    hits = 0
    for k in range(SIMS):
        est, low, high = bootstrap_ci(rng.beta(2.0, 5.0, size=N), n_boot=BOOT, seed=k)
        assert low <= est <= high
        hits += low <= true_mean <= high
    coverage = hits / SIMS
    print(f"bootstrap_ci coverage {coverage:.3f}")
    assert 0.90 <= coverage <= 0.985


def test_paired_bootstrap_coverage_of_known_difference() -> None:
    rng = np.random.default_rng(2)
    true_diff = -0.05
    hits = 0
    for k in range(SIMS):
        x = rng.beta(2.0, 2.0, size=N)  # shared per-image difficulty makes the pairs correlated
        a = x + rng.normal(0.0, 0.1, size=N)
        b = x - true_diff + rng.normal(0.0, 0.1, size=N)
        r = paired_bootstrap(a, b, n_boot=BOOT, seed=k)
        assert r["n"] == N
        hits += r["low"] <= true_diff <= r["high"]
    coverage = hits / SIMS
    print(f"paired_bootstrap coverage {coverage:.3f}")
    assert 0.90 <= coverage <= 0.985


def test_paired_bootstrap_large_difference_is_real_and_identical_is_not() -> None:
    rng = np.random.default_rng(3)
    x = rng.beta(2.0, 2.0, size=500)
    a = x + 0.2 + rng.normal(0.0, 0.2, size=500)
    r = paired_bootstrap(a, x)
    assert r["real"] is True and 0.0 < r["low"] < r["diff"] < r["high"]
    assert r["diff"] == pytest.approx(0.2, abs=0.05)
    same = paired_bootstrap(x, x.copy())
    assert same["diff"] == 0.0 and same["low"] == 0.0 and same["high"] == 0.0
    assert same["real"] is False


def test_paired_bootstrap_is_paired_not_independent() -> None:
    # With strong shared per-image variation the paired interval is far narrower than the
    # unpaired one would be: width ~ 2*1.96*0.01/sqrt(N) rather than ~ 2*1.96*0.3/sqrt(N).
    rng = np.random.default_rng(4)
    x = rng.normal(0.0, 0.3, size=200)
    r = paired_bootstrap(x + 0.01 + rng.normal(0.0, 0.01, size=200), x)
    assert r["high"] - r["low"] < 0.01
    assert r["real"] is True


def test_interval_width_matches_normal_theory() -> None:
    rng = np.random.default_rng(5)
    v = rng.normal(0.5, 0.2, size=400)
    est, low, high = bootstrap_ci(v, n_boot=4000)
    assert est == pytest.approx(v.mean())
    expected = 2 * 1.959964 * v.std(ddof=1) / np.sqrt(v.size)
    assert (high - low) == pytest.approx(expected, rel=0.1)
    _, low90, high90 = bootstrap_ci(v, n_boot=4000, level=0.90)
    assert low < low90 < high90 < high


def test_row_means_equal_two_dim_input() -> None:
    rng = np.random.default_rng(6)
    m = rng.random((40, 4))
    assert close(bootstrap_ci(m, seed=3), bootstrap_ci(m.mean(axis=1), seed=3))
    b = rng.random((40, 4))
    by_row = paired_bootstrap(m.mean(axis=1), b.mean(axis=1), seed=3)
    assert close_dict(paired_bootstrap(m, b, seed=3), by_row)


def test_nan_entries_and_rows() -> None:
    m = np.array([[1.0, np.nan], [0.0, 0.5], [np.nan, np.nan], [0.2, 0.4]])
    row_means = np.array([1.0, 0.25, 0.3])
    assert close(bootstrap_ci(m, seed=7), bootstrap_ci(row_means, seed=7))
    assert bootstrap_ci(m)[0] == pytest.approx(1.55 / 3)
    r = paired_bootstrap(m, np.zeros((4, 2)))
    assert r["n"] == 3 and r["diff"] == pytest.approx(1.55 / 3)


def test_pooled_equals_nanmean_and_defect_mean() -> None:
    m = np.array([[1.0, np.nan], [0.0, 0.5], [np.nan, np.nan], [0.2, 0.4]])
    est, low, high = bootstrap_ci(m, pooled=True)
    assert est == pytest.approx(np.nanmean(m)) and est == pytest.approx(2.1 / 5)
    assert est != pytest.approx(bootstrap_ci(m)[0])
    assert low <= est <= high
    rng = np.random.default_rng(8)
    dice = rng.random((50, 4))
    empty = rng.random((50, 4)) < 0.6
    vals = defect_values(dice, empty)
    assert np.isnan(vals[empty]).all() and np.array_equal(vals[~empty], dice[~empty])
    assert bootstrap_ci(vals, pooled=True)[0] == pytest.approx(dice[~empty].mean())
    assert defect_mean(dice, empty) == pytest.approx(dice[~empty].mean())
    assert np.isnan(defect_mean(dice, np.ones((50, 4), dtype=bool)))
    # (N,) input: pooled and per-image means coincide
    assert close(bootstrap_ci(dice[:, 0], pooled=True), bootstrap_ci(dice[:, 0]))


def test_pooled_replicates_resample_rows() -> None:
    # one image has many defect pairs: pooled replicates vary with how often it is drawn
    m = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, np.nan, np.nan, np.nan]])
    est, low, high = bootstrap_ci(m, pooled=True, n_boot=4000)
    assert est == pytest.approx(0.8)
    assert low == pytest.approx(0.0) and high == pytest.approx(1.0)
    r = paired_bootstrap(m, np.zeros((2, 4)), pooled=True)
    assert r["diff"] == pytest.approx(0.8)


def test_single_image_and_errors() -> None:
    assert bootstrap_ci([0.7]) == (0.7, 0.7, 0.7)
    assert bootstrap_ci([[0.5, np.nan], [np.nan, np.nan]]) == (0.5, 0.5, 0.5)
    with pytest.raises(StatsError, match="at least one image"):
        bootstrap_ci([])
    with pytest.raises(StatsError, match="at least one image"):
        bootstrap_ci([np.nan, np.nan])
    with pytest.raises(StatsError, match=r"\(3, 4\).*\(3, 2\)"):
        paired_bootstrap(np.zeros((3, 4)), np.zeros((3, 2)))
    with pytest.raises(StatsError, match="shape"):
        bootstrap_ci(np.zeros((2, 2, 2)))
    with pytest.raises(StatsError, match="level"):
        bootstrap_ci([0.1, 0.2], level=95)
    with pytest.raises(StatsError, match="truth_empty"):
        defect_values(np.zeros((3, 4)), np.zeros((3, 4)))
    assert issubclass(StatsError, ValueError)


def test_deterministic_for_a_seed_and_chunking() -> None:
    rng = np.random.default_rng(9)
    v = rng.random(30)
    assert bootstrap_ci(v, seed=11) == bootstrap_ci(v, seed=11)
    assert bootstrap_ci(v, seed=11) != bootstrap_ci(v, seed=12)
    b = rng.random(30)
    assert paired_bootstrap(v, b, seed=5) == paired_bootstrap(v, b, seed=5)


def test_chunked_draws_cover_every_replicate(monkeypatch: pytest.MonkeyPatch) -> None:
    import steelnb.judge.stats as stats

    monkeypatch.setattr(stats, "_CHUNK_ELEMENTS", 70)  # 70 // 30 = 2 rows per chunk
    v = np.arange(30, dtype=float)
    est, low, high = stats.bootstrap_ci(v, n_boot=1001)
    assert est == pytest.approx(14.5)
    assert 10.0 < low < 14.5 < high < 19.0
    (reps,) = stats._replicates(30, 1001, 0, [(v, np.ones(30))])
    assert reps.shape == (1001,) and np.isfinite(reps).all()


def test_format_ci() -> None:
    assert format_ci(0.8123, 0.79, 0.8334) == "0.812 [0.790, 0.833]"
    assert format_ci(1.0, 0.5, 1.5, digits=1) == "1.0 [0.5, 1.5]"


def _arms(rng: np.random.Generator, delta: float, seeds: int = 3, sig_seed: float = 0.02) -> tuple:
    """Two arms of ``seeds`` training seeds on the same N images: a shared per-image difficulty, a
    per-seed offset (what another training draw moves) and per-(seed, image) noise; a - b = delta."""
    x = rng.beta(2.0, 2.0, size=N)
    a = x + delta + rng.normal(0.0, sig_seed, size=(seeds, 1)) + rng.normal(0.0, 0.1, size=(seeds, N))
    b = x + rng.normal(0.0, sig_seed, size=(seeds, 1)) + rng.normal(0.0, 0.1, size=(seeds, N))
    return a, b


def test_seed_bootstrap_covers_a_known_difference_where_the_image_bootstrap_does_not() -> None:
    """With a seed effect, the image-only interval of one seed per arm misses the true difference
    far more often than 5 %; the two-level interval over three seeds covers it."""
    rng = np.random.default_rng(6)
    delta, sims = 0.03, 200
    two_level = image_only = 0
    for k in range(sims):
        a, b = _arms(rng, delta)
        r = seed_bootstrap(a, b, n_boot=BOOT, seed=k)
        assert r["seeds"] == [3, 3] and r["single_seed"] is False and r["n"] == N
        assert r["diff"] == pytest.approx(a.mean() - b.mean())
        two_level += r["low"] <= delta <= r["high"]
        one = paired_bootstrap(a[0], b[0], n_boot=BOOT, seed=k)
        image_only += one["low"] <= delta <= one["high"]
    print(f"coverage: two-level {two_level / sims:.3f}, image-only one seed {image_only / sims:.3f}")
    assert two_level / sims >= 0.9
    assert image_only / sims <= two_level / sims - 0.08


def test_seed_bootstrap_with_one_seed_per_arm_is_the_paired_image_bootstrap() -> None:
    rng = np.random.default_rng(7)
    a, b = _arms(rng, 0.05, seeds=1)
    r = seed_bootstrap(a, b, n_boot=BOOT, seed=3)
    assert r["single_seed"] is True and r["seeds"] == [1, 1]
    assert close_dict(r, paired_bootstrap(a[0], b[0], n_boot=BOOT, seed=3))
    assert r["p"] == paired_bootstrap(a[0], b[0], n_boot=BOOT, seed=3)["p"]
    # three seeds against the all-empty rule (one fixed row) is not single-seed; against one trained seed it is
    three, _ = _arms(rng, 0.05)
    assert seed_bootstrap(three, b, n_boot=200, fixed_b=True)["single_seed"] is False
    assert seed_bootstrap(three, b, n_boot=200)["single_seed"] is True
    with pytest.raises(StatsError, match=r"same images and classes"):
        seed_bootstrap(three, b[:, :10], n_boot=200)


def test_bootstrap_p_by_hand_and_against_the_interval() -> None:
    # 1 of 4 replicates <= 0, 3 >= 0: twice (1 + 1) / 5
    assert bootstrap_p(np.array([-1.0, 1.0, 2.0, 3.0])) == pytest.approx(0.8)
    assert bootstrap_p(np.ones(999)) == pytest.approx(2 / 1000)
    rng = np.random.default_rng(8)
    for shift in (0.0, 0.02, 0.05):
        a, b = _arms(rng, shift, seeds=1, sig_seed=0.0)
        r = paired_bootstrap(a[0], b[0], n_boot=4000, seed=1)
        if abs(r["p"] - 0.05) > 0.01:  # away from the boundary the two agree
            assert r["real"] == (r["p"] < 0.05)


def test_holm_against_a_hand_computation() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.2]) == pytest.approx([0.2]) and len(holm([])) == 0
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    with pytest.raises(StatsError, match="pvalues"):
        holm([0.1, 1.5])


def test_holm_equals_statsmodels_multipletests() -> None:
    """The step-down computed in steelnb equals the field's implementation on random families,
    ties, zeros and ones included."""
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    families = [rng.uniform(size=k) for k in (1, 2, 3, 7, 20)]
    families += [rng.uniform(size=9) ** 4, np.array([0.01, 0.01, 0.2, 0.2, 0.0, 1.0]), np.zeros(3)]
    for p in families:
        assert holm(p) == pytest.approx(multipletests(p, alpha=0.05, method="holm")[1], abs=1e-12), p


def test_a_family_of_zero_differences_is_not_flagged_after_holm() -> None:
    """Seven comparisons with no true difference: unadjusted, some family often shows an interval
    excluding 0; after Holm, at most about 5 % of families flag anything."""
    rng = np.random.default_rng(9)
    families, k = 60, 7
    raw = adjusted = 0
    for f in range(families):
        p = []
        for j in range(k):
            a, b = _arms(rng, 0.0, seeds=1, sig_seed=0.0)
            p.append(paired_bootstrap(a[0], b[0], n_boot=BOOT, seed=f * k + j)["p"])
        raw += min(p) < 0.05
        adjusted += holm(p).min() < 0.05
    print(f"families flagged: unadjusted {raw}, Holm {adjusted} of {families}")
    assert adjusted <= 0.1 * families and adjusted < raw
    # a family with one real difference keeps it
    a, b = _arms(rng, 0.15, seeds=3)
    real = seed_bootstrap(a, b, n_boot=BOOT)["p"]
    nulls = [seed_bootstrap(*_arms(rng, 0.0, seeds=3), n_boot=BOOT, seed=s)["p"] for s in range(6)]
    assert holm([real, *nulls])[0] < 0.05
