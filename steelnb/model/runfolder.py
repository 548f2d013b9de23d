"""A training run's folder as a type: its config, splits, metrics, checkpoints and scores.

``fit`` leaves in ``weights/<run>/`` the files ``runfiles`` names: ``config.yaml``, the split ids
it trained on (``splits.json``: train / validation / test image ids), ``metrics.json``,
``best.ckpt`` and ``last.ckpt``; ``evaluation.evaluate_run`` adds ``postprocess.yaml`` and
``test_scores.csv``. ``RunFolder`` reads and writes them, so that no other module spells a file
name or rebuilds a ``SteelDataModule`` to learn a run's splits. A run trained before its splits
were written gets them back from its config, once, in ``RunFolder.splits``.

``read_runs`` finds the runs under a folder as ``RunRecord`` s: the folder and its metrics, read
like the metrics mapping itself (``record["test"]``) with the folder beside them
(``record.folder``, ``record.path``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..data.config import TrainConfig
from ..data.errors import SteelnbError
from ..data.fileio import write_csv, write_json
from .runfiles import (
    BEST_CKPT,
    CONFIG_FILE,
    EVALUATION_DIR,
    LAST_CKPT,
    METRICS_FILE,
    POSTPROCESS_FILE,
    SCORES_FILE,
    SPLITS_FILE,
)

__all__ = ["RunFolder", "RunFolderError", "RunRecord", "Splits", "read_runs"]


class RunFolderError(SteelnbError):
    """A run folder whose file is missing or unreadable; names the file."""


@dataclass(frozen=True)
class Splits:
    """The image ids a run was trained on (``train``), selected on (``validation``) and judged on
    (``test``), in the order the data module listed them."""

    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]

    @classmethod
    def of(cls, datamodule: Any) -> Splits:
        """The splits of a ``SteelDataModule`` (``train_ids``, ``val_ids``, ``test_ids``)."""
        return cls(
            tuple(datamodule.train_ids), tuple(datamodule.val_ids), tuple(getattr(datamodule, "test_ids", ()))
        )

    def to_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "validation": list(self.validation), "test": list(self.test)}

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> Splits:
        """Splits from ``to_dict``'s layout; ``RunFolderError`` naming ``source`` otherwise."""
        try:
            return cls(*(tuple(str(i) for i in data[k]) for k in ("train", "validation", "test")))
        except (KeyError, TypeError) as e:
            raise RunFolderError(
                f"{source}: expected lists of image ids under train, validation and test ({e!r})"
            ) from None


@dataclass(frozen=True)
class RunFolder:
    """One training run's folder (``path``) and the files in it (``runfiles``)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of(cls, where: str | Path | RunFolder | RunRecord) -> RunFolder:
        """A run folder from its path, a file in it (e.g. its checkpoint), or a ``RunRecord``."""
        if isinstance(where, RunFolder):
            return where
        if isinstance(where, RunRecord):
            return where.folder
        path = Path(where)
        return cls(path.parent if path.is_file() else path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def splits_file(self) -> Path:
        return self.path / SPLITS_FILE

    @property
    def scores_file(self) -> Path:
        return self.path / SCORES_FILE

    @property
    def postprocess_file(self) -> Path:
        return self.path / POSTPROCESS_FILE

    @property
    def best_ckpt(self) -> Path:
        return self.path / BEST_CKPT

    @property
    def last_ckpt(self) -> Path:
        return self.path / LAST_CKPT

    @property
    def evaluation_dir(self) -> Path:
        return self.path / EVALUATION_DIR

    def config(self) -> TrainConfig:
        """The run's ``TrainConfig`` from ``config.yaml`` (``ConfigError`` naming it when absent)."""
        return TrainConfig.from_yaml(self.config_file)

    def has_metrics(self) -> bool:
        return self.metrics_file.is_file()

    def metrics(self) -> dict[str, Any]:
        """``metrics.json``; ``RunFolderError`` naming the file when it is missing or unreadable."""
        path = self.metrics_file
        if not path.is_file():
            raise RunFolderError(f"{path}: not found; train the run first")
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RunFolderError(f"{path}: not a readable {METRICS_FILE} ({e})") from e

    def write_metrics(self, metrics: Mapping[str, Any]) -> Path:
        """Write ``metrics.json`` (atomically)."""
        return write_json(self.metrics_file, dict(metrics))

    def update_metrics(self, **blocks: Any) -> dict[str, Any]:
        """``metrics.json`` with ``blocks`` set (e.g. ``test=...``), written back; returns it."""
        metrics = self.metrics()
        metrics.update(blocks)
        self.write_metrics(metrics)
        return metrics

    def scores(self) -> pd.DataFrame | None:
        """``test_scores.csv`` (ImageId as text), or None when the run was not evaluated."""
        path = self.scores_file
        return pd.read_csv(path, dtype={"ImageId": str}) if path.is_file() else None

    def write_scores(self, scores: pd.DataFrame) -> Path:
        """Write ``test_scores.csv`` (atomically)."""
        return write_csv(self.scores_file, scores)

    def write_splits(self, splits: Splits) -> Path:
        """Write ``splits.json`` (atomically): what ``splits`` reads back."""
        return write_json(self.splits_file, splits.to_dict())

    def splits(self, config: TrainConfig | None = None) -> Splits:
        """The train / validation / test ids the run was trained on: ``splits.json``, written at
        fit; for a run trained before it was, rebuilt from ``config`` (default: ``config.yaml``)
        by the data module, as the run's training built them."""
        path = self.splits_file
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise RunFolderError(f"{path}: not a readable {SPLITS_FILE} ({e})") from e
            return Splits.from_dict(data, source=str(path))
        from ..data.dataset import SteelDataModule

        return Splits.of(SteelDataModule(config if config is not None else self.config()))


@dataclass(frozen=True, eq=False)
class RunRecord(Mapping[str, Any]):
    """A run found by ``read_runs``: its ``folder`` and its ``metrics`` (``metrics.json``, with
    ``run`` set to the name it is shown by), read like the metrics mapping."""

    folder: RunFolder
    metrics: Mapping[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.metrics[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)

    @property
    def path(self) -> Path:
        """The run folder's path."""
        return self.folder.path

    def replace(self, **changes: Any) -> RunRecord:
        """The same run with ``changes`` over its metrics (the file is not touched)."""
        return RunRecord(self.folder, {**self.metrics, **changes})


def _metrics_files(source: str | Path | Sequence[str | Path]) -> list[tuple[Path, str | None]]:
    """(metrics file, its run's path from the folder it was found below, or None) of ``source``."""
    items = [source] if isinstance(source, (str, Path)) else list(source)
    found: list[tuple[Path, str | None]] = []
    for item in map(Path, items):
        if item.is_file():
            found.append((item, None))
        elif (item / METRICS_FILE).is_file():
            found.append((item / METRICS_FILE, None))
        elif item.is_dir():
            found += [(p, p.parent.relative_to(item).as_posix()) for p in sorted(item.rglob(METRICS_FILE))]
    return found


def read_runs(source: str | Path | Sequence[str | Path]) -> list[RunRecord]:
    """The runs under a folder (every ``metrics.json`` below it), or the given run folders or
    metrics files, sorted by run name. A run found deeper than one level below a folder is named
    by its path from there (``smoke/efficientnet-b3__dice_bce__64x416``), so that the runs of a
    plan's folder and a run of the same name beside them are told apart in every table.
    Unreadable files raise ``RunFolderError`` naming the file."""
    out = []
    for path, below in _metrics_files(source):
        folder = RunFolder(path.parent)
        m = folder.metrics()
        m.setdefault("run", folder.name)
        if below and "/" in below:  # a run of a plan's folder (smoke/<run>) beside one of the same name
            m["run"] = below
        out.append(RunRecord(folder, m))
    return sorted(out, key=lambda r: str(r["run"]))
