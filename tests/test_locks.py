"""One writer per folder (steelnb.data.locks) and status.json's read-modify-write: a second writer is
refused with its holder named and nothing changed, a killed holder's lock is taken over with a
message, a lock is re-entrant in one process, concurrent status updates lose no record."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from steelnb.batch.status import read_status, update_status
from steelnb.data.locks import OWNER_NAME, FolderBusyError, hold, holds, owner

HOLDER = textwrap.dedent("""
    import os, signal, sys
    from steelnb.data.locks import hold
    with hold(sys.argv[1], "training run demo"):
        print("held", flush=True)
        if sys.argv[2] == "die":
            os.kill(os.getpid(), signal.SIGKILL)  # as kill -9: no clean-up at all
        sys.stdin.read()  # until the test closes stdin
""")


def _holder(folder: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_with_the_holder_named_and_nothing_changed(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    proc = _holder(folder, "wait")
    try:
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        with pytest.raises(FolderBusyError) as err, hold(folder, "second"):
            pytest.fail("the second writer got the lock")
        message = str(err.value)
        assert message.startswith(
            f"{folder.resolve()}: in use by pid {proc.pid} on host {socket.gethostname()} since "
        )
        assert "(training run demo); nothing was changed" in message
        assert f"stop it (kill {proc.pid} on {socket.gethostname()})" in message
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
        assert owner(folder)["pid"] == proc.pid
    finally:
        proc.communicate("")
    assert proc.returncode == 0
    assert not (folder / OWNER_NAME).exists()  # let go cleanly: no record left to look stale
    with hold(folder, "after"):  # free again
        assert owner(folder)["pid"] == os.getpid()


def test_a_killed_holders_lock_is_taken_over_with_a_message(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "run"
    proc = _holder(folder, "die")
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert owner(folder)["pid"] == proc.pid  # the dead process's record is still there
    with hold(folder, "taking over"):
        assert owner(folder)["pid"] == os.getpid() and owner(folder)["what"] == "taking over"
    err = capsys.readouterr().err
    assert f"taking over the lock of pid {proc.pid} on host {socket.gethostname()}" in err
    assert "(training run demo), which ended without letting go of it" in err


def test_the_lock_is_reentrant_within_one_process(tmp_path: Path) -> None:
    with hold(tmp_path, "outer"):
        with hold(tmp_path, "inner"):
            assert holds(tmp_path)
        assert holds(tmp_path) and owner(tmp_path)["what"] == "outer"
    assert not holds(tmp_path) and owner(tmp_path) is None


WRITER = textwrap.dedent("""
    import sys
    from steelnb.batch.status import update_status
    print("ready", flush=True)
    sys.stdin.readline()  # both start writing together
    for i in range(int(sys.argv[3])):
        slug = f"{sys.argv[2]}_{i}"
        update_status(sys.argv[1], lambda s: s["runs"].__setitem__(slug, {"slug": slug, "status": "done"}))
""")


def test_concurrent_status_updates_lose_no_record(tmp_path: Path) -> None:
    """Two processes each add 100 records at once: all 200 are there (without the lock, one
    process's read-modify-write overwrites the other's: a run of this test without it kept 111)."""
    update_status(tmp_path, lambda s: s.update(plan="p", order=[]))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), name, "100"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in "ab"
    ]
    assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    assert [p.wait() for p in procs] == [0, 0]
    status = read_status(tmp_path)
    assert sorted(status["runs"]) == sorted(f"{n}_{i}" for n in "ab" for i in range(100))
    assert status["plan"] == "p"
    json.loads((tmp_path / "status.json").read_text())  # whole


@pytest.mark.slow
def test_a_second_training_into_a_run_folder_is_refused_and_the_first_is_as_alone(tmp_path: Path) -> None:
    """While the first training holds its run folder (here: at the end of its first epoch),
    ``steelnb train`` into the same folder fails at once with the holder named and changes no
    file; the first ends with the numbers of a run trained alone."""
    import lightning as L
    import torch
    from factories import tiny_config
    from tinydata import TinyData

    from steelnb.model.training import fit

    torch.set_num_threads(1)
    seen: dict[str, object] = {}

    class SecondStart(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if trainer.current_epoch != 0:
                return
            run = Path(trainer.default_root_dir)
            before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
            seen["second"] = subprocess.run(
                [sys.executable, "-m", "steelnb.cli", "train", "--config", str(run / "config.yaml")],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
                timeout=300,
            )
            seen["unchanged"] = before == {p: p.stat().st_mtime_ns for p in run.rglob("*")}

    alone = fit(tiny_config(tmp_path / "alone", epochs=2), datamodule=TinyData(n=8), progress_bar=False)
    first = fit(
        tiny_config(tmp_path / "first", epochs=2),
        datamodule=TinyData(n=8),
        progress_bar=False,
        callbacks=[SecondStart()],
    )
    second = seen["second"]
    assert second.returncode == 2, second.stderr[-2000:]
    assert second.stderr.startswith(
        f"steelnb train: error: {first.resolve()}: in use by pid {os.getpid()} on host "
    )
    assert "(training run run); nothing was changed" in second.stderr
    assert "give this run another name (run_name) or out_dir" in second.stderr
    assert seen["unchanged"]
    got, want = (json.loads((d / "metrics.json").read_text())["history"] for d in (first, alone))
    keys = ("train_loss", "val_loss", "val_dice", "val_kaggle")
    assert [[h[k] for k in keys] for h in got] == [[h[k] for k in keys] for h in want]
