"""Faults a user causes on a plan, with the real 03_train notebook on a tiny run: a second
``steelnb run`` of a plan that runs is refused and changes nothing (that the first then trains as
a lone run is shown for a training run in test_locks); SIGTERM during the training stage ends the
kernel and its children, marks the run interrupted, and the next ``steelnb run`` resumes it to
the numbers of the run that was not stopped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from tinydata import TINY_TRAIN

from steelnb.batch import pipeline

TESTS = Path(__file__).resolve().parent
RUN = "resnet18__dice_bce__32x160"
KEYS = ("epoch", "train_loss", "val_loss", "val_dice", "val_kaggle")
ENV = {**os.environ, "PYTHONPATH": str(TESTS.parent), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.slow


@dataclass
class FirstOfTwo:
    """The project, and what the second ``steelnb run`` of a running plan got."""

    root: Path
    second: subprocess.CompletedProcess
    unchanged: bool
    table: pd.DataFrame


@pytest.fixture(scope="module")
def twice(tmp_path_factory: pytest.TempPathFactory) -> FirstOfTwo:
    """notebooks/03_train.ipynb and 40 synthetic images; the plan "twice" started in this process
    and, as its run starts, once more from the command line (a second terminal). The first run's
    numbers are the reference of the SIGTERM test (the second start changed nothing: asserted)."""
    from steelnb.data.synthetic import generate

    root = tmp_path_factory.mktemp("project")
    (root / "notebooks").mkdir()
    shutil.copy(TESTS.parent / "notebooks" / "03_train.ipynb", root / "notebooks")
    generate(root / "data", n_images=40, n_test=0, seed=0)
    for name in ("twice", "stopped"):
        _plan(root, name)
    plan, runs = root / "plans" / "twice.yaml", root / "book-twice" / "runs"
    real, seen = pipeline.execute_run, {}

    def second_start_first(run, *args, **kw):
        before = {p.name: p.read_bytes() for p in runs.iterdir()}
        seen["second"] = subprocess.run(
            [sys.executable, "-m", "steelnb.cli", "run", str(plan), "--no-book"],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
        )
        seen["unchanged"] = before == {p.name: p.read_bytes() for p in runs.iterdir()}
        seen["no_run_folder"] = not (root / "weights-twice").exists()
        return real(run, *args, **kw)

    os.environ["OMP_NUM_THREADS"] = "1"  # the kernels of an in-process plan as those of the CLI's
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "execute_run", second_start_first)
        table = pipeline.run_plan(plan, build=False)
    unchanged = seen["unchanged"] and seen["no_run_folder"]
    return FirstOfTwo(root, seen["second"], unchanged, table)


def _plan(root: Path, name: str) -> Path:
    """A one-run plan: 03_train on ResNet-18 at 32x160, 2 epochs, its own book and weights folders."""
    params = {
        **TINY_TRAIN,
        "encoder": "resnet18",
        "data_dir": str(root / "data"),
        "out_dir": str(root / f"weights-{name}"),
        "height": 32,
        "width": 160,
        "max_images": 16,
        "epochs": 2,
    }
    plan = {
        "name": name,
        "book_dir": f"book-{name}",
        "stages": [{"name": "train", "runs": [{"notebook": "03_train", "parameters": params}]}],
    }
    path = root / "plans" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(plan))
    return path


def _history(root: Path, name: str) -> list[list]:
    metrics = json.loads((root / f"weights-{name}" / RUN / "metrics.json").read_text())
    return [[h[k] for k in KEYS] for h in metrics["history"]]


def _status(root: Path, name: str) -> dict:
    return json.loads((root / f"book-{name}" / "runs" / "status.json").read_text())


def test_a_second_start_of_a_running_plan_is_refused_and_changes_nothing(twice: FirstOfTwo) -> None:
    runs = twice.root / "book-twice" / "runs"
    second = twice.second
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"steelnb run: error: {runs.resolve()}: in use by pid {os.getpid()} on host " in second.stderr
    assert "(steelnb run twice); nothing was changed" in second.stderr
    assert twice.unchanged  # status.json and the rest of book/runs as they were, no run folder made
    assert list(twice.table["status"]) == ["done"]
    assert _status(twice.root, "twice")["runs"]["03_train"]["status"] == "done"
    assert [h[0] for h in _history(twice.root, "twice")] == [1, 2]


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc's parent links)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_during_training_marks_the_run_interrupted_and_the_next_run_resumes_it(
    twice: FirstOfTwo,
) -> None:
    import torch

    project = twice.root
    plan = project / "plans" / "stopped.yaml"
    last = project / "weights-stopped" / RUN / "last.ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "steelnb.cli", "run", str(plan), "--no-book"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    below = _descendants(proc.pid)  # the kernel and what it started
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "steelnb run: plan stopped stopped by SIGTERM: run(s) 03_train marked interrupted in " in err
    assert below and not [p for p in below if _alive(p)], "the kernel or its children outlived the plan"
    stopped = torch.load(last, weights_only=True)
    assert stopped["epoch"] < 2, "the run ended before SIGTERM came"
    rec = _status(project, "stopped")["runs"]["03_train"]
    assert rec["status"] == "interrupted" and rec["error"].startswith("stopped by SIGTERM while it ran")
    table = pipeline.run_plan(plan, build=False)
    assert list(table["status"]) == ["done"]
    rec = _status(project, "stopped")["runs"]["03_train"]
    assert rec["status"] == "done" and rec["injected"] == {"resume": True}
    assert _history(project, "stopped") == _history(project, "twice")  # as if never stopped
