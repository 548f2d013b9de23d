"""Bootstrap intervals: coverage on simulated data, shapes, NaN handling, errors."""

from __future__ import annotations

import numpy as np
import pytest

from steelnb.stats import StatsError, bootstrap_ci, defect_mean, defect_values, format_ci, paired_bootstrap

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
    import steelnb.stats as stats

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
