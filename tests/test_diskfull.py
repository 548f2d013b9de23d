"""A full disk at each kind of write: the message names the final file (not the temporary one),
the free space and the size needed, and every earlier file is intact. The room is injected
(``fileio.free_space`` reports less, or a write raises ENOSPC); one test writes into a real 1 MB
filesystem (4 MB) where the machine lets it mount one."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from steelnb.batch.benchmarks import Measure, write_result
from steelnb.data import fileio
from steelnb.data.fileio import DiskFullError, atomic_path, write_csv, write_json, write_text
from steelnb.judge.submission import mask_rows, write_submission
from steelnb.model import checkpoints, training


def _no_room(monkeypatch, free: int = 1000) -> None:
    monkeypatch.setattr(fileio, "free_space", lambda folder: free)
    monkeypatch.setattr(checkpoints, "free_space", lambda folder: free)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _submission(path: Path) -> Path:
    import numpy as np

    masks = np.zeros((4, 256, 1600), dtype=bool)
    masks[1, 10:200, 100:900] = True  # a long RLE: well over the 1000 bytes "free"
    rows = [r for i in range(3) for r in mask_rows(f"{i}.jpg", masks)]
    return write_submission(rows, path, [f"{i}.jpg" for i in range(3)])


def _benchmark(path: Path) -> Path:
    m = [Measure("speed", "images/s", 1.0 + i, baseline=1.0) for i in range(40)]
    return write_result(path, benchmark="b", device="cpu", setting={"x": 1}, measures=m)


WRITERS = {
    "metrics.json": lambda p: write_json(p, {"history": list(range(500))}),
    "table.csv": lambda p: write_csv(p, pd.DataFrame({"a": range(500)})),
    "notes.md": lambda p: write_text(p, "x" * 5000),
    "submission.csv": _submission,
    "bench.json": _benchmark,
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_a_file_that_cannot_fit_is_refused_naming_it_and_the_old_one_stays(
    tmp_path: Path, monkeypatch, name: str
) -> None:
    path = tmp_path / name
    path.write_text("the earlier file")
    (tmp_path / "other.txt").write_text("untouched")
    before = _files(tmp_path)
    _no_room(monkeypatch)
    with pytest.raises(DiskFullError) as err:
        WRITERS[name](path)
    message = str(err.value)
    assert message.startswith(f"{path}: no room to write it: 1000 B free on {tmp_path}, it needs ")
    assert "nothing was replaced (the earlier files are intact)" in message and ".tmp" not in message
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC
    assert _files(tmp_path) == before  # no temporary file, nothing replaced


def test_a_write_that_fills_the_disk_names_the_final_file_and_what_it_had_written(tmp_path: Path) -> None:
    path = tmp_path / "overlay.png"
    path.write_bytes(b"earlier")
    with pytest.raises(DiskFullError) as err, atomic_path(path) as tmp:
        tmp.write_bytes(b"x" * 3000)
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    message = str(err.value)
    assert message.startswith(f"{path}: no room to write it: ")
    assert "it needs more than the 2.93 KB written when the disk filled" in message
    assert ".tmp" not in message
    assert _files(tmp_path) == {"overlay.png": b"earlier"}


def test_checkpoint_size_estimate_covers_what_torch_writes(tmp_path: Path) -> None:
    from steelnb.model.models import build_model

    model = build_model("Unet", "resnet18", None, 4)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 3, 64, 64)).mean().backward()
    opt.step()
    ckpt = {"state_dict": model.state_dict(), "optimizer_states": [opt.state_dict()], "epoch": 1}
    torch.save(ckpt, tmp_path / "c.ckpt")
    written = (tmp_path / "c.ckpt").stat().st_size
    estimate = checkpoints.checkpoint_size(ckpt)
    assert written <= estimate <= written * 1.02 + 2 * 2**20  # enough, and not much more


def test_a_checkpoint_that_cannot_fit_is_not_written(tmp_path: Path, monkeypatch) -> None:
    io, path = checkpoints.AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.zeros(10)}, path)
    _no_room(monkeypatch, free=2**20)
    with pytest.raises(DiskFullError) as err:
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(2**20)}, path)  # 4 MB of floats
    assert str(err.value).startswith(f"{path}: no room to write it: 1 MB free on {tmp_path}, it needs 5 MB")
    assert os.listdir(tmp_path) == ["last.ckpt"]
    assert torch.load(path, weights_only=True)["global_step"] == 1


def test_torchs_failed_write_on_a_full_disk_becomes_the_clear_error(tmp_path: Path, monkeypatch) -> None:
    """torch.save reports a full disk as a RuntimeError ("unexpected pos ..."): with the room gone
    it is a DiskFullError; with room left it stays what it was (some other fault)."""
    io, path = checkpoints.AtomicCheckpointIO(), tmp_path / "best.ckpt"

    def fails(self, checkpoint, p, storage_options=None):
        Path(p).write_bytes(b"part")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(checkpoints.TorchCheckpointIO, "save_checkpoint", fails)
    with pytest.raises(RuntimeError, match="unexpected pos") as err:
        io.save_checkpoint({"w": torch.zeros(4)}, path)
    assert not isinstance(err.value, DiskFullError)
    monkeypatch.setattr(checkpoints, "free_space", lambda folder: 100)
    with pytest.raises(DiskFullError, match=f"^{path}: no room to write it"):
        io.save_checkpoint({"w": torch.zeros(4)}, path)
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_training_stopped_by_a_full_disk_resumes_to_the_same_numbers(tmp_path: Path, monkeypatch) -> None:
    """Epoch 2's checkpoints do not fit: the run stops with a message naming the checkpoint and
    how to resume, epoch 1's last.ckpt is intact; resumed once there is room, it ends with the
    numbers of a run that never stopped (the random states ride in last.ckpt)."""
    import lightning as L
    from factories import tiny_config
    from tinydata import TinyData

    torch.set_num_threads(1)

    class FillDisk(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if trainer.current_epoch == 1:
                _no_room(monkeypatch)

    lone = training.fit(
        tiny_config(tmp_path / "lone", epochs=2), datamodule=TinyData(n=8), progress_bar=False
    )
    cfg = tiny_config(tmp_path / "full", epochs=2)
    with pytest.raises(DiskFullError) as err:
        training.fit(cfg, datamodule=TinyData(n=8), progress_bar=False, callbacks=[FillDisk()])
    last = cfg.run_dir / "last.ckpt"
    message = str(err.value)
    assert message.startswith(f"{cfg.run_dir}/") and "no room to write it: 1000 B free" in message
    assert message.endswith(
        f"Training run stopped; {last} (step 4) is intact: once there is room, continue it with "
        f"steelnb train --config {cfg.run_dir / 'config.yaml'} --resume"
    )
    assert torch.load(last, weights_only=True)["global_step"] == 4
    assert not [n for n in os.listdir(cfg.run_dir) if "tmp" in n]
    monkeypatch.undo()
    training.fit(cfg.replace(resume=True), datamodule=TinyData(n=8), progress_bar=False)
    got, want = (json.loads((d / "metrics.json").read_text()) for d in (cfg.run_dir, lone))
    keys = ("epoch", "train_loss", "val_loss", "val_dice", "val_kaggle")
    assert [[h[k] for k in keys] for h in got["history"]] == [[h[k] for k in keys] for h in want["history"]]


SMALL_FS = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    from steelnb.data.fileio import DiskFullError, atomic_path, write_text
    from steelnb.model.checkpoints import AtomicCheckpointIO
    d = Path(sys.argv[1])
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "w": torch.zeros(1000)}, d / "last.ckpt")
    try:
        io.save_checkpoint({"step": 2, "w": torch.zeros(2**21)}, d / "last.ckpt")  # 8 MB
    except DiskFullError as e:
        print("ckpt:", e)
    try:
        with atomic_path(d / "overlay.png") as tmp:  # a writer that does not know its size
            tmp.write_bytes(b"x" * 6 * 2**20)
    except DiskFullError as e:
        print("stream:", e)
    print("step", torch.load(d / "last.ckpt", weights_only=True)["step"], sorted(p.name for p in d.iterdir()))
""")


@pytest.mark.slow  # 5-14 s on two cores (trains, exports or starts a process): CI runs it, the fast loop does not
def test_a_real_small_filesystem(tmp_path: Path) -> None:
    """A 4 MB tmpfs (a mount namespace of its own: needs root or user namespaces; skipped
    elsewhere): the checkpoint is refused before it is written, a write that fills the disk gets
    the same message naming its file, and the earlier checkpoint is whole."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("unshare") is None:
        pytest.skip("no unshare to mount a small filesystem")
    probe = subprocess.run(
        ["unshare", "-rm", "mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.strip()}")
    script = f'mount -t tmpfs -o size=4m tmpfs "$1" && exec "{sys.executable}" -c "$2" "$1"'
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    out = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(mnt), SMALL_FS],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"ckpt: {mnt}/last.ckpt: no room to write it: ")
    assert "free on" in lines[0] and "it needs 9 MB" in lines[0]
    assert lines[1].startswith(f"stream: {mnt}/overlay.png: no room to write it: ")
    assert "written when the disk filled" in lines[1] and ".tmp" not in lines[1]
    assert lines[2] == "step 1 ['last.ckpt']"


def test_a_book_build_the_disk_stopped_names_the_book_and_what_it_needs(tmp_path: Path, monkeypatch) -> None:
    """jupyter-book runs in its own process: its "No space left on device" becomes the clear
    error, and the executed runs and status.json are left as they were."""
    from steelnb.batch import book

    book_dir = tmp_path / "book"
    (book_dir / "runs").mkdir(parents=True)
    (book_dir / "_config.yml").write_text("title: t\n")
    (book_dir / "runs" / "03_train.ipynb").write_bytes(b"x" * 2**20)
    (book_dir / "runs" / "status.json").write_text('{"plan": "p", "order": ["03_train"], "runs": {}}')
    before = _files(book_dir / "runs")
    log = "Traceback (most recent call last):\nOSError: [Errno 28] No space left on device: '_build/html/x.html'\n"
    monkeypatch.setattr(book.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 2, log, ""))
    with pytest.raises(DiskFullError) as err:
        book.build_book(book_dir)
    message = str(err.value)
    index = book_dir.resolve() / "_build" / "html" / "index.html"
    assert message.startswith(f"{index}: no room to build the book: ")
    assert "it needs about 22 MB (twice the executed notebooks' 1 MB, and 20 MB for the theme)" in message
    assert message.endswith("free space there and run steelnb book again")
    assert {k: v for k, v in _files(book_dir / "runs").items() if k != ".steelnb.lock"} == before
