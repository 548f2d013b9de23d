"""Paired comparisons of runs from their test_scores.csv: against the empty prediction they agree
with the run's own test block; a run against itself differs by nothing; other images are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from scored import scored_run

from steelnb.judge import comparison
from steelnb.model.runfolder import RunRecord


def test_paired_against_empty_matches_the_test_block(tmp_path: Path) -> None:
    good = scored_run(tmp_path / "good", 0.8)
    diff = comparison.paired(good, None, n_boot=500)
    assert diff["images"] == 12 and diff["defect"] is None
    assert diff["kaggle"]["diff"] == pytest.approx(good["test"]["kaggle_gain"])
    assert [diff["kaggle"]["low"], diff["kaggle"]["high"]] == pytest.approx(good["test"]["kaggle_gain_ci95"])


def test_paired_table_verdicts(tmp_path: Path) -> None:
    good, poor = scored_run(tmp_path / "good", 0.9), scored_run(tmp_path / "poor", 0.1)
    table = comparison.paired_table([good, poor], poor).set_index("run")
    assert list(table.index) == ["good"]  # a run is not compared with itself
    assert (
        table.loc["good", "Kaggle: verdict"] == "gain: excludes 0 (one comparison, unadjusted); single seed"
    )
    assert table.loc["good", "defect Dice: verdict"].startswith("gain: excludes 0")
    assert table.loc["good", "training seeds"] == "single seed"
    same = comparison.paired(good, scored_run(tmp_path / "twin", 0.9), n_boot=200)
    assert same["kaggle"]["diff"] == 0
    assert comparison.verdict(same["kaggle"]) == "includes 0 (one comparison, unadjusted); single seed"
    with pytest.raises(ValueError, match="scored on different test images"):
        comparison.paired(good, scored_run(tmp_path / "other", 0.9, images=10))


def _validated(folder: Path, found: float, val: float) -> RunRecord:
    """A scored run whose post-processed validation Kaggle metric is ``val``."""
    m = scored_run(folder, found)
    return m.replace(best={"kaggle": val}, test={**m["test"], "val_tuned_kaggle": val})


def test_choose_run_selects_on_validation_and_says_why_not(tmp_path: Path) -> None:
    """05's choice: the best validation Kaggle metric (never test); a named run; clear errors for
    no runs, an unknown name and a run without a best epoch (it used to be a bare TypeError)."""
    good, better_val = (
        _validated(tmp_path / "good", 0.9, 0.80),
        _validated(tmp_path / "better_val", 0.5, 0.85),
    )
    # the raw threshold-0.5 validation metric (best.kaggle) does not choose: the post-processed one does
    raw_best = _validated(tmp_path / "raw_best", 0.7, 0.70).replace(best={"kaggle": 0.99})
    broken = scored_run(tmp_path / "broken", 0.7).replace(best=None)
    chosen, _ = comparison.choose_run([good, better_val, raw_best, broken])
    assert chosen["run"] == "better_val"  # chosen on validation although its test scores are lower
    assert comparison.choose_run([good, better_val], "good")[0]["run"] == "good"
    with pytest.raises(comparison.ComparisonError, match=r"'broken' under w has no best epoch"):
        comparison.choose_run([good, broken], "broken", where="w")
    with pytest.raises(comparison.ComparisonError, match=r"'nope' not found under w; runs: good, broken"):
        comparison.choose_run([good, broken], "nope", where="w")
    with pytest.raises(comparison.ComparisonError, match=r"^gate: run 'x' not found under w; runs: good$"):
        comparison.find_run([good], "x", "w", "gate")
    assert comparison.find_run([good, better_val], "better_val")["run"] == "better_val"
    assert comparison.choose_run([good, broken], "good")[0]["run"] == "good"
    with pytest.raises(comparison.ComparisonError, match="no training runs"):
        comparison.choose_run([], where="w")
    with pytest.raises(comparison.ComparisonError, match="no evaluated run with a best epoch"):
        comparison.choose_run([broken])


def test_comparable_runs_share_their_test_images_not_only_their_number(tmp_path: Path) -> None:
    """Two runs with as many test images of the same size and data but another split (03's own
    split beside the plan's) are not comparable: a paired table of them would refuse to run."""
    a, b = scored_run(tmp_path / "a", 0.9), scored_run(tmp_path / "b", 0.5)
    other = scored_run(tmp_path / "other", 0.7, first=100)
    kept, left = comparison.comparable([a, b, other])
    assert [m["run"] for m in kept] == ["a", "b"]
    assert list(left["run"]) == ["other"] and "test split" in left["left out because"].iloc[0]
    assert comparison.test_split(a) == comparison.test_split(b) != comparison.test_split(other)
    recorded = other.replace(data={"test_split": comparison.test_split(a)})  # the data block wins
    assert len(comparison.comparable([a, b, recorded])[0]) == 3
    comparison.paired_table(kept, kept[0])  # the group that is kept can be paired


def test_an_ablation_compares_runs_from_one_start_only(tmp_path: Path) -> None:
    """same_start: the fine-tunes of one run are compared together and a run from scratch beside
    them is left out, named with both starts; without it (05, 06) all of them are comparable."""
    start = str(tmp_path / "b3__dice_bce")
    tuned = [scored_run(tmp_path / n, f).replace(init_from=start) for n, f in (("ft_a", 0.9), ("ft_b", 0.5))]
    scratch = scored_run(tmp_path / "scratch", 0.7)
    kept, left = comparison.comparable([*tuned, scratch], same_start=True)
    assert [m["run"] for m in kept] == ["ft_a", "ft_b"] and list(left["run"]) == ["scratch"]
    assert left["left out because"].iloc[0] == "another start: from scratch, the others from b3__dice_bce"
    assert len(comparison.comparable([*tuned, scratch])[0]) == 3
    assert list(comparison.test_table(kept)["starts from"]) == ["b3__dice_bce"] * 2
    assert comparison.test_table([scratch])["starts from"].iloc[0] == ""


def test_arms_group_seeds_and_choose_on_their_mean_validation(tmp_path: Path) -> None:
    """Runs named <arm>__seed<N> form one arm; the arm with the best mean validation score is
    chosen (here the arm whose best seed is lower, but whose mean is higher)."""
    runs = [
        _validated(tmp_path / "a__seed0", 0.9, 0.80).replace(seed=0),
        _validated(tmp_path / "a__seed1", 0.8, 0.82).replace(seed=1),
        _validated(tmp_path / "b", 0.5, 0.84),
        _validated(tmp_path / "c__seed0", 0.5, 0.60).replace(seed=0),
        _validated(tmp_path / "c__seed1", 0.5, 0.86).replace(seed=1),
    ]
    assert comparison.arm_of(runs[0]) == "a" and comparison.arm_of("c__seed12") == "c"
    assert comparison.arm_of("b__seeds") == "b__seeds"  # only the exact suffix
    arms = comparison.group_arms(runs)
    assert {k: [m["run"] for m in v] for k, v in arms.items()} == {
        "a": ["a__seed0", "a__seed1"],
        "b": ["b"],
        "c": ["c__seed0", "c__seed1"],
    }
    assert comparison.choose_run(runs)[0]["run"] == "b"  # 0.84 against a's 0.81 and c's 0.73


def test_seed_aware_tables_say_the_seeds_and_adjust_their_family(tmp_path: Path) -> None:
    """Two seeds per arm: the interval comes from the two-level bootstrap, the table says the seeds
    and the verdict names the Holm family; a pair on one seed says single seed; a missing arm says so."""
    good = [scored_run(tmp_path / f"good__seed{s}", f).replace(seed=s) for s, f in ((0, 0.9), (1, 0.8))]
    poor = [scored_run(tmp_path / f"poor__seed{s}", f).replace(seed=s) for s, f in ((0, 0.1), (1, 0.2))]
    lone = scored_run(tmp_path / "lone", 0.5)
    runs = [*good, *poor, lone]
    diff = comparison.paired_arms(good, poor, n_boot=300)
    assert diff["seeds"] == [2, 2] and not diff["kaggle"]["single_seed"]
    by_hand = (
        comparison.paired(good[0], poor[0])["kaggle"]["diff"]
        + comparison.paired(good[1], poor[1])["kaggle"]["diff"]
    )
    assert diff["kaggle"]["diff"] == pytest.approx(by_hand / 2)
    table = comparison.pairs_table(
        runs,
        [["good__seed0", "poor", "good vs poor"], ["lone", "poor", "lone vs poor"], ["x", "poor", "gone"]],
    ).set_index("comparison")
    assert table.loc["good vs poor", "training seeds"] == "2 vs 2 seeds"
    assert (
        table.loc["good vs poor", "Kaggle: verdict"]
        == "gain: excludes 0 after Holm adjustment over 2 comparisons"
    )
    assert table.loc["lone vs poor", "Kaggle: verdict"].endswith(
        "after Holm adjustment over 2 comparisons; single seed"
    )
    assert table.loc["gone", "Kaggle difference [95% CI]"] == "not compared: x not among the runs"
    against_empty = comparison.paired_table(runs, None).set_index("run")
    assert list(against_empty.index) == ["good", "poor", "lone"]
    assert against_empty.loc["good", "training seeds"] == "2 seeds"
    assert against_empty.loc["lone", "training seeds"] == "single seed"
    assert against_empty["Kaggle: verdict"].str.contains("over 3 comparisons").all()
    against_good = comparison.paired_table(runs, good[1]).set_index("run")
    assert list(against_good.index) == ["poor", "lone"] and set(against_good["against"]) == {"good"}
    assert against_good.loc["poor", "Kaggle: verdict"].startswith("loss: excludes 0")


def test_find_arm_gives_every_seed_of_an_arm_and_one_run_of_a_seeded_name(tmp_path: Path) -> None:
    """A name without __seed<N> is the arm (its seeds in order; an unseeded folder of that name is
    an arm of one); a seeded name is that run; an absent one is named with the folder searched."""
    runs = [
        scored_run(tmp_path / "a__seed2", 0.5).replace(seed=2),
        scored_run(tmp_path / "a__seed0", 0.5).replace(seed=0),
        scored_run(tmp_path / "b", 0.5),
    ]
    assert [m["run"] for m in comparison.find_arm(runs, "a")] == ["a__seed0", "a__seed2"]
    assert [m["run"] for m in comparison.find_arm(runs, "a__seed2")] == ["a__seed2"]
    assert [m["run"] for m in comparison.find_arm(runs, "b")] == ["b"]
    with pytest.raises(comparison.ComparisonError, match="gate: run 'c' not found under w"):
        comparison.find_arm(runs, "c", "w", "gate")


def test_arm_value_is_the_seeds_mean_with_an_interval_that_counts_the_seeds(tmp_path: Path) -> None:
    """An arm's test value is the mean over its seeds of each seed's; seeds that disagree widen its
    interval against seeds that agree, on the same images; one seed is its image interval."""
    spread = [
        scored_run(tmp_path / f"s__seed{s}", f, images=40).replace(seed=s)
        for s, f in enumerate((0.1, 0.5, 0.9))
    ]
    alike = [scored_run(tmp_path / f"a__seed{s}", 0.5, images=40).replace(seed=s) for s in range(3)]
    wide, narrow = (comparison.arm_value(arm, n_boot=400) for arm in (spread, alike))
    assert wide["value"] == pytest.approx(sum(m["test"]["kaggle"] for m in spread) / 3)
    assert wide["high"] - wide["low"] > 1.5 * (narrow["high"] - narrow["low"])
    assert wide["seeds"] == 3 and not wide["single_seed"]
    defect = comparison.arm_value(spread, "defect_dice", n_boot=400)
    assert defect["value"] == pytest.approx(sum(m["test"]["defect_dice"] for m in spread) / 3)
    assert defect["low"] < defect["value"] < defect["high"]
    one = comparison.arm_value(spread[:1], n_boot=400)
    assert one["single_seed"] and one["low"] <= one["value"] <= one["high"]
    with pytest.raises(comparison.ComparisonError, match="what='iou'"):
        comparison.arm_value(spread, "iou")
