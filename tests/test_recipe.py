"""The recipe table: each step against the one it builds on, paired on the same test images,
with Holm-adjusted verdicts over the table's steps; and the images/s of a configuration."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from scored import scored_run

from steelnb.data.images import list_images
from steelnb.judge import comparison
from steelnb.model.runfolder import RunFolder, RunRecord
from steelnb.winners import recipe


def _run(folder: Path, found: float, images: int = 40) -> dict:
    """Test images without false positives, intervals from 300 resamples."""
    return scored_run(folder, found, images=images, false_positive=False, n_boot=300)


def test_each_step_is_paired_with_the_one_it_builds_on(tmp_path: Path) -> None:
    base, better, same = (_run(tmp_path / n, f) for n, f in (("base", 0.3), ("better", 0.9), ("same", 0.3)))
    steps = [
        recipe.Step("single run", base),
        recipe.Step("ensemble", better, against="single run"),
        recipe.Step("pseudo-labels", same, against="single run"),
    ]
    table = recipe.step_table(steps, speeds={"single run": 2.0}, n_boot=300).set_index("step")
    assert table.loc["single run", "against"] == "predicting nothing"
    assert table["all-empty"].tolist() == [base["test"]["all_empty_kaggle"]] * 3  # the same test images
    gain = "gain: excludes 0 after Holm adjustment over 3 comparisons; single seed"
    assert table.loc["single run", "verdict"] == gain  # 30 % of every defect beats nothing
    assert table.loc["ensemble", "verdict"] == gain
    assert table.loc["ensemble", "Holm p"] < 0.05
    assert table.loc["ensemble", "gain [95% CI]"].startswith("0.")  # Dice 0.95 vs 0.46 on half the pairs
    assert table.loc["pseudo-labels", "verdict"].startswith("includes 0 after Holm")  # identical scores
    assert table.loc["pseudo-labels", "Holm p"] == 1.0
    assert table.loc["pseudo-labels", "gain [95% CI]"] == "0.0000 [0.0000, 0.0000]"
    assert table.loc["single run", "images/s"] == 2.0 and pd.isna(table.loc["ensemble", "images/s"])


def test_bad_steps_are_named(tmp_path: Path) -> None:
    base = _run(tmp_path / "base", 0.5)
    with pytest.raises(recipe.RecipeError, match="'gate': measured against 'nothing here'"):
        recipe.step_table([recipe.Step("base", base), recipe.Step("gate", base, against="nothing here")])
    with pytest.raises(recipe.RecipeError, match="'raw': .* no test-split evaluation"):
        recipe.step_table([recipe.Step("raw", {"run": "raw"})])
    other = _run(tmp_path / "other", 0.5, images=20)
    with pytest.raises(recipe.RecipeError, match="'other': .*different test images"):
        recipe.step_table([recipe.Step("base", base), recipe.Step("other", other, against="base")])


def test_steps_of_several_seeds_are_arms_judged_over_their_seeds(tmp_path: Path) -> None:
    """A step of three seeds: its row names the arm and its seeds, its value is their mean with the
    interval over seeds and images, its difference the two-level bootstrap (no "single seed"); an arm
    whose seeds were scored on other test images is refused, naming the step."""
    base = [_run(tmp_path / f"base__seed{s}", f).replace(seed=s) for s, f in enumerate((0.3, 0.35, 0.25))]
    better = [_run(tmp_path / f"ens__seed{s}", f).replace(seed=s) for s, f in enumerate((0.9, 0.85, 0.95))]
    steps = [
        recipe.Step("single run", base[0], arm=base),
        recipe.Step("ensemble", better[0], against="single run", arm=better),
    ]
    table = recipe.step_table(steps, n_boot=300).set_index("step")
    assert list(table["run"]) == ["base (3 seeds)", "ens (3 seeds)"]
    assert list(table["training seeds"]) == ["3 seeds", "3 vs 3 seeds"]
    assert table.loc["ensemble", "verdict"] == "gain: excludes 0 after Holm adjustment over 2 comparisons"
    mean = sum(m["test"]["kaggle"] for m in base) / 3
    assert table.loc["single run", "kaggle"] == pytest.approx(mean)
    assert table.loc["single run", "Kaggle [95% CI]"].startswith(f"{mean:.3f} [")
    odd = [*better[:2], _run(tmp_path / "ens__seed9", 0.9, images=20).replace(seed=9)]
    with pytest.raises(
        recipe.RecipeError, match="'ensemble': .*seeds of one arm scored on different test images"
    ):
        recipe.step_table(
            [steps[0], recipe.Step("ensemble", odd[0], against="single run", arm=odd)], n_boot=50
        )


def test_ensemble_groups_make_one_ensemble_per_shared_seed() -> None:
    """Member arms with seeds: one ensemble per seed every member has (the seed's runs); members
    without seeds: the one ensemble; members sharing no seed: refused, naming them."""

    def rec(name: str) -> RunRecord:
        return RunRecord(RunFolder(f"w/{name}"), {"run": name})

    seeded = [[rec("a__seed0"), rec("a__seed1"), rec("a__seed2")], [rec("b__seed1"), rec("b__seed0")]]
    groups = recipe.ensemble_groups(seeded)
    assert {k: [p.name for p in v] for k, v in groups.items()} == {
        "__seed0": ["a__seed0", "b__seed0"],
        "__seed1": ["a__seed1", "b__seed1"],
    }
    assert {k: [p.name for p in v] for k, v in recipe.ensemble_groups([[rec("a")], [rec("b")]]).items()} == {
        "": ["a", "b"]
    }
    with pytest.raises(recipe.RecipeError, match="ensemble of a, c: the member arms share no training seed"):
        recipe.ensemble_groups([seeded[0], [rec("c__seed5")]])


def test_throughput_of_a_run_and_of_an_ensemble(tiny_run: Path, synthetic_data: Path) -> None:
    images = [synthetic_data / "train_images" / n for n in list_images(synthetic_data / "train_images")[:2]]
    one = recipe.throughput([tiny_run], images, batch_size=2)
    two = recipe.throughput([tiny_run, tiny_run], images, batch_size=2)
    assert one > 0 and two > 0  # measured, not compared: timings belong in bench/, not in tests
    with pytest.raises(recipe.RecipeError, match="no images"):
        recipe.throughput([tiny_run], [])


def test_build_steps_keeps_the_named_steps_in_the_recipe_order() -> None:
    """The single run first; then gate and resize, the ensemble, pseudo-labels and pos_weight, each
    only where its run is named (or the ensemble given), each against the single run."""
    runs = [RunRecord(RunFolder(f"w/{n}"), {"run": n}) for n in ("base", "gate", "resize", "pseudo", "posw")]
    named = {"gate_run": "gate", "resize_run": "resize", "pseudo_run": "pseudo", "pos_weight_run": "posw"}
    ens = {"run": "ensemble__a+b"}
    steps = recipe.build_steps(runs[0], runs, named, ensemble=ens, members=["w/a", "w/b"])
    assert [s.name for s in steps] == [
        "single run",
        "classifier gate",
        "whole resized images (no crops)",
        "ensemble of 2",
        "pseudo-labels",
        "per-class BCE pos_weight",
    ]
    assert [s.against for s in steps] == [None] + ["single run"] * 5
    assert [[str(w) for w in s.weights] for s in steps] == [
        ["w/base"],
        ["w/gate"],
        ["w/resize"],
        ["w/a", "w/b"],
        ["w/pseudo"],
        ["w/posw"],
    ]
    assert steps[3].metrics is ens and steps[1].note.startswith("head trained jointly")
    few = recipe.build_steps(runs[0], runs, {"pseudo_run": "pseudo", "gate_run": ""})
    assert [s.name for s in few] == ["single run", "pseudo-labels"]  # no ensemble metrics: no ensemble step
    with pytest.raises(comparison.ComparisonError, match="classifier gate: run 'absent' not found under w"):
        recipe.build_steps(runs[0], runs, {"gate_run": "absent"}, where="w")
