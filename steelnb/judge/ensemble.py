"""Ensembles of trained runs: several checkpoints predicting as one model.

An ensemble averages its members' per-pixel probabilities, each member at its own training size
and with the chosen test-time augmentation, resized to one output size
(``inference.predict_members``), and their image-level class probabilities when every member has
a classification head (else it has none). Members are run folders (or checkpoint files) of the
three encoders, of several folds, or both. A one-member ensemble predicts exactly what its model
does.

``load_ensemble`` reads the members; ``Ensemble.predict`` yields ``inference.Batch`` es;
``Ensemble.record`` is what ``members.json`` holds (written by ``write_members`` beside a
submission or an ensemble's evaluation). Tuning and test scoring of an ensemble are
``evaluation.evaluate_ensemble``'s.

Imports: this module uses ``inference``, ``cpugraph`` and ``models``; ``evaluation`` and ``predict_run`` use it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..data.config import HEIGHT, WIDTH
from ..data.errors import SteelnbError
from ..data.fileio import write_json
from ..model.models import ModelInfo, has_classifier
from ..model.runfiles import MEMBERS_FILE
from ..model.runfolder import RunFolder
from . import cpugraph
from .inference import Batch, load, predict_members, resolve_device


class EnsembleError(SteelnbError):
    """Members that cannot form an ensemble (none, or of different class counts); names them."""


@dataclass
class Ensemble:
    """Loaded members: ``models[i]`` in eval mode, ``infos[i]`` its ``models.ModelInfo``, and
    ``sources[i]`` the path it was loaded from (a run folder or a checkpoint file)."""

    models: list[nn.Module]
    infos: list[ModelInfo]
    sources: list[Path]
    #: (H, W) every image must have (an exported model's sheet size); None: any size, resized
    image_size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.models)

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """Each member's input size (H, W): its training size, else the full 256 x 1600."""
        return [(i.height or HEIGHT, i.width or WIDTH) for i in self.infos]

    @property
    def classes(self) -> int:
        """The class count every member predicts."""
        return self.infos[0].classes

    @property
    def has_classifier(self) -> bool:
        """True when every member has a classification head (the ensemble has class probabilities)."""
        return all(has_classifier(m) for m in self.models)

    @property
    def run_dirs(self) -> list[Path]:
        """Each member's run folder (the folder of its checkpoint file)."""
        return [i.path.parent if i.path is not None else s for i, s in zip(self.infos, self.sources)]

    def describe(self) -> str:
        """One line: "arch/encoder (source, N classes)" of each member, joined by " + "."""
        return " + ".join(f"{i.arch}/{i.encoder} ({i.source}, {i.classes} classes)" for i in self.infos)

    def record(self) -> list[dict[str, Any]]:
        """One dict per member, as ``members.json`` lists them: run folder, checkpoint, model, size."""
        return [
            {
                "run": str(run),
                "checkpoint": str(info.path),
                "arch": info.arch,
                "encoder": info.encoder,
                "classes": info.classes,
                "height": h,
                "width": w,
                "classifier": has_classifier(model),
            }
            for run, info, model, (h, w) in zip(self.run_dirs, self.infos, self.models, self.sizes)
        ]

    def predict(
        self,
        images: str | Path | Sequence[str | Path],
        tta: str = "none",
        batch_size: int = 8,
        device: str = "auto",
        on_error: str = "raise",
        out_size: tuple[int, int] = (HEIGHT, WIDTH),
        quantize: bool = False,
        with_plain: bool = False,
        progress: bool = True,
    ) -> Iterator[Batch]:
        """``inference.predict`` of the ensemble: ``Batch`` es of the members' mean probabilities
        (B, C, *out_size) and, when every member has a head, mean class probabilities (B, C)."""
        members = list(zip(self.models, self.sizes))
        return predict_members(
            members,
            images,
            tta,
            batch_size,
            device,
            on_error,
            out_size,
            quantize=quantize,
            with_plain=with_plain,
            progress=progress,
            image_size=self.image_size,
        )


def load_run(run: str | Path | RunFolder, device: str = "cpu", runtime: str = "torch") -> Ensemble:
    """A run's model (its best checkpoint, else the last) as a one-member ``Ensemble``: ``run`` a
    run folder's path or a ``RunFolder``; ``runtime`` as ``load_ensemble``'s."""
    return load_ensemble([run.path if isinstance(run, RunFolder) else run], device, runtime)


def load_ensemble(weights: Sequence[str | Path], device: str = "cpu", runtime: str = "torch") -> Ensemble:
    """Load each of ``weights`` (run folders or checkpoint files; ``inference.load``) -> ``Ensemble``.

    ``runtime``: ``"torch"``; ``"onnx"`` runs each member through onnxruntime on the CPU
    (``cpugraph.OnnxCpu``: the same logits within 1e-3, checked); ``"auto"``: onnx on the CPU,
    torch on CUDA.

    Raises ``EnsembleError`` for an empty list or for members that predict different numbers of
    classes, and ``inference.InferenceError`` naming a path that does not exist.
    """
    sources = [Path(w) for w in weights]
    if not sources:
        raise EnsembleError("an ensemble needs at least one run folder or checkpoint; none given")
    if cpugraph.runtime(resolve_device(device), runtime) == "onnx":
        loaded = [(cpugraph.OnnxCpu(m), info) for m, info in (load(s, device) for s in sources)]
    else:
        loaded = [load(s, device) for s in sources]
    classes = {info.classes for _, info in loaded}
    if len(classes) > 1:
        listing = ", ".join(f"{s} ({info.classes})" for s, (_, info) in zip(sources, loaded))
        raise EnsembleError(f"members predict different numbers of classes: {listing}")
    return Ensemble([m for m, _ in loaded], [i for _, i in loaded], sources)


def write_members(folder: str | Path, ensemble: Ensemble, **extra: Any) -> Path:
    """Write ``<folder>/members.json`` (atomically): {"members": ``Ensemble.record()``, **extra}."""
    return write_json(Path(folder) / MEMBERS_FILE, {"members": ensemble.record(), **extra})
