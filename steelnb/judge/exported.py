"""An exported model: an ONNX graph and the metadata file beside it, run through onnxruntime.

``steelnb export`` (``export.export_runs``) writes ``model.onnx`` and ``model.json``: the graph
maps normalised images (N, 3, H, W) float32 at the members' input size to per-pixel
probabilities ``masks`` (N, 4, H, W), the sigmoid of the mask logits (an ensemble's members'
mean), and, when every member has a classification head, ``classes`` (N, 4), the image-level
class probabilities; the batch axis is dynamic. What happens around the graph is the metadata's:
resize each sheet to (H, W) (OpenCV, bilinear), normalise with its mean and std (0-255 RGB),
run the TTA flips as one batch, flip back and average, resize the probabilities to the sheet
size (bilinear, half-pixel centres), then the post-processing (per-class thresholds, minimum
areas, gates, classifier gate) and the run-length encoding.

``load_exported`` checks the pair (the metadata names the graph's SHA-256, inputs and outputs) and
returns the graph as a one-member ``ensemble.Ensemble`` whose model is an ``OnnxModel``, so that
``predict_exported`` replays exactly ``predict_run``'s prediction: same batching, TTA, resizing,
post-processing, submission, skipped files, evaluation and overlays.

Imports: this module uses ``predict_run``, ``ensemble``, ``models`` and ``postprocess``;
``export`` (which writes the files) uses it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.config import N_CLASSES
from ..data.errors import SteelnbError
from ..model.models import ModelInfo
from . import postprocess as pp
from .ensemble import Ensemble
from .inference import TTA_FLIPS
from .predict_run import predict_with

FORMAT = "steelnb-onnx"
FORMAT_VERSION = 1
INPUT, MASKS, CLASSES = "image", "masks", "classes"
#: the competition numbers its classes and never named them
CLASS_NAMES = {str(c): f"class {c}" for c in range(1, N_CLASSES + 1)}
REQUIRED = (
    "format",
    "format_version",
    "model_sha256",
    "input",
    "outputs",
    "image_size",
    "tta",
    "postprocess",
)


class ExportError(SteelnbError):
    """An exported model or its metadata is missing, invalid or does not match; names the file."""


def metadata_path(model: str | Path) -> Path:
    """The metadata file of a model file: ``model.onnx`` -> ``model.json`` beside it."""
    return Path(model).with_suffix(".json")


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (the metadata names the graph it was written for)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_metadata(model: str | Path) -> dict[str, Any]:
    """The metadata of ``model`` (``model.json``), checked against the file: its format, its
    fields and the SHA-256 of the graph. Raises ``ExportError`` naming the file and the problem."""
    model = Path(model)
    meta_file = metadata_path(model)
    if not model.is_file():
        raise ExportError(f"{model}: model file not found")
    if not meta_file.is_file():
        raise ExportError(
            f"{meta_file}: metadata file not found beside {model.name} (input size, normalisation, "
            f"TTA and post-processing live there); export the run again with `steelnb export`"
        )
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{meta_file}: not readable JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ExportError(f"{meta_file}: not a steelnb export's metadata (expected format {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ExportError(
            f"{meta_file}: metadata format version {meta.get('format_version')}; this steelnb reads {FORMAT_VERSION}"
        )
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ExportError(f"{meta_file}: missing field(s) {', '.join(missing)}")
    found = sha256(model)
    if found != meta["model_sha256"]:
        raise ExportError(
            f"{meta_file}: written for another model file than {model} (SHA-256 {meta['model_sha256'][:12]}... "
            f"expected, {found[:12]}... found); keep each model.onnx with its own model.json"
        )
    return meta


def check_graph(session: Any, meta: dict[str, Any], model: str | Path) -> None:
    """The graph's input and outputs are the metadata's: names, channels and input size."""
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    want = meta["input"]
    shape = inputs.get(INPUT)
    expected = [3, want["height"], want["width"]]
    if shape is None or list(shape[1:]) != expected:
        raise ExportError(
            f"{model}: graph input {inputs} does not match {metadata_path(model).name} "
            f"(expected {INPUT!r} of shape [batch, {', '.join(map(str, expected))}])"
        )
    if outputs != list(meta["outputs"]):
        raise ExportError(
            f"{model}: graph outputs {outputs} do not match {metadata_path(model).name} ({list(meta['outputs'])})"
        )


def session(model: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session of ``model``, with ``threads`` intra-op threads (default:
    torch's, so that the two runtimes share the cores a caller gave torch)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types for a file that is not a graph
        raise ExportError(
            f"{model}: onnxruntime cannot load it ({type(e).__name__}: {str(e)[:300]})"
        ) from None


class OnnxModel(nn.Module):
    """An exported graph behind the interface of a model: normalised images (N, 3, H, W) -> the
    graph's probabilities (N, C, H, W), and (those, class probabilities (N, C)) when it has the
    ``classes`` output. ``outputs_probabilities`` tells ``inference.predict_tensors`` that the
    sigmoid is already applied. Runs on the CPU whatever the input's device; returns on it."""

    outputs_probabilities = True

    def __init__(self, model: str | Path, meta: dict[str, Any], threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(model)
        self.session = session(model, threads)
        check_graph(self.session, meta, model)
        self.names = list(meta["outputs"])

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        feed = {INPUT: np.ascontiguousarray(x.detach().float().cpu().numpy())}
        out = [torch.from_numpy(o).to(x.device) for o in self.session.run(self.names, feed)]
        return (out[0], out[1]) if len(out) == 2 else out[0]


@dataclass
class Exported:
    """A loaded export: the graph as a one-member ``Ensemble``, its post-processing, its metadata."""

    ensemble: Ensemble
    params: pp.PostParams
    meta: dict[str, Any]

    @property
    def tta(self) -> str:
        """The TTA the post-processing was tuned with."""
        return self.meta["tta"]["name"]


def load_exported(model: str | Path, threads: int | None = None) -> Exported:
    """``model.onnx`` and its ``model.json`` -> ``Exported``; ``ExportError`` for a missing,
    invalid or mismatched pair (nothing is written)."""
    model = Path(model)
    meta = read_metadata(model)
    meta_file = metadata_path(model)
    params = pp.PostParams.from_dict(meta["postprocess"], source=str(meta_file))
    if meta["tta"].get("name") not in TTA_FLIPS:
        raise ExportError(f"{meta_file}: tta {meta['tta']!r}; expected one of {', '.join(TTA_FLIPS)}")
    size = meta["input"]
    members = meta.get("members") or [{}]
    info = ModelInfo(
        "+".join(m.get("arch", "?") for m in members),
        "+".join(m.get("encoder", "?") for m in members),
        int(meta.get("classes", N_CLASSES)),
        "onnx",
        int(size["height"]),
        int(size["width"]),
        path=model,
    )
    ens = Ensemble([OnnxModel(model, meta, threads)], [info], [model], image_size=tuple(meta["image_size"]))
    return Exported(ens, params, meta)


def predict_exported(
    model: str | Path,
    images: str | Path | Sequence[str | Path],
    out: str | Path,
    labels: str | Path | None = None,
    tta: str | None = None,
    overlays: int = 0,
    batch_size: int = 8,
    on_error: str = "raise",
    progress: bool = True,
) -> dict[str, Any]:
    """``predict_run.run_predict`` with an exported model: the same files in ``out``
    (``submission.csv``, ``skipped.csv``, with labels the evaluation, ``overlays/*.png``), the
    metadata's post-processing and TTA (``tta`` given and different: applied, with a note, since
    the post-processing was tuned with the other). Images must have the metadata's sheet size
    (a bad file otherwise: ``on_error`` decides). The graph runs in onnxruntime on the CPU."""
    loaded = load_exported(model)
    use = tta or loaded.tta
    if use not in TTA_FLIPS:
        raise ExportError(f"tta={use!r}: expected one of {', '.join(TTA_FLIPS)}")
    result = predict_with(
        loaded.ensemble,
        loaded.params,
        str(metadata_path(model)),
        images,
        out,
        labels,
        use,
        overlays,
        batch_size,
        "cpu",
        on_error,
        None,
        progress,
    )
    if use != loaded.tta:
        result["note"] = f"TTA {use}: the post-processing was tuned with TTA {loaded.tta}"
    return result
