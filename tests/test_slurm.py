"""Plan runs as Slurm jobs (``steelnb run PLAN --executor slurm``).

The tests marked ``slurm`` run against a real cluster, not a mock: ``bash .ci/slurm-up`` (root,
Debian) brings up a one-machine cluster and ``.ci/run`` runs them; they skip, saying why, where
``sbatch`` is absent or no cluster answers. They use tiny stand-in notebooks (a kernel start is
the main cost) and, for cancel-and-resume, a tiny training on in-memory data (tests/tinydata.py).
The other tests check what happens before anything reaches Slurm and need no cluster.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from nbout import write_notebook
from tinydata import TINY_TRAIN

from steelnb.batch import pipeline
from steelnb.batch.slurm import (
    SlurmError,
    SlurmExecutor,
    SlurmOptions,
    SlurmRequestError,
    SlurmUnavailableError,
    StageFailedError,
    _last_line,
    _seconds,
)

TESTS = Path(__file__).resolve().parent
FAST = SlurmOptions(poll_s=1.0)  # a test cluster answers at once: look at the queue every second


@pytest.fixture(scope="module")
def cluster() -> str:
    """The name of an up node of a Slurm cluster that answers; skip (with the reason) otherwise."""
    if shutil.which("sbatch") is None:
        pytest.skip(
            "sbatch not found: the slurm tests need a Slurm cluster (bash .ci/slurm-up, as root on Debian)"
        )
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        pytest.skip("sinfo did not answer in 20 s: no Slurm controller running (bash .ci/slurm-up)")
    if proc.returncode != 0:
        pytest.skip(f"no Slurm cluster answers sinfo ({proc.stderr.strip()}): bash .ci/slurm-up")
    up = [
        ln.split()[0] for ln in proc.stdout.splitlines() if ln.split()[1].startswith(("idle", "mix", "alloc"))
    ]
    if not up:
        pytest.skip(f"no node of the Slurm cluster is up: sinfo says {proc.stdout.strip()!r}")
    return up[0]


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """notebooks/ with 01_work (fails on request, records its Slurm job and threads), 02_after and
    03_tiny (a tiny training that continues from last.ckpt with resume=True)."""
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    write_notebook(
        nbs / "01_work.ipynb",
        "value: int = 1  # a number\nfail: bool = False  # raise on purpose",
        "import os, json\n"
        "if fail:\n    raise RuntimeError(f'failing on purpose with value {value}')\n"
        "array = os.environ.get('SLURM_ARRAY_JOB_ID')\n"
        "job = f\"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}\" if array else os.environ.get('SLURM_JOB_ID')\n"
        "open(f'out_{value}.json', 'w').write(json.dumps({'job': job, 'cwd': os.getcwd(), "
        "'threads': os.environ.get('OMP_NUM_THREADS')}))",
    )
    write_notebook(nbs / "02_after.ipynb", 'tag: str = "x"  # a label', "print(tag)")
    write_notebook(
        nbs / "03_tiny.ipynb",
        'out: str = "runs"  # run folders\nnap: float = 0.0  # seconds per batch\n'
        'resume: bool = False  # continue from last.ckpt\ntests_dir: str = ""  # where tinydata.py is',
        "import sys, time\nsys.path.insert(0, tests_dir)\n"
        "from lightning.pytorch.callbacks import Callback\nfrom tinydata import TinyData\n"
        "from steelnb.config import TrainConfig\nfrom steelnb.training import fit\n\n"
        "class Slow(Callback):\n    def on_train_batch_end(self, *args, **kw):\n        time.sleep(nap)\n\n"
        'cfg = TrainConfig(encoder="resnet18", epochs=2, batch_size=2, height=64, width=64, out_dir=out,\n'
        '                  run_name="run", early_stopping_patience=0, device="cpu", resume=resume)\n'
        "fit(cfg, datamodule=TinyData(n=24), progress_bar=False, callbacks=[Slow()], ckpt_every_n_steps=3)",
    )
    return tmp_path


def _write_plan(project: Path, stages: list[dict], name: str = "p", benchmarks: list[str] = ()) -> Path:
    path = project / "plans" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump({"name": name, "stages": stages, "benchmarks": list(benchmarks)}))
    return path


def _status(project: Path) -> dict:
    return json.loads((project / "book" / "runs" / "status.json").read_text())["runs"]


def _squeue() -> dict[str, tuple[str, str]]:
    """{job id: (state, node)} of every job slurmctld still knows (finished ones included)."""
    out = subprocess.run(
        ["squeue", "-h", "-r", "--states=all", "-o", "%i|%T|%N"], capture_output=True, text=True, check=True
    ).stdout
    return {i: (s, n) for i, s, n in (ln.split("|") for ln in out.splitlines())}


TWO_STAGES = [
    {
        "name": "work",
        "parallel": True,
        "runs": [
            {"notebook": "01_work", "parameters": {"value": 1, "fail": True}},
            {"notebook": "01_work", "parameters": {"value": 2}},
        ],
    },
    {"name": "after", "runs": [{"notebook": "02_after"}]},
]


# -- before anything reaches Slurm (no cluster needed) ---------------------------------------
def test_missing_sbatch_fails_before_anything_is_written(project: Path, monkeypatch) -> None:
    path = _write_plan(project, TWO_STAGES)
    monkeypatch.setenv("PATH", str(project / "no-bin"))
    with pytest.raises(SlurmUnavailableError, match="sbatch.*not found on PATH.*--executor local"):
        pipeline.run_plan(path, build=False, executor=SlurmExecutor(FAST))
    assert not (project / "book").exists()


def test_slurm_options_go_with_the_slurm_executor_only(project: Path, capsys) -> None:
    from steelnb.cli import main

    path = str(_write_plan(project, TWO_STAGES))
    assert main(["run", path, "--partition", "gpu", "--time", "30"]) == 2
    assert "--partition, --time: only with --executor slurm" in capsys.readouterr().err
    assert main(["run", path, "--executor", "slurm", "--gpus", "0,1"]) == 2
    assert "--gpus-per-run" in capsys.readouterr().err
    with pytest.raises(SlurmError, match="time_min=0"):
        SlurmOptions(time_min=0)
    assert not (project / "book").exists()


def test_a_run_asks_for_its_devices_and_nodes(project: Path) -> None:
    write_notebook(project / "notebooks" / "07_ddp.ipynb", "devices: int = 1\nnum_nodes: int = 1", "pass")
    path = _write_plan(
        project,
        [{"name": "s", "runs": [{"notebook": "07_ddp", "parameters": {"devices": 4, "num_nodes": 2}}]}],
    )
    p = pipeline.load_plan(path)
    shape = SlurmExecutor(SlurmOptions(gpus_per_run=4, mem_gb=16, partition="gpu")).shape(
        p.runs[0], p.notebooks_dir
    )
    # one process per device (srun starts them; Lightning's SLURMEnvironment joins them), on 2 nodes
    assert shape | {"signal_delay_s": 0} == {
        "nodes": 2,
        "ntasks_per_node": 4,
        "gpus_per_node": 4,
        "mem": 16,
        "partition": "gpu",
        "time": 120,
        "signal_delay_s": 0,
    }
    with pytest.raises(SlurmRequestError, match="devices=4 .* --gpus-per-run is 2"):
        SlurmExecutor(SlurmOptions(gpus_per_run=2)).shape(p.runs[0], p.notebooks_dir)


def test_slurm_times_and_log_lines(tmp_path: Path) -> None:
    assert [_seconds(t) for t in ("0:07", "1:02:03", "2-00:00:01", "INVALID")] == [7, 3723, 172801, None]
    log = tmp_path / "x_0_log.err"
    log.write_text(
        "[IPKernelApp] WARNING | Kernel is running over TCP\n"
        "slurmstepd-vm: error: *** JOB 16 ON vm CANCELLED AT 2026-01-01T00:00:00 ***\n"
        "srun: error: vm: task 0: Killed\n"
    )
    assert _last_line(log).endswith("CANCELLED AT 2026-01-01T00:00:00 ***")
    log.write_text(
        'Traceback (most recent call last):\n  File "x.py", line 1\n'
        "ModuleNotFoundError: No module named 'pkg_resources'\n"
        "srun: error: vm: task 0: Exited with exit code 1\n"
    )
    assert _last_line(log) == "ModuleNotFoundError: No module named 'pkg_resources'"


# -- on a real cluster ------------------------------------------------------------------------
@pytest.mark.slurm
def test_two_stage_plan_with_a_failing_run_as_the_local_executor(
    project: Path, cluster: str, tmp_path: Path
) -> None:
    (project / "bench").mkdir()  # a benchmark script that says where it ran
    (project / "bench" / "where.py").write_text(
        "import os, pathlib; pathlib.Path('bench/where.txt').write_text(os.environ.get('SLURM_JOB_ID', 'here'))\n"
    )
    local = tmp_path / "local"
    shutil.copytree(project, local)
    path = _write_plan(project, TWO_STAGES, benchmarks=["bench/where.py"])
    table = pipeline.run_plan(path, build=False, executor=SlurmExecutor(FAST))
    assert list(table["status"]) == ["failed", "done", "done"]
    assert "failing on purpose with value 1" in table.loc[0, "error"]
    runs_dir = project / "book" / "runs"
    assert "failing on purpose" in (runs_dir / f"{table.loc[0, 'slug']}.ipynb").read_text()  # its traceback
    assert not (runs_dir / f"{table.loc[0, 'slug']}.done").exists()

    # the same outcome as the local executor on the same plan
    local_table = pipeline.run_plan(
        _write_plan(local, TWO_STAGES, benchmarks=["bench/where.py"]), build=False
    )
    assert list(local_table["status"]) == list(table["status"])
    assert list(local_table["error"]) == list(table["error"])
    # the benchmarks ran as a job too (a GPU benchmark needs the cluster's GPUs), once
    assert (local / "bench" / "where.txt").read_text() == "here"
    bench_job = (project / "bench" / "where.txt").read_text()
    assert bench_job.isdigit() and (runs_dir / "bench_1.done").is_file()

    # status.json names the job of every run, as Slurm knows it; the work stage was one job array
    status, slurm = _status(project), _squeue()
    ids = [status[s]["slurm"]["job_id"] for s in table["slug"]]
    assert ids[0].split("_")[0] == ids[1].split("_")[0] and "_" not in ids[2]
    for slug, job_id in zip(table["slug"], ids):
        rec = status[slug]["slurm"]
        assert slurm[job_id] == (rec["state"], rec["node"]) == ("COMPLETED", cluster), slug
        assert (runs_dir / rec["log"]).is_file() and (runs_dir / rec["err"]).is_file()
    out = json.loads((project / "notebooks" / "out_2.json").read_text())
    assert out["job"] == ids[1]  # the notebook ran inside that very job
    assert Path(out["cwd"]).resolve() == (project / "notebooks").resolve() and out["threads"] == "1"

    again = pipeline.run_plan(path, build=False, executor=SlurmExecutor(FAST))
    assert list(again["status"]) == ["failed", "skipped", "skipped"]  # only the failed run goes again
    status = _status(project)
    assert status[table.loc[0, "slug"]]["slurm"]["job_id"] not in ids
    assert [status[s]["slurm"]["job_id"] for s in table["slug"][1:]] == ids[1:]
    assert (project / "bench" / "where.txt").read_text() == bench_job  # finished: skipped, no job


@pytest.mark.slurm
def test_requests_slurm_refuses_fail_before_anything_is_submitted(project: Path, cluster: str) -> None:
    path = _write_plan(project, TWO_STAGES)
    before = set(_squeue())
    nodes = r"partition \S+ has \d+ node\(s\) \(\S+: \d+ CPUs, \d+ MB, GPUs"
    cases = [  # Slurm's words, then what the message adds: what the cluster has
        (SlurmOptions(partition="no-such-partition"), "[Ii]nvalid partition", r"partitions: .*\(default\)"),
        (SlurmOptions(mem_gb=1_000_000), "Requested node configuration is not available", nodes),
        (SlurmOptions(gpus_per_run=64), "Invalid generic resource|Requested node configuration", nodes),
    ]
    for options, slurm_says, we_add in cases:
        with pytest.raises(SlurmRequestError, match=f"Slurm refuses the job .*({slurm_says}).*{we_add}"):
            pipeline.run_plan(path, build=False, executor=SlurmExecutor(options))
    assert set(_squeue()) == before
    assert not (project / "book").exists()


@pytest.mark.slurm
def test_cancelled_training_stops_the_plan_and_resumes_from_last_ckpt_on_the_next_run(
    project: Path, cluster: str
) -> None:
    import torch

    train = {"notebook": "03_tiny", "parameters": {"nap": 0.3, "tests_dir": str(TESTS)}}
    stages = [
        {"name": "prep", "runs": [{"notebook": "01_work", "parameters": {"value": 2}}]},
        {"name": "train", "runs": [train]},
        {"name": "after", "runs": [{"notebook": "02_after"}]},
    ]
    path = _write_plan(project, stages)
    last = project / "notebooks" / "runs" / "run" / "last.ckpt"
    with cf.ThreadPoolExecutor(1) as pool:
        running = pool.submit(pipeline.run_plan, path, build=False, executor=SlurmExecutor(FAST))
        deadline = time.monotonic() + 240
        while not last.exists() and not running.done() and time.monotonic() < deadline:
            time.sleep(0.2)
        rec = _status(project)["03_tiny"]  # recorded at submission, with its job id
        assert rec["status"] == "submitted", rec
        job_id = rec["slurm"]["job_id"]
        subprocess.run(["scancel", job_id], check=True)
        # the stage's only job failed: the plan stops there, naming the run and what Slurm did
        with pytest.raises(
            StageFailedError, match=f"stage 'train': all 1 run.*03_tiny .Slurm job {job_id} CANCELLED"
        ):
            running.result(timeout=120)
    killed = torch.load(last, weights_only=True)
    assert killed["epoch"] == 0 and 0 < killed["global_step"] < 24, "not stopped mid-training"
    status = _status(project)
    rec = status["03_tiny"]
    assert rec["status"] == "failed" and rec["slurm"]["job_id"] == job_id
    assert _squeue()[job_id][0] == rec["slurm"]["state"] == "CANCELLED"
    assert "CANCELLED" in (project / "book" / "runs" / "03_tiny.ipynb").read_text()  # the report says so
    assert status["01_work"]["status"] == "done" and "02_after" not in status  # the plan stopped
    done_file = project / "book" / "runs" / "01_work.done"
    stamp, prep_job = done_file.stat().st_mtime_ns, status["01_work"]["slurm"]["job_id"]

    table = pipeline.run_plan(path, build=False, executor=SlurmExecutor(FAST))
    assert list(table["status"]) == ["skipped", "done", "done"]
    status = _status(project)
    assert status["03_tiny"]["slurm"]["resumed"] and status["03_tiny"]["slurm"]["job_id"] != job_id
    metrics = json.loads((last.parent / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert torch.load(last, weights_only=True)["global_step"] == 24  # 2 epochs x 12 batches, none repeated
    # what finished before the stop was neither lost nor run again
    assert done_file.stat().st_mtime_ns == stamp and status["01_work"]["slurm"]["job_id"] == prep_job


def _project_03(project: Path, **parameters) -> dict:
    """A project with the real notebooks/03_train.ipynb and 40 synthetic images; returns 03's
    parameters for a tiny CPU run on them (``tinydata.TINY_TRAIN``) with ``parameters`` on top."""
    from steelnb.data.synthetic import generate

    (project / "notebooks").mkdir()
    shutil.copy(TESTS.parent / "notebooks" / "03_train.ipynb", project / "notebooks")
    data = generate(project / "data", n_images=40, n_test=0, seed=0)
    return {**TINY_TRAIN, "data_dir": str(data), "out_dir": str(project / "weights"), **parameters}


@pytest.mark.slurm
def test_03_train_cancelled_on_slurm_resumes_from_last_ckpt(tmp_path: Path, cluster: str) -> None:
    """The real 03_train notebook as a Slurm job: cancelled after its first epoch, it continues from
    last.ckpt on the next `steelnb run` (the executor passes resume=True, which 03 declares), and
    its history holds every epoch once."""
    import torch

    train = {"notebook": "03_train", "parameters": _project_03(tmp_path, max_images=24, epochs=3)}
    path = _write_plan(tmp_path, [{"name": "train", "runs": [train]}])
    run = tmp_path / "weights" / "resnet50__dice_bce__64x320"
    last = run / "last.ckpt"
    with cf.ThreadPoolExecutor(1) as pool:
        running = pool.submit(pipeline.run_plan, path, build=False, executor=SlurmExecutor(FAST))
        deadline = time.monotonic() + 300
        while not last.exists() and not running.done() and time.monotonic() < deadline:
            time.sleep(0.1)
        job_id = _status(tmp_path)["03_train"]["slurm"]["job_id"]
        subprocess.run(["scancel", job_id], check=True)
        with pytest.raises(StageFailedError, match=f"03_train .Slurm job {job_id} CANCELLED"):
            running.result(timeout=120)
    stopped = torch.load(last, weights_only=True)
    assert stopped["epoch"] < 2, "the job ran to the end before it was cancelled"
    assert not (run / "metrics.json").is_file() or "test" not in json.loads(
        (run / "metrics.json").read_text()
    )

    table = pipeline.run_plan(path, build=False, executor=SlurmExecutor(FAST))
    assert list(table["status"]) == ["done"]
    rec = _status(tmp_path)["03_train"]
    assert rec["slurm"]["resumed"] and rec["slurm"]["job_id"] != job_id
    metrics = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    steps = torch.load(last, weights_only=True)["global_step"]
    assert steps == 3 * stopped["global_step"] // (stopped["epoch"] + 1), (steps, stopped["global_step"])
    assert metrics["test"]["split"] == "test"


@pytest.mark.slurm
def test_03_train_over_two_slurm_tasks_forms_one_world(tmp_path: Path, cluster: str) -> None:
    """devices=2, strategy=ddp: one job of two tasks; each task's 03 trains in a child Python that
    joins the world as its Slurm rank, rank 0 writes the run (world size 2) and evaluates it."""
    parameters = _project_03(tmp_path, max_images=16, epochs=2, devices=2, strategy="ddp")
    path = _write_plan(
        tmp_path, [{"name": "train", "runs": [{"notebook": "03_train", "parameters": parameters}]}]
    )
    table = pipeline.run_plan(path, build=False, executor=SlurmExecutor(FAST))
    assert list(table["status"]) == ["done"], table.to_dict("records")
    metrics = json.loads((tmp_path / "weights" / "resnet50__dice_bce__64x320" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["epochs_run"] == 2 and metrics["test"]["split"] == "test"
    job = _status(tmp_path)["03_train"]["slurm"]
    assert job["state"] == "COMPLETED"
    assert (Path(job["folder"]) / "rank1" / "03_train.ipynb").is_file()  # the second task ran its copy
