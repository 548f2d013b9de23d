"""The real-data plans run the reference's study: what every training run will execute with
(the notebook's defaults merged with the plan), and ``steelnb run PLAN --dry-run``."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from steelnb import cli
from steelnb.batch import pipeline, plans
from steelnb.data.config import TrainConfig
from steelnb.judge.comparison import arm_of

REPO = Path(__file__).resolve().parents[1]
REAL_PLANS = ["full", "resnet50", "efficientnet-b3", "efficientnet-b4", "ablation"]
ENCODERS = {"resnet50", "efficientnet-b3", "efficientnet-b4"}  # the reference's three
REFERENCE_RUN = (
    "efficientnet-b4__dice_bce__256x768__reference-subset"  # an arm: its seeds' folders end in __seed<N>
)
SEEDS = [0, 1, 2]  # every real plan's training seeds


def _train_runs(plan: str) -> list[dict]:
    return [r["parameters"] for r in pipeline.effective_runs(plan) if r["notebook"] == "03_train"]


def _folder(p: dict) -> str:
    """The run folder 03_train writes (its default run name when the plan gives none)."""
    name = p["run_name"] or f"{p['encoder']}__{p['loss']}__{p['height']}x{p['width']}"
    return f"{p['out_dir']}/{name}"


def test_effective_runs_merge_notebook_defaults_with_the_plan(tmp_path: Path) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    (tmp_path / "notebooks").mkdir()
    cell = new_code_cell('a: int = 1  # kept\nb: str = "nb"  # overridden\nc: float = 0.5  # by defaults')
    cell.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(tmp_path / "notebooks" / "01_x.ipynb"))
    plan = {
        "name": "t",
        "notebooks_dir": str(tmp_path / "notebooks"),
        "defaults": {"c": 2.0, "zz": 9},
        "stages": [{"name": "s", "runs": [{"notebook": "01_x", "matrix": {"b": ["p", "q"]}}]}],
    }
    runs = pipeline.effective_runs(plan)
    assert [r["parameters"] for r in runs] == [{"a": 1, "b": "p", "c": 2.0}, {"a": 1, "b": "q", "c": 2.0}]
    assert [set(r) for r in runs] == [{"slug", "notebook", "stage", "parameters"}] * 2
    assert [(r["notebook"], r["stage"]) for r in runs] == [("01_x", "s")] * 2
    # a string parameter names a matrix parameter as {name}: one value per combination; other braces stay
    plan["stages"][0]["runs"][0]["parameters"] = {"b": "run__seed{c}_{other}"}
    plan["stages"][0]["runs"][0]["matrix"] = {"c": [0, 1]}
    assert [r["parameters"]["b"] for r in pipeline.effective_runs(plan)] == [
        "run__seed0_{other}",
        "run__seed1_{other}",
    ]


@pytest.mark.parametrize("plan", REAL_PLANS)
def test_every_training_run_is_the_reference_recipe(plan: str) -> None:
    runs = _train_runs(plan)
    assert runs, f"{plan}: no 03_train run"
    for p in runs:
        what = f"{plan}: {p['encoder']}, {p['loss']}, {p['height']}x{p['width']}, {p['run_name']!r}"
        assert p["encoder_weights"] == "imagenet", what
        assert p["max_images"] == 0, what
        assert p["data_dir"] == "../data/severstal", what
        assert p["folds"] == "folds.csv", what
        assert p["encoder"] in ENCODERS, what
        assert (p["height"], p["width"]) in {(256, 768), (256, 1600)}, what
        assert (p["epochs"], p["num_workers"]) == (40, 8), what
        assert p["batch_size"] == (8 if p["width"] == 1600 else 16), what
        if arm_of(p["run_name"]) == REFERENCE_RUN:
            assert plan == "full", what
            assert p["subset"] == "subset_balanced.csv", what
            assert (p["encoder"], p["loss"], p["height"], p["width"]) == (
                "efficientnet-b4",
                "dice_bce",
                256,
                768,
            )
        else:
            assert p["subset"] == "subset_study.csv", what
    folders = [_folder(p) for p in runs]
    assert len(set(folders)) == len(folders), f"{plan}: two runs write one folder: {folders}"


def test_full_has_every_encoder_at_256x768_and_the_reference_run() -> None:
    runs = _train_runs("full")
    study = [p for p in runs if p["subset"] == "subset_study.csv"]
    assert {p["encoder"] for p in study if (p["height"], p["width"]) == (256, 768)} == ENCODERS
    assert {p["loss"] for p in study if p["encoder"] == "efficientnet-b4"} == {
        "dice_bce",
        "tversky",
        "focal",
        "lovasz",
    }
    ref = [p for p in runs if arm_of(p["run_name"]) == REFERENCE_RUN]
    assert sorted(p["seed"] for p in ref) == SEEDS
    # its own folder: the ablation and the best-run choice compare runs of the study's subset only
    assert ref[0]["out_dir"] != study[0]["out_dir"]
    assert "run_name" in plans._declared(REPO / "notebooks" / "03_train.ipynb")
    run = next(
        r
        for r in pipeline.load_plan("full").runs
        if arm_of(r.parameters.get("run_name", "")) == REFERENCE_RUN
    )
    assert run.title == "Training: as the reference did (mask-balanced subset), seed 0"


@pytest.mark.parametrize("plan", ["full", "resnet50"])
def test_resnet50_also_at_full_width(plan: str) -> None:
    assert any(
        p["encoder"] == "resnet50" and (p["height"], p["width"]) == (256, 1600) for p in _train_runs(plan)
    )


def test_dry_run_json_lists_every_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "full", "--dry-run", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    plan = pipeline.load_plan("full")
    assert [r["slug"] for r in runs] == [r.slug for r in plan.runs]
    assert all({"slug", "notebook", "stage", "parameters"} <= set(r) for r in runs)
    train = [r["parameters"] for r in runs if r["notebook"] == "03_train"]
    assert train == _train_runs("full")
    assert sum(arm_of(p["run_name"]) == REFERENCE_RUN for p in train) == len(SEEDS)


@pytest.mark.parametrize("plan", REAL_PLANS)
def test_every_training_run_of_a_real_plan_trains_at_three_seeds(
    plan: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The plan's ``seeds``: each training run at seeds 0, 1, 2, the three alike but for the seed and
    a run folder ending in __seed<N>, so that comparison.arm_of groups them into one arm, named as
    the folder of the run without seeds (its run_name, or the name 03 derives); the dry run lists
    every seeded run, and ``--seeds 0`` trains one seed of each arm."""
    runs = _train_runs(plan)
    arms: dict[str, list[dict]] = {}
    for p in runs:
        assert re.fullmatch(rf".+__seed{p['seed']}", p["run_name"]), p["run_name"]
        arms.setdefault(arm_of(p["run_name"]), []).append(p)
    assert len(runs) == len(SEEDS) * len(arms)
    for arm, ps in arms.items():
        assert sorted(p["seed"] for p in ps) == SEEDS, arm
        rest = [{k: v for k, v in p.items() if k not in ("seed", "run_name")} for p in ps]
        assert all(r == rest[0] for r in rest), arm
        derived = f"{ps[0]['encoder']}__{ps[0]['loss']}__{ps[0]['height']}x{ps[0]['width']}"
        assert arm in (derived, REFERENCE_RUN), arm
    assert len({_folder(p) for p in runs}) == len(runs)
    one = _train_runs_at(plan, [0])
    assert [arm_of(p["run_name"]) for p in one] == list(arms) and {p["seed"] for p in one} == {0}
    assert cli.main(["run", plan, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "seeds: 0, 1, 2: each run of 03_train once per seed" in text
    for r in pipeline.load_plan(plan).runs:
        assert f"] {r.slug}  ({r.notebook}.ipynb: {r.title})" in text
    if plan != "full":  # the per-encoder and ablation plans write folders of the full plan
        full = {_folder(p) for p in _train_runs("full")}
        assert {_folder(p) for p in runs} <= full, plan


def _train_runs_at(plan: str, seeds: list[int]) -> list[dict]:
    return [
        r["parameters"]
        for r in pipeline.effective_runs(pipeline.load_plan(plan, seeds))
        if r["notebook"] == "03_train"
    ]


def test_full_plan_arms_are_the_study_and_the_reference_run() -> None:
    """plans/full.yaml's eight arms, three seeds each: the three encoders at 256x768, resnet50 at
    256x1600, efficientnet-b4 with the three other losses, and the reference-subset run."""
    arms = {arm_of(p["run_name"]) for p in _train_runs("full")}
    assert arms == {
        "resnet50__dice_bce__256x768",
        "efficientnet-b3__dice_bce__256x768",
        "efficientnet-b4__dice_bce__256x768",
        "resnet50__dice_bce__256x1600",
        "efficientnet-b4__tversky__256x768",
        "efficientnet-b4__focal__256x768",
        "efficientnet-b4__lovasz__256x768",
        REFERENCE_RUN,
    }
    assert pipeline.load_plan("full").seeds == SEEDS


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("plan", ["full", "smoke"])  # smoke: a real run would generate its data set first
def test_dry_run_writes_nothing(
    plan: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks")
    (tmp_path / "plans").mkdir()
    shutil.copy(REPO / "plans" / f"{plan}.yaml", tmp_path / "plans" / f"{plan}.yaml")
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    assert cli.main(["run", plan, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert cli.main(["run", str(tmp_path / "plans" / f"{plan}.yaml"), "--dry-run", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / "book").exists() and not (tmp_path / "data").exists()
    spec = yaml.safe_load((tmp_path / "plans" / f"{plan}.yaml").read_text())
    assert str(tmp_path / "notebooks") in text  # the copy was read, not the repository's plan
    for r in runs:
        assert f"[{r['stage']}] {r['slug']}" in text
    for k, v in spec["defaults"].items():  # plan values are shown and marked
        if any(k in r["parameters"] for r in runs):
            assert re.search(rf"^  \* {re.escape(k)} *= {re.escape(repr(v))}$", text, re.M), k


def test_json_needs_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "full", "--json"]) == 2
    assert "--dry-run" in capsys.readouterr().err


def _smoke_study_and_steps() -> tuple[list[dict], list[dict]]:
    """The smoke's training runs: (the study's, in weights/smoke; the recipe's steps and the
    classification stage, each in its own folder under weights/smoke-variants)."""
    train = _train_runs("smoke")
    study = [p for p in train if p["out_dir"] == "../weights/smoke"]
    return study, [p for p in train if p not in study]


LITE0 = "tu-tf_efficientnet_lite0"


def test_smoke_runs_train_on_one_budget_and_are_judged_alike() -> None:
    """The embedded study's training runs: the reference's three encoders with Dice+BCE from
    scratch, differing only in encoder (and the EfficientNets' third epoch); EfficientNet-Lite0
    from ImageNet with each of the four losses, differing only in loss; the same encoder from
    scratch and from a classification stage, with the ImageNet Dice+BCE run's steps. All share
    data, split, size and evaluation, so the report may compare them."""
    train, steps = _smoke_study_and_steps()
    assert not any(p["init_from"] for p in train + steps)  # every start is ImageNet or scratch
    scratch = [p for p in train if not p["encoder_weights"] and p["encoder"] in ENCODERS]
    assert {(p["encoder"], p["loss"]) for p in scratch} == {(e, "dice_bce") for e in ENCODERS}
    ablation = [p for p in train if p["encoder_weights"] == "imagenet"]
    assert sorted(p["loss"] for p in ablation) == sorted(["dice_bce", "tversky", "focal", "lovasz"])
    assert all(p["encoder"] == LITE0 and not p["run_name"] for p in ablation)
    judged = (
        "data_dir",
        "subset",
        "folds",
        "height",
        "width",
        "eval_tta",
        "tune_height",
        "tune_width",
        "seed",
    )
    base = ablation[0]
    assert all({k: p[k] for k in judged} == {k: base[k] for k in judged} for p in train + steps)
    rest = [{k: v for k, v in p.items() if k not in ("encoder", "epochs")} for p in scratch]
    assert all(r == rest[0] for r in rest)
    assert all((p["encoder_depth"], len(p["decoder_channels"])) == (4, 4) for p in train + steps)
    # about one budget of time: the EfficientNets' step costs about 0.6x ResNet-50's
    assert {p["encoder"]: p["epochs"] for p in scratch} == {
        "resnet50": 2,
        "efficientnet-b3": 3,
        "efficientnet-b4": 3,
    }
    rest = [{k: v for k, v in p.items() if k != "loss"} for p in ablation]
    assert all(r == rest[0] for r in rest)
    lite = {p["run_name"]: p for p in train if p["encoder"] == LITE0 and p["run_name"]}
    dice = next(p for p in ablation if p["loss"] == "dice_bce")
    twin = lite[f"{LITE0}__dice_bce__64x416__scratch"]  # the same steps from random weights
    # the twin differs in its start only: on the class-balanced set the 1 % head prior serves the
    # ImageNet runs too (validation, bench/learning.md)
    assert {k for k in dice if dice[k] != twin[k]} == {"encoder_weights", "run_name"}
    assert (twin["encoder_weights"], twin["head_prior"], dice["head_prior"]) == ("", 0.01, 0.01)
    first = lite[f"{LITE0}__dice_bce__64x416__cls-first"]
    stage = next(p for p in steps if p["seg_weight"] == 0)
    assert first["encoder_weights"] == f"{_folder(stage)}/last.ckpt"
    assert {k for k in dice if dice[k] != first[k]} == {"encoder_weights", "run_name"}
    assert stage["cls_weight"] > 0 and stage["encoder_weights"] == "imagenet" and stage["encoder"] == LITE0
    plan = pipeline.load_plan("smoke")
    stage_of = {r.slug: i for i, st in enumerate(plan.stages) for r in st}
    assert stage_of["03_train__lite0_cls_first"] > stage_of["03_train__lite0_cls_stage"]
    pairs = next(r for r in pipeline.effective_runs("smoke") if r["notebook"] == "06_results")["parameters"][
        "pairs"
    ]
    names = {_folder(p).rsplit("/", 1)[1] for p in train}
    assert all(a in names and b in names for a, b, _ in pairs) and len(pairs) == 2


def test_smoke_recipe_steps_differ_from_their_base_only_in_the_step() -> None:
    """The smoke's two recipe steps that train (the classifier gate and the pseudo-label round)
    are the Lite0 ImageNet Dice+BCE run again with only the step added (and their own folder), so
    08_recipe's paired gain is the step's and not, say, another epoch's; 07 and 08 come after every
    run they read."""
    study, steps = _smoke_study_and_steps()
    base = next(
        p
        for p in study
        if p["encoder"] == LITE0 and p["encoder_weights"] == "imagenet" and p["loss"] == "dice_bce"
    )
    changed = {"cls_weight", "pseudo_labels", "pseudo_share", "run_name", "out_dir"}
    steps = [p for p in steps if p["seg_weight"]]  # the classification stage is the study's
    assert len(steps) == 2
    for p in steps:
        assert {k for k in p if p[k] != base[k]} <= changed, {
            k: (base[k], p[k]) for k in p if p[k] != base[k]
        }
    assert {p["run_name"] for p in steps} == {
        f"{LITE0}__dice_bce__gate",
        f"{LITE0}__dice_bce__pseudo",
    }
    runs = pipeline.effective_runs("smoke")
    waits = pipeline.waits_for("smoke")  # what has ended before each run starts, side by side
    trains = [r for r in runs if r["notebook"] == "03_train"]
    folder = {TrainConfig.from_parameters(r["parameters"]).name: r["slug"] for r in trains}
    assert len(folder) == len(trains) == 12  # one folder each
    # 07 labels with the recipe's base run; the pseudo-label run trains on 07's labels; the
    # classification-first run starts from the classification stage's encoder
    labeller = next(r for r in runs if r["notebook"] == "07_pseudo_labels")
    assert labeller["parameters"]["runs"] == [f"{LITE0}__dice_bce__64x416"]
    assert folder[f"{LITE0}__dice_bce__64x416"] in waits["07_pseudo_labels"]
    assert "07_pseudo_labels" in waits["03_train__pseudo"]
    assert folder[f"{LITE0}__cls-stage"] in waits[folder[f"{LITE0}__dice_bce__64x416__cls-first"]]
    # 08 after every run it steps through
    recipe = next(r for r in runs if r["notebook"] == "08_recipe")["parameters"]
    read = [recipe["base"], recipe["gate_run"], recipe["pseudo_run"], *recipe["ensemble"]]
    assert {folder[n] for n in read} <= waits["08_recipe"]
    # 05 chooses among every study run (as 06 does) and 04 reads them: both after every run that
    # writes a folder of weights/smoke; 06 reads what 05, 08 and 04 wrote: after every run
    study = {r["slug"] for r in trains if r["parameters"]["out_dir"] == "../weights/smoke"}
    assert len(study) == 9 and study <= waits["05_evaluate"] and study <= waits["04_loss_ablation"]
    assert set(waits) - {"06_results"} == waits["06_results"]


def test_seeds_plan_runs_the_smokes_arms_at_three_seeds(capsys: pytest.CaptureFixture[str]) -> None:
    """plans/seeds.yaml: each arm the smoke compares (the mission's three encoders from scratch,
    Lite0 from ImageNet with each loss, from scratch, classification first, and its classification
    stage, and the recipe's gate and pseudo-label runs) at seeds 0, 1, 2, the three
    runs of an arm alike but for the seed and a __seed<N> run name (comparison.arm_of groups them),
    each arm the smoke's run but for the seed, name and folder; the pairs of its results page and
    the steps of its recipe page name arms it trains; and ``steelnb run seeds --dry-run`` lists
    every run."""
    from steelnb.judge.comparison import arm_of

    assert cli.main(["run", "seeds", "--dry-run", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["slug"] for r in runs] == [r.slug for r in pipeline.load_plan("seeds").runs]
    train = _train_runs("seeds")
    names = [p["run_name"] for p in train]
    assert len(set(names)) == len(names) == 36 and all(re.search(r"__seed[012]$", n) for n in names)
    arms: dict[str, list[dict]] = {}
    for p in train:
        arms.setdefault(arm_of(p["run_name"]), []).append(p)
    assert all(sorted(p["seed"] for p in ps) == [0, 1, 2] for ps in arms.values()) and len(arms) == 12
    per_seed = ("seed", "run_name", "encoder_weights", "pseudo_labels")  # each seed's own inputs
    for ps in arms.values():
        rest = [{k: v for k, v in p.items() if k not in per_seed} for p in ps]
        assert all(r == rest[0] for r in rest)
    # the same arms as the smoke's, differing only in seed, name, folder and each seed's inputs
    smoke = {_folder(p).rsplit("/", 1)[1]: p for p in _train_runs("smoke")}
    other = {*per_seed, "out_dir"}
    for arm, ps in arms.items():
        twin = smoke[arm]
        assert {k for k in twin if twin[k] != ps[0][k]} <= other, arm
        if twin["encoder_weights"] in ("", "imagenet"):
            assert all(p["encoder_weights"] == twin["encoder_weights"] for p in ps)
    first = arms[f"{LITE0}__dice_bce__64x416__cls-first"]
    assert all(p["encoder_weights"].endswith(f"cls-stage__seed{p['seed']}/last.ckpt") for p in first)
    results = next(r for r in runs if r["notebook"] == "06_results")
    assert (
        results["slug"] == "06_results__seeds" and results["parameters"]["weights_dir"] == "../weights/seeds"
    )
    assert all(a in arms and b in arms for a, b, _ in results["parameters"]["pairs"])


@pytest.mark.parametrize("plan", ["seeds", "recipe"])
def test_a_seeded_recipe_judges_every_step_over_its_seeds(plan: str) -> None:
    """The recipe's steps at three seeds (plans/seeds.yaml's on the synthetic set, plans/recipe.yaml's
    on the Kaggle data): 08 names arms the plan trains at every seed, after them; 07 labels once
    per seed with that seed's runs, before the pseudo run of the same seed, which trains on that
    seed's file."""
    from steelnb.judge.comparison import arm_of

    runs = pipeline.effective_runs(plan)
    order = {r["slug"]: i for i, r in enumerate(runs)}
    arms: dict[str, list[dict]] = {}
    for p in _train_runs(plan):
        arms.setdefault(arm_of(p["run_name"]), []).append(p)
    assert all(sorted(p["seed"] for p in ps) == SEEDS for ps in arms.values())
    recipe = next(r for r in runs if r["notebook"] == "08_recipe")
    steps = recipe["parameters"]
    named = [steps[k] for k in ("base", "gate_run", "resize_run", "pseudo_run", "pos_weight_run") if steps[k]]
    assert all(n in arms for n in [*named, *steps["ensemble"]]) and steps["pseudo_run"]
    labels = {}
    for r in (r for r in runs if r["notebook"] == "07_pseudo_labels"):
        seeds = {int(n.rsplit("__seed", 1)[1]) for n in r["parameters"]["runs"]}
        assert len(seeds) == 1 and all(arm_of(n) in arms for n in r["parameters"]["runs"])
        labels[seeds.pop()] = r
    assert sorted(labels) == SEEDS
    for p in arms[steps["pseudo_run"]]:
        label = labels[p["seed"]]
        assert p["pseudo_labels"] == label["parameters"]["out_csv"] == f"pseudo_labels__seed{p['seed']}.csv"
        assert order[label["slug"]] < order[f"03_train__pseudo__seed{p['seed']}"]
    assert order[recipe["slug"]] > max(v for k, v in order.items() if k.startswith(("03_", "07_")))


#: What every real training run sets explicitly (not 03's CPU defaults), with its value: smp's
#: head initialisation, the reference's optimiser and schedule, and the evaluation of 05 (both
#: flips, post-processing tuned at full resolution, the size every run is scored at).
EXPLICIT = {
    "head_prior": 0.0,
    "schedule": "plateau",
    "lr_encoder": 0.001,
    "lr_decoder": 0.01,
    "early_stopping_patience": 5,
    "eval_tta": "hv",
    "tune_height": 256,
    "tune_width": 1600,
}


@pytest.mark.parametrize("plan", REAL_PLANS)
def test_real_plans_set_every_departure_explicitly(plan: str, capsys: pytest.CaptureFixture[str]) -> None:
    """In the dry run (text: ``*`` marks what the plan sets; JSON: the values), every training run
    of a real plan takes the settings of EXPLICIT from the plan, none from 03's CPU defaults; 05
    evaluates with the TTA and tuning size the runs were tuned with."""
    assert cli.main(["run", plan, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert cli.main(["run", plan, "--dry-run", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    blocks = {b.split("  (", 1)[0].split("] ", 1)[1]: b for b in text.split("\n\n[")[1:]}
    train = [r for r in runs if r["notebook"] == "03_train"]
    assert train
    declared = plans._declared(REPO / "notebooks" / "03_train.ipynb")
    for r in train:
        assert {k: r["parameters"][k] for k in EXPLICIT} == EXPLICIT, r["slug"]
        for k, v in EXPLICIT.items():
            assert re.search(rf"^  \* {k} *= {re.escape(repr(v))}$", blocks[r["slug"]], re.M), (r["slug"], k)
    # the notebook's own defaults are the CPU ones: the plan is what changes them
    assert (declared["head_prior"], declared["eval_tta"], declared["tune_height"]) != (0.0, "hv", 256)
    for r in (r for r in runs if r["notebook"] == "05_evaluate"):
        p = r["parameters"]
        assert (p["tta"], p["tune_height"], p["tune_width"]) == ("hv", 256, 1600)
