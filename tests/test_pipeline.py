"""Batch runs: plans are checked, a failed run does not stop the batch, finished runs are skipped,
parallel runs get one GPU each. Uses tiny stand-in notebooks (a kernel start is the only cost)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from nbout import write_notebook

from steelnb.batch import pipeline, plans


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A project folder: notebooks/ with a notebook that fails on request and records its GPU."""
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    write_notebook(
        nbs / "01_work.ipynb",
        "value: int = 1  # a number\nfail: bool = False  # raise on purpose\nnap: float = 0.0  # seconds to sleep",
        "import os, time, json\ntime.sleep(nap)\n"
        "if fail:\n    raise RuntimeError(f'failing on purpose with value {value}')\n"
        "open(f'out_{value}.json', 'w').write(json.dumps({'gpu': os.environ.get('CUDA_VISIBLE_DEVICES'), 'cwd': os.getcwd(), "
        "'threads': os.environ.get('OMP_NUM_THREADS'), 'pid': os.getppid(), 'start': time.time(), "
        "'hf_offline': os.environ.get('HF_HUB_OFFLINE'), 'curve': __import__('ipykernel.kernelapp').kernelapp.IPKernelApp.instance().curve_secretkey is not None}))",
    )
    write_notebook(
        nbs / "02_after.ipynb",
        'tag: str = "x"  # a label',
        "print(sorted(os.listdir('.')) if False else tag)",
    )
    return tmp_path


def _plan(project: Path, runs: list[dict], parallel: bool = False, name: str = "p") -> Path:
    plan = {
        "name": name,
        "stages": [
            {"name": "work", "parallel": parallel, "runs": runs},
            {"name": "after", "runs": [{"notebook": "02_after"}]},
        ],
    }
    path = project / "plans" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(plan))
    return path


def test_unknown_parameter_is_a_plan_error(project: Path) -> None:
    path = _plan(project, [{"notebook": "01_work", "parameters": {"valeu": 3}}])
    with pytest.raises(pipeline.PlanError, match="valeu"):
        pipeline.load_plan(path)
    with pytest.raises(pipeline.PlanError, match="no plan named"):
        pipeline.find_plan("no-such-plan")


def test_matrix_expands_to_named_runs(project: Path) -> None:
    path = _plan(project, [{"notebook": "01_work", "matrix": {"value": [1, 2]}, "parameters": {"nap": 0.5}}])
    plan = pipeline.load_plan(path)
    assert [r.slug for r in plan.runs] == ["01_work__1_0.5", "01_work__2_0.5", "02_after"]
    assert plan.runs[0].parameters == {"value": 1, "nap": 0.5}
    assert plan.runs[0].title == "01_work: 1, 0.5"


def test_a_matrix_entry_names_its_runs_from_their_parameters(project: Path) -> None:
    entry = {"notebook": "01_work", "matrix": {"value": [1, 2]}, "parameters": {"nap": 0.5}}
    plan = pipeline.load_plan(
        _plan(project, [{**entry, "name": "01_work__v{value}", "title": "Work on {value}"}])
    )
    assert [(r.slug, r.title) for r in plan.runs[:2]] == [
        ("01_work__v1", "Work on 1"),
        ("01_work__v2", "Work on 2"),
    ]
    with pytest.raises(
        pipeline.PlanError, match=r"name '01_work__\{valeu\}': placeholder 'valeu' is not a parameter"
    ):
        pipeline.load_plan(_plan(project, [{**entry, "name": "01_work__{valeu}"}]))
    with pytest.raises(pipeline.PlanError, match="two runs named '01_work__same'"):
        pipeline.load_plan(_plan(project, [{**entry, "name": "01_work__same"}]))


#: A stand-in for 03_train: the parameters its run folder's name (``TrainConfig.name``) is made of,
#: and the dry run's estimate reads.
TRAIN_PARAMS = (
    'encoder: str = "resnet18"  # encoder\nloss: str = "dice_bce"  # loss\nheight: int = 64  # height\n'
    'width: int = 416  # width\ninit_from: str = ""  # start\nseed: int = 0  # seed\n'
    'run_name: str = ""  # folder name\nepochs: int = 1  # epochs (for the estimate)\nmax_images: int = 0  # all'
)


def _seeded_plan(project: Path, runs: list[dict], seeds: list[int] | None = None, **more) -> Path:
    """A plan of one stage of ``runs`` beside a 01_work run, with the stand-in 03_train."""
    write_notebook(project / "notebooks" / "03_train.ipynb", TRAIN_PARAMS, "pass")
    spec = {"name": "sd", "stages": [{"name": "train", "runs": [*runs, {"notebook": "01_work"}]}], **more}
    if seeds is not None:
        spec["seeds"] = seeds
    path = project / "plans" / f"{spec['name']}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(spec))
    return path


def test_plan_seeds_repeat_every_training_run_seed_after_seed(project: Path) -> None:
    """``seeds``: each 03_train run once per seed, with ``seed`` set and its folder, slug and title
    ending in the seed; a derived folder name is TrainConfig's (``__ft`` for a run that starts from
    another), an explicit one keeps its name; every training run at the first seed comes first; other
    notebooks run once; comparison.arm_of puts a run's seeds in one arm."""
    from steelnb.judge.comparison import arm_of

    runs = [
        {"notebook": "03_train", "matrix": {"loss": ["dice_bce", "tversky"]}},
        {"notebook": "03_train", "name": "03_train__mine", "parameters": {"run_name": "mine", "width": 800}},
        {"notebook": "03_train", "parameters": {"init_from": "../weights/x", "width": 1600}},
    ]
    plan = pipeline.load_plan(_seeded_plan(project, runs, [0, 2]))
    assert plan.seeds == [0, 2]
    got = [(r.slug, r.parameters.get("seed"), r.parameters.get("run_name")) for r in plan.stages[0]]
    assert got == [
        ("03_train__dice_bce__seed0", 0, "resnet18__dice_bce__64x416__seed0"),
        ("03_train__tversky__seed0", 0, "resnet18__tversky__64x416__seed0"),
        ("03_train__mine__seed0", 0, "mine__seed0"),
        ("03_train__1600_..-weights-x__seed0", 0, "resnet18__dice_bce__64x1600__ft__seed0"),
        ("01_work", None, None),
        ("03_train__dice_bce__seed2", 2, "resnet18__dice_bce__64x416__seed2"),
        ("03_train__tversky__seed2", 2, "resnet18__tversky__64x416__seed2"),
        ("03_train__mine__seed2", 2, "mine__seed2"),
        ("03_train__1600_..-weights-x__seed2", 2, "resnet18__dice_bce__64x1600__ft__seed2"),
    ]
    assert plan.stages[0][7].parameters == {"run_name": "mine__seed2", "width": 800, "seed": 2}
    arms = {arm_of(r.parameters["run_name"]) for r in plan.runs if r.notebook == "03_train"}
    assert arms == {
        "resnet18__dice_bce__64x416",
        "resnet18__tversky__64x416",
        "mine",
        "resnet18__dice_bce__64x1600__ft",
    }
    # without seeds the plan runs as written
    plain = pipeline.load_plan(_seeded_plan(project, runs))
    titles = {r.slug: r.title for r in plain.runs}
    assert all(
        r.title == f"{titles[r.slug.rsplit('__seed', 1)[0]]}, seed {r.slug[-1]}" for r in plan.runs[5:]
    )
    assert plain.seeds is None and [r.slug for r in plain.runs][:2] == [
        "03_train__dice_bce",
        "03_train__tversky",
    ]
    assert "seed" not in plain.runs[0].parameters and "seeds:" not in pipeline.describe_plan(plain)
    assert "seeds: 0, 2: each run of 03_train once per seed" in pipeline.describe_plan(plan)


def test_a_training_entry_with_its_own_seed_is_refused(project: Path) -> None:
    """An entry that sets ``seed`` (a matrix, a parameter) or defaults that do cannot take the
    plan's seeds as well: the error names the plan file and the entry."""
    matrix = {"notebook": "03_train", "matrix": {"seed": [0, 1]}, "parameters": {"run_name": "a__seed{seed}"}}
    with pytest.raises(
        pipeline.PlanError, match=r"sd\.yaml, stage 'train', run 1 \(03_train\): sets seed in its matrix"
    ):
        pipeline.load_plan(_seeded_plan(project, [matrix], [0]))
    own = [{"notebook": "03_train"}, {"notebook": "03_train", "name": "n", "parameters": {"seed": 3}}]
    with pytest.raises(
        pipeline.PlanError, match=r"sd\.yaml, stage 'train', run 2 \(n\): sets seed in its parameters"
    ):
        pipeline.load_plan(_seeded_plan(project, own, [0]))
    # a plan without seeds sets seed as it likes (a matrix over seed, a parameter)
    plain = pipeline.load_plan(_seeded_plan(project, own))
    assert [r.parameters.get("seed") for r in plain.runs] == [None, 3, None]
    path = _seeded_plan(project, [{"notebook": "03_train"}], [0], defaults={"seed": 4})
    with pytest.raises(pipeline.PlanError, match=r"sd\.yaml: defaults set seed"):
        pipeline.load_plan(path)
    with pytest.raises(pipeline.PlanError, match=r"sd\.yaml: seeds \[0\] but no run of 03_train"):
        pipeline.load_plan(_seeded_plan(project, [], [0]))
    for bad in ([], [0, 0], [-1], ["0"], 3):
        with pytest.raises(pipeline.PlanError, match="expected distinct non-negative integers"):
            pipeline.load_plan(_seeded_plan(project, [{"notebook": "03_train"}], bad))


def test_seed_placeholder_is_filled_per_seed_and_refused_where_nothing_fills_it(project: Path) -> None:
    """``{seed}`` in a string parameter of a seeded training run is that run's seed (each seed of a
    second run starting from the same seed's first: plans/seeds.yaml's classification first); where
    no plan seeds, ``--seeds`` or matrix over seed fill it, the plan is refused, naming the run and
    the parameter, instead of handing the braces to the notebook as text."""
    runs = [
        {"notebook": "03_train", "name": "a", "parameters": {"run_name": "a"}},
        {
            "notebook": "03_train",
            "name": "b",
            "parameters": {"run_name": "b", "init_from": "../w/a__seed{seed}"},
        },
    ]
    plan = pipeline.load_plan(_seeded_plan(project, runs, [0, 2]))
    got = {r.slug: r.parameters["init_from"] for r in plan.runs if r.slug.startswith("b")}
    assert got == {"b__seed0": "../w/a__seed0", "b__seed2": "../w/a__seed2"}
    with pytest.raises(pipeline.PlanError, match=r"sd\.yaml, run b: parameter init_from .*names \{seed\}"):
        pipeline.load_plan(_seeded_plan(project, runs))
    matrix = {
        "notebook": "03_train",
        "matrix": {"seed": [1]},
        "parameters": {"run_name": "m__seed{seed}", "init_from": "x{seed}"},
    }
    assert pipeline.load_plan(_seeded_plan(project, [matrix])).runs[0].parameters["init_from"] == "x1"


def test_a_per_seed_entry_runs_once_per_seed_with_its_placeholders_filled(project: Path) -> None:
    """``per_seed: true`` on a notebook that is no training run (07_pseudo_labels labelling with each
    seed's run): once per plan seed, ``{seed}`` filled in its strings and in the strings of its list
    parameters, slug and title ending in the seed; refused, naming the run, where no parameter names
    ``{seed}`` (each seed would write the same files), on a training run (seeded already), with a
    value that is not a boolean, and where no seeds fill it (the list is checked too)."""
    write_notebook(
        project / "notebooks" / "07_label.ipynb",
        'runs: list = []  # runs\nout_csv: str = "p.csv"  # written',
        "pass",
    )
    label = {
        "notebook": "07_label",
        "per_seed": True,
        "parameters": {"runs": ["a__seed{seed}", "b"], "out_csv": "p__seed{seed}.csv"},
    }
    plan = pipeline.load_plan(_seeded_plan(project, [{"notebook": "03_train"}, label], [0, 2]))
    got = [
        (r.slug, r.parameters.get("runs"), r.parameters.get("out_csv"))
        for r in plan.runs
        if r.notebook == "07_label"
    ]
    assert got == [
        ("07_label__seed0", ["a__seed0", "b"], "p__seed0.csv"),
        ("07_label__seed2", ["a__seed2", "b"], "p__seed2.csv"),
    ]
    assert [r.title for r in plan.runs if r.notebook == "07_label"] == [
        "07_label, seed 0",
        "07_label, seed 2",
    ]
    assert [r.slug for r in plan.runs].count("01_work") == 1  # an entry without per_seed: once
    same = {**label, "parameters": {"runs": ["a"]}}
    with pytest.raises(
        pipeline.PlanError, match=r"sd\.yaml, stage 'train', run 07_label: per_seed but no parameter"
    ):
        pipeline.load_plan(_seeded_plan(project, [{"notebook": "03_train"}, same], [0]))
    with pytest.raises(pipeline.PlanError, match="03_train: per_seed: a training run is repeated"):
        pipeline.load_plan(_seeded_plan(project, [{"notebook": "03_train", "per_seed": True}], [0]))
    with pytest.raises(pipeline.PlanError, match="07_label: per_seed 'yes': expected true or false"):
        pipeline.load_plan(
            _seeded_plan(project, [{"notebook": "03_train"}, {**label, "per_seed": "yes"}], [0])
        )
    with pytest.raises(pipeline.PlanError, match=r"run 07_label: parameter runs .*names \{seed\}"):
        pipeline.load_plan(_seeded_plan(project, [{**label, "parameters": {"runs": ["a__seed{seed}"]}}]))


def test_seeds_given_replace_the_plans_and_extends_inherits_them(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``load_plan(plan, seeds)`` and ``steelnb run PLAN --seeds ...`` replace the plan's seeds (one
    seed: ``--seeds 0``); a plan that extends a seeded plan has its seeds unless it sets its own."""
    from steelnb import cli

    path = _seeded_plan(project, [{"notebook": "03_train"}], [0, 1, 2])
    assert [r.slug for r in pipeline.load_plan(path).runs] == [
        "03_train__seed0",
        "01_work",
        "03_train__seed1",
        "03_train__seed2",
    ]
    assert [r.slug for r in pipeline.load_plan(path, seeds=[7]).runs] == ["03_train__seed7", "01_work"]
    assert cli.main(["run", str(path), "--dry-run", "--json", "--seeds", "0"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [(r["slug"], r["parameters"].get("seed")) for r in runs] == [
        ("03_train__seed0", 0),
        ("01_work", None),
    ]
    assert cli.main(["run", str(path), "--dry-run", "--seeds", "4", "5"]) == 0
    text = capsys.readouterr().out
    assert "plan sd: 3 run(s)" in text and "[train] 03_train__seed5" in text
    assert re.search(r"^  \* run_name *= 'resnet18__dice_bce__64x416__seed5'$", text, re.M)
    with pytest.raises(pipeline.PlanError, match="--seeds"):
        pipeline.load_plan(path, seeds=[1, 1])
    (project / "plans" / "kid.yaml").write_text(yaml.safe_dump({"extends": "sd", "name": "kid"}))
    assert pipeline.load_plan(project / "plans" / "kid.yaml").seeds == [0, 1, 2]
    (project / "plans" / "kid.yaml").write_text(
        yaml.safe_dump({"extends": "sd", "name": "kid", "seeds": [0]})
    )
    kid = pipeline.load_plan(project / "plans" / "kid.yaml")
    assert kid.seeds == [0] and [r.slug for r in kid.runs] == ["03_train__seed0", "01_work"]
    (project / "plans" / "kid.yaml").write_text(
        yaml.safe_dump({"extends": "sd", "name": "kid", "seeds": None})
    )
    kid = pipeline.load_plan(project / "plans" / "kid.yaml")
    assert kid.seeds is None and [r.slug for r in kid.runs] == ["03_train", "01_work"]


@pytest.mark.slow  # a plan end to end five times over: a dozen kernels
def test_failed_run_is_kept_and_batch_goes_on_then_rerun_skips(project: Path) -> None:
    runs = [
        {"notebook": "01_work", "parameters": {"value": 1, "fail": True}},
        {"notebook": "01_work", "parameters": {"value": 2}},
    ]
    path = _plan(project, runs)
    table = pipeline.run_plan(path, build=False)
    assert list(table["status"]) == ["failed", "done", "done"]
    assert "failing on purpose with value 1" in table.loc[0, "error"]
    runs_dir = project / "book" / "runs"
    failed_nb = (runs_dir / f"{table.loc[0, 'slug']}.ipynb").read_text()
    assert "RuntimeError" in failed_nb and "Traceback" in failed_nb or "failing on purpose" in failed_nb
    status = json.loads((runs_dir / "status.json").read_text())
    assert status["runs"][table.loc[0, "slug"]]["status"] == "failed"
    assert not (runs_dir / f"{table.loc[0, 'slug']}.done").exists()
    # papermill ran in notebooks/: relative paths in a notebook mean the same as in JupyterLab
    out = json.loads((project / "notebooks" / "out_2.json").read_text())
    assert Path(out["cwd"]).resolve() == (project / "notebooks").resolve()

    again = pipeline.run_plan(path, build=False)
    assert list(again["status"]) == ["failed", "skipped", "skipped"]  # the failed run is retried

    runs[1]["parameters"]["nap"] = 0.1  # changed parameters: that run again
    _plan(project, runs)
    changed = pipeline.run_plan(path, build=False)
    # the later stage reads what the re-run wrote, so it runs again too
    assert list(changed["status"]) == ["failed", "done", "done"]
    assert list(pipeline.run_plan(path, build=False)["status"]) == ["failed", "skipped", "skipped"]
    forced = pipeline.run_plan(path, force=True, build=False)
    assert list(forced["status"]) == ["failed", "done", "done"]


@pytest.mark.slow  # 5-14 s on two cores (trains, exports or starts a process): CI runs it, the fast loop does not
def test_kernels_run_encrypted_without_the_tcp_warning_and_the_bar_names_the_run(
    project: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`steelnb run` printed ipykernel's "running over TCP without encryption" once per notebook:
    its kernels now get CurveZMQ keys (the kernel reports one). While each run executes, the
    progress bar names its stage and the run."""
    labels: list[str] = []
    during: dict[str, str] = {}
    on, execute = pipeline._Progress.on, pipeline.execute_run

    def record(self, stage: str, slugs: list[str]) -> None:
        on(self, stage, slugs)
        labels.append(self.bar.desc.rstrip(": "))

    def execute_and_note(run, *args, **kw):
        during[run.slug] = labels[-1]
        return execute(run, *args, **kw)

    monkeypatch.setattr(pipeline._Progress, "on", record)
    monkeypatch.setattr(pipeline, "execute_run", execute_and_note)
    table = pipeline.run_plan(
        _plan(project, [{"notebook": "01_work", "parameters": {"value": 4}}]), build=False
    )
    assert list(table["status"]) == ["done", "done"]
    assert during == {"01_work": "plan p, work: 01_work", "02_after": "plan p, after: 02_after"}
    assert json.loads((project / "notebooks" / "out_4.json").read_text())["curve"] is True
    err = capfd.readouterr().err
    assert "without encryption" not in err


def test_progress_label_names_the_stage_and_the_runs_not_finished() -> None:
    from types import SimpleNamespace

    assert (
        pipeline.progress_label("smoke", "data", ["02_class_balance"]) == "plan smoke, data: 02_class_balance"
    )
    assert (
        pipeline.progress_label("smoke", "train", ["a", "b", "c", "d"]) == "plan smoke, train: a, b +2 more"
    )
    assert pipeline.progress_label("smoke", "train", []) == "plan smoke, train"
    bar = pipeline._Progress(SimpleNamespace(name="smoke", runs=[1, 2, 3]))
    try:
        bar.on("train", ["a", "b", "c"])  # a stage side by side
        bar.done({"slug": "b", "status": "done"})
        assert bar.bar.desc.rstrip(": ") == "plan smoke, train: a, c"
        bar.done({"slug": "elsewhere", "status": "skipped"})  # a run not of the stage leaves the label
        assert bar.bar.desc.rstrip(": ") == "plan smoke, train: a, c" and bar.bar.n == 2
    finally:
        bar.close()


@pytest.mark.slow  # a plan end to end: spawned workers, three kernels, 3 s naps
def test_parallel_stage_gives_each_worker_one_gpu(project: Path) -> None:
    runs = [{"notebook": "01_work", "matrix": {"value": [1, 2]}, "parameters": {"nap": 3.0}}]
    path = _plan(project, runs, parallel=True)
    table = pipeline.run_plan(path, gpus=[0, 1], build=False)
    assert list(table["status"]) == ["done", "done", "done"]
    gpus = {json.loads((project / "notebooks" / f"out_{v}.json").read_text())["gpu"] for v in (1, 2)}
    assert gpus == {"0", "1"}
    status = json.loads((project / "book" / "runs" / "status.json").read_text())["runs"]
    # the stage after waits for the whole parallel stage
    assert status["02_after"]["finished_at"] >= max(status[s]["finished_at"] for s in table["slug"][:2])


@pytest.mark.slow  # a plan end to end: spawned workers, three kernels, 3 s naps
def test_cpu_workers_share_the_cores(project: Path, monkeypatch) -> None:
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 4)
    runs = [{"notebook": "01_work", "matrix": {"value": [1, 2]}, "parameters": {"nap": 3.0}}]
    path = _plan(project, runs, parallel=True)
    spec = yaml.safe_load(path.read_text())
    spec["cpu_workers"] = 2
    path.write_text(yaml.safe_dump(spec))
    table = pipeline.run_plan(path, build=False)
    assert list(table["status"]) == ["done", "done", "done"]
    out = [json.loads((project / "notebooks" / f"out_{v}.json").read_text()) for v in (1, 2)]
    assert [o["threads"] for o in out] == ["2", "2"] and [o["gpu"] for o in out] == [None, None]
    # side by side: the second started before the first had finished its 3 s nap
    assert abs(out[0]["start"] - out[1]["start"]) < 2.5


def _after_plan(project: Path, naps: dict[int, float]) -> Path:
    """Two parallel stages on two CPU workers: 1 (long) and 2 (short); then 3 after 2 only, and 4,
    which waits for the whole stage before it."""

    def run(value: int, after: list[str] | None = None) -> dict:
        entry = {
            "notebook": "01_work",
            "name": f"w{value}",
            "parameters": {"value": value, "nap": naps[value]},
        }
        return entry if after is None else {**entry, "after": after}

    plan = {
        "name": "p",
        "cpu_workers": 2,
        "stages": [
            {"name": "one", "parallel": True, "runs": [run(1), run(2)]},
            {"name": "two", "parallel": True, "runs": [run(3, ["w2"]), run(4)]},
        ],
    }
    path = project / "plans" / "p.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(plan))
    return path


@pytest.mark.slow  # a plan end to end: spawned workers, five kernels, a 4 s nap
def test_a_run_with_after_starts_once_those_runs_ended_and_reruns_with_them(project: Path) -> None:
    naps = {1: 4.0, 2: 0.0, 3: 0.0, 4: 0.0}
    path = _after_plan(project, naps)
    assert [r.after for r in pipeline.load_plan(path).runs] == [None, None, ("w2",), None]
    assert list(pipeline.run_plan(path, build=False)["status"]) == ["done"] * 4
    # each run writes the time its nap ended: 3 waited for 2 only, so it ended while 1 slept; 4
    # waited for 1 (and 2), so it ended after 1 woke
    woke = {v: json.loads((project / "notebooks" / f"out_{v}.json").read_text())["start"] for v in naps}
    assert woke[3] < woke[1] - 1.0 and woke[4] > woke[1], woke
    assert list(pipeline.run_plan(path, build=False)["status"]) == ["skipped"] * 4
    naps[2] = 0.1  # 2 runs again: 3 (after it) and 4 (after the whole stage) with it
    assert list(pipeline.run_plan(_after_plan(project, naps), build=False)["status"]) == [
        "skipped",
        "done",
        "done",
        "done",
    ]
    naps[1] = 0.1  # 1 runs again: 4 with it, but not 3, which reads only what 2 wrote
    assert list(pipeline.run_plan(_after_plan(project, naps), build=False)["status"]) == [
        "done",
        "skipped",
        "skipped",
        "done",
    ]


def test_after_names_runs_of_earlier_stages_each_seed_of_a_repeated_one(project: Path) -> None:
    path = _after_plan(project, {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0})
    for after, message in [
        (["w9"], r"stage 'two', run w3: after names 'w9', no run of an earlier stage.*they are: w1, w2\)$"),
        (["w4"], r"run w3: after names 'w4', no run of an earlier stage"),  # the same stage's
        ("w2", r"after 'w2': expected a list of run names"),
    ]:
        plan = yaml.safe_load(path.read_text())
        plan["stages"][1]["runs"][0]["after"] = after
        path.write_text(yaml.safe_dump(plan))
        with pytest.raises(pipeline.PlanError, match=message):
            pipeline.load_plan(path)
    # a run the plan's seeds repeated (slug <name>__seed<N>): the name waits for every seed's run
    seeded = [pipeline.Run("03_train", {}, f"t__seed{s}", "train") for s in (0, 1)]
    late = pipeline.Run("08_recipe", {}, "r", "recipe", after=("t",))
    stages = plans._resolve_after([seeded, [late]], "<plan>")
    assert stages[1][0].after == ("t__seed0", "t__seed1")


def test_offline_flag_reaches_the_kernels(project: Path, monkeypatch) -> None:
    from steelnb.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # recorded, so the flag's setting is undone after the test
    path = _plan(project, [{"notebook": "01_work", "parameters": {"value": 5}}])
    assert main(["run", str(path), "--no-book", "--offline"]) in (0, None)
    assert json.loads((project / "notebooks" / "out_5.json").read_text())["hf_offline"] == "1"


def test_missing_kaggle_data_says_how_to_get_it(tmp_path: Path) -> None:
    from steelnb.data.synthetic import MissingDataError, ensure_data

    with pytest.raises(MissingDataError, match="kaggle competitions download"):
        ensure_data(tmp_path / "severstal")


def test_benchmarks_run_from_the_project_folder_failures_reported_reruns_skip(tmp_path: Path) -> None:
    from steelnb.batch.benchmarks import run_benchmarks

    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "ok.py").write_text(
        "import sys, pathlib; pathlib.Path('bench/ran.txt').open('a').write(' '.join(sys.argv[1:]) + '\\n')\n"
    )
    (tmp_path / "bench" / "bad.py").write_text("raise SystemExit('no CUDA device here')\n")
    runs = tmp_path / "runs"
    runs.mkdir()
    commands = ["bench/ok.py --size 64x192", "bench/bad.py", "bench/ok.py --again"]
    first = run_benchmarks(commands, tmp_path, runs)
    assert [r["status"] for r in first] == ["done", "failed", "done"]
    assert first[1]["error"] == "no CUDA device here"
    assert (tmp_path / "bench" / "ran.txt").read_text().split("\n")[:2] == ["--size 64x192", "--again"]
    again = run_benchmarks(commands, tmp_path, runs)
    assert [r["status"] for r in again] == ["skipped", "failed", "skipped"]
    assert [r["status"] for r in run_benchmarks(commands, tmp_path, runs, force=True)] == [
        "done",
        "failed",
        "done",
    ]


def test_smoke_plan_lists_benchmark_scripts_that_exist() -> None:
    plan = pipeline.load_plan("smoke")
    assert plan.benchmarks, "the report's performance page needs the smoke plan to run the benchmarks"
    for command in plan.benchmarks:
        assert (plan.root / command.split()[0]).is_file(), command


def test_a_plans_synthetic_block_makes_its_own_set(project: Path) -> None:
    """A plan's data.synthetic block is the set it runs on: what it leaves out is generate()'s (the
    Kaggle mix, nothing sealed); the same block keeps the set, another one generates it again."""
    import dataclasses

    from steelnb.data.synthetic import sealed_ids

    plan = pipeline.load_plan(_plan(project, [{"notebook": "01_work"}]))
    data = project / "data" / "synthetic"
    small = dataclasses.replace(plan, data_dir=data, synthetic={"n_images": 10, "n_test": 0})
    pipeline._prepare_data(small)
    assert len(list((data / "train_images").iterdir())) == 10 and sealed_ids(data) is None
    before = (data / "train.csv").stat().st_mtime_ns
    pipeline._prepare_data(small)
    assert (data / "train.csv").stat().st_mtime_ns == before
    sealed = {"n_images": 12, "n_test": 0, "class_mix": "study", "sealed": 4}
    pipeline._prepare_data(dataclasses.replace(plan, data_dir=data, synthetic=sealed))
    assert len(list((data / "train_images").iterdir())) == 12 and len(sealed_ids(data)) == 4
