"""Paired comparisons of runs from their test_scores.csv: against the empty prediction they agree
with the run's own test block; a run against itself differs by nothing; other images are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from scored import scored_run

from steelnb import comparison


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
        table.loc["good", "Kaggle: real?"] == "real gain"
        and table.loc["good", "defect Dice: real?"] == "real gain"
    )
    same = comparison.paired(good, scored_run(tmp_path / "twin", 0.9), n_boot=200)
    assert same["kaggle"]["diff"] == 0 and comparison.verdict(same["kaggle"]) == "not separable from noise"
    with pytest.raises(ValueError, match="scored on different test images"):
        comparison.paired(good, scored_run(tmp_path / "other", 0.9, images=10))


def test_choose_run_selects_on_validation_and_says_why_not(tmp_path: Path) -> None:
    """05's choice: the best validation Kaggle metric (never test); a named run; clear errors for
    no runs, an unknown name and a run without a best epoch (it used to be a bare TypeError)."""
    good = {**scored_run(tmp_path / "good", 0.9), "best": {"kaggle": 0.80}}
    better_val = {**scored_run(tmp_path / "better_val", 0.5), "best": {"kaggle": 0.85}}
    broken = {**scored_run(tmp_path / "broken", 0.7), "best": None}
    chosen, _ = comparison.choose_run([good, better_val, broken])
    assert chosen["run"] == "better_val"  # chosen on validation although its test scores are lower
    assert comparison.choose_run([good, better_val], "good")[0]["run"] == "good"
    with pytest.raises(comparison.ComparisonError, match=r"'broken' under w has no best epoch"):
        comparison.choose_run([good, broken], "broken", where="w")
    with pytest.raises(comparison.ComparisonError, match=r"'nope' not found under w; runs: good, broken"):
        comparison.choose_run([good, broken], "nope", where="w")
    with pytest.raises(comparison.ComparisonError, match=r"^gate: run 'x' not found under w; runs: good$"):
        comparison.find_run([good], "x", "w", "gate")
    assert comparison.find_run([good, better_val], "better_val")["run"] == "better_val"
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
    recorded = {**other, "data": {"test_split": comparison.test_split(a)}}  # the data block wins
    assert len(comparison.comparable([a, b, recorded])[0]) == 3
    comparison.paired_table(kept, kept[0])  # the group that is kept can be paired


def test_an_ablation_compares_runs_from_one_start_only(tmp_path: Path) -> None:
    """same_start: the fine-tunes of one run are compared together and a run from scratch beside
    them is left out, named with both starts; without it (05, 06) all of them are comparable."""
    start = str(tmp_path / "b3__dice_bce")
    tuned = [{**scored_run(tmp_path / n, f), "init_from": start} for n, f in (("ft_a", 0.9), ("ft_b", 0.5))]
    scratch = scored_run(tmp_path / "scratch", 0.7)
    kept, left = comparison.comparable([*tuned, scratch], same_start=True)
    assert [m["run"] for m in kept] == ["ft_a", "ft_b"] and list(left["run"]) == ["scratch"]
    assert left["left out because"].iloc[0] == "another start: from scratch, the others from b3__dice_bce"
    assert len(comparison.comparable([*tuned, scratch])[0]) == 3
    assert list(comparison.test_table(kept)["starts from"]) == ["b3__dice_bce"] * 2
    assert comparison.test_table([scratch])["starts from"].iloc[0] == ""
