"""``steelnb export RUN [RUN ...]``: trained runs and their tuned post-processing as one ONNX
graph, its metadata file and a model card, for a machine without steelnb.

The graph (``exported`` describes its inputs and outputs) holds the members' networks and their
sigmoids; several runs are one graph whose output is the members' mean, as ``ensemble.Ensemble``
averages them (members at one input size: an ensemble's resized sheets would otherwise need one
input per size). The post-processing, TTA, normalisation and sizes go into ``model.json``; the
metrics the recipe was judged with (split, 95% intervals, what predicting nothing scores) come
from the ``metrics.json`` beside the post-processing, and only when it was scored with that very
post-processing. Before anything is written the graph is run in onnxruntime on a probe batch
against torch (``PARITY``). The three files are written to temporary files and renamed into
place only when all three are whole (``fileio.atomic_path``).

Imports: this module uses ``exported``, ``ensemble``, ``models``, ``postprocess``,
``provenance`` and ``modelcard``; ``cli`` uses it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata as dist
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.config import HEIGHT, N_CLASSES, WIDTH
from ..data.fileio import atomic_path
from ..data.images import IMAGENET_MEAN, IMAGENET_STD
from ..model.models import has_classifier, split_logits
from ..model.provenance import code_info
from ..model.runfiles import MEMBERS_FILE, METRICS_FILE
from . import exported as ex
from . import postprocess as pp
from .ensemble import Ensemble, load_ensemble
from .inference import TTA_FLIPS
from .modelcard import model_card

OPSET = 17  # ONNX 1.12+ runtimes; every op of an smp UNet is there since opset 11
#: largest probability difference onnxruntime may show against torch on the probe batch of noise
#: images, a check that the graph is the model (a wrong op is off by far more); on sheets the tests
#: hold it to 1e-4, but noise drives random or barely trained BatchNorm statistics far out and a
#: steep head turns float32 rounding there into 3e-4 (the bench's rescaled random ResNet-50)
PARITY = 1e-3
#: the test block's keys carried into the metadata: each estimate with its interval, the baseline
METRIC_KEYS = (
    "split",
    "images",
    "defect_pairs",
    "tta",
    "kaggle",
    "kaggle_ci95",
    "all_empty_kaggle",
    "kaggle_gain",
    "kaggle_gain_ci95",
    "gain_real",
    "dice",
    "dice_ci95",
    "iou",
    "iou_ci95",
    "defect_dice",
    "defect_dice_ci95",
    "n_val_tuned",
)


class _Graph(nn.Module):
    """The members as one network: normalised images (N, 3, H, W) -> their mean sigmoid
    probabilities (N, C, H, W), and mean class probabilities (N, C) when every member has a head."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(models)
        self.heads = all(has_classifier(m) for m in models)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        masks, classes = [], []
        for member in self.members:
            m, c = split_logits(member(x))
            masks.append(torch.sigmoid(m))
            if self.heads:
                classes.append(torch.sigmoid(c))
        mean = torch.stack(masks).mean(0) if len(masks) > 1 else masks[0]
        if not self.heads:
            return mean
        return mean, torch.stack(classes).mean(0) if len(classes) > 1 else classes[0]


def _postprocessing(ens: Ensemble, runs: Sequence[Path], postprocess: str | Path | None) -> Path:
    """The post-processing file to export: ``postprocess`` (a file or a folder holding one), else
    one run's own; ``ExportError`` when there is none (an untuned run, an ensemble without one)."""
    if postprocess is not None:
        path = Path(postprocess)
        path = path / pp.FILE_NAME if path.is_dir() else path
        if not path.is_file():
            raise ex.ExportError(f"{path}: post-processing file not found")
        return path
    if len(runs) > 1:
        raise ex.ExportError(
            f"{len(runs)} runs: an ensemble's post-processing is tuned on its own probabilities; pass "
            f"--postprocess with the folder evaluation.evaluate_ensemble wrote for them (08_recipe writes one)"
        )
    path = ens.run_dirs[0] / pp.FILE_NAME
    if not path.is_file():
        raise ex.ExportError(
            f"{ens.run_dirs[0]}: no tuned post-processing ({pp.FILE_NAME}) in this run folder: the export "
            f"would carry untested thresholds. Evaluate the run first (steelnb train does; "
            f"evaluation.evaluate_run), or pass --postprocess FILE"
        )
    return path


def _judged(params: pp.PostParams, where: Path) -> tuple[dict[str, Any], str | None]:
    """(metrics.json beside the post-processing file or {}, the TTA it was tuned with or None).
    Its test block is kept only when it was scored with these parameters."""
    folder = where.parent
    found = json.loads((folder / METRICS_FILE).read_text()) if (folder / METRICS_FILE).is_file() else {}
    members = folder / MEMBERS_FILE
    tta = (found.get("test") or {}).get("tta")
    if tta is None and members.is_file():
        tta = json.loads(members.read_text()).get("tta")
    scored_with = found.get("postprocess")
    if scored_with is not None and pp.PostParams.from_dict(scored_with).classes != params.classes:
        found = {**found, "test": None, "test_note": f"scored with other post-processing than {where.name}"}
    return found, tta


def _tta(given: str | None, tuned: str | None, where: Path) -> str:
    """The TTA to export: the one the post-processing was tuned with; errors when unknown or contradicted."""
    if given is not None and given not in TTA_FLIPS:
        raise ex.ExportError(f"tta={given!r}: expected one of {', '.join(TTA_FLIPS)}")
    if tuned is not None and given is not None and given != tuned:
        raise ex.ExportError(
            f"{where}: tuned with TTA {tuned} (its metrics.json); exporting it with TTA {given} would apply "
            f"its thresholds to other probabilities"
        )
    if given is None and tuned is None:
        raise ex.ExportError(
            f"{where}: no metrics.json beside it says which TTA it was tuned with; pass --tta"
        )
    return given or tuned  # type: ignore[return-value]


def _write_onnx(graph: _Graph, size: tuple[int, int], path: Path, opset: int) -> None:
    """torch.onnx's TorchScript exporter (the dynamo one needs onnxscript and torch.export of smp's
    encoders); batch axis dynamic; checked by onnx.checker."""
    import onnx

    names = [ex.MASKS, ex.CLASSES] if graph.heads else [ex.MASKS]
    probe = torch.zeros(1, 3, *size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(
            graph,
            (probe,),
            str(path),
            input_names=[ex.INPUT],
            output_names=names,
            dynamic_axes={n: {0: "batch"} for n in [ex.INPUT, *names]},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))


def _parity(graph: _Graph, path: Path, meta: dict[str, Any], out: Path, seed: int = 0) -> float:
    """Largest |onnxruntime - torch| over the outputs on a probe batch of two normalised noise
    images; ``ExportError`` above ``PARITY``."""
    size = (meta["input"]["height"], meta["input"]["width"])
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want = graph(x)
    want = want if isinstance(want, tuple) else (want,)
    got = ex.session(path).run(None, {ex.INPUT: x.numpy()})
    diff = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))
    if not diff <= PARITY:
        raise ex.ExportError(
            f"{out}: onnxruntime's probabilities differ from torch's by {diff:.2e} (> {PARITY}) on a probe "
            "batch; nothing written"
        )
    return diff


def _versions() -> dict[str, Any]:
    """The exporting code: steelnb's version, commit and libraries, with onnx and onnxruntime."""
    code = code_info()
    for name in ("onnx", "onnxruntime"):
        try:
            code["versions"][name] = dist.version(name)
        except dist.PackageNotFoundError:
            code["versions"][name] = None
    return code


def _input_block(h: int, w: int) -> dict[str, Any]:
    """The graph's input as the metadata describes it: shape, layout, resize and normalisation."""
    return {
        "name": ex.INPUT,
        "shape": ["batch", 3, h, w],
        "height": h,
        "width": w,
        "dtype": "float32",
        "layout": "NCHW, RGB (a grey sheet: its channel three times)",
        "resize": f"each {HEIGHT}x{WIDTH} sheet to {h}x{w}, bilinear (OpenCV INTER_LINEAR), as uint8",
        "normalisation": {
            "mean": [round(m * 255, 4) for m in IMAGENET_MEAN],
            "std": [round(s * 255, 4) for s in IMAGENET_STD],
            "formula": "(pixel - mean) / std per channel, pixels 0-255 (ImageNet statistics)",
        },
    }


def _metadata(
    ens: Ensemble, params: pp.PostParams, where: Path, judged: dict[str, Any], tta: str, opset: int
) -> dict[str, Any]:
    """``model.json`` but for the graph's SHA-256 (the caller adds it once the file is written)."""
    (h, w), heads = ens.sizes[0], all(has_classifier(m) for m in ens.models)
    test = judged.get("test")
    if test and not all(test.get(k) is not None for k in ("kaggle", "kaggle_ci95", "all_empty_kaggle")):
        test, judged = (
            None,
            {**judged, "test_note": "its test block has no Kaggle metric with interval and baseline"},
        )
    gate = [c.cls_threshold for c in params.classes]
    return {
        "format": ex.FORMAT,
        "format_version": ex.FORMAT_VERSION,
        "opset": opset,
        "classes": N_CLASSES,
        "class_names": ex.CLASS_NAMES,
        "image_size": [HEIGHT, WIDTH],
        "input": _input_block(h, w),
        "outputs": {
            ex.MASKS: f"float32 (batch, {N_CLASSES}, {h}, {w}): per-pixel probability of each class"
            + (" (the members' mean)" if len(ens) > 1 else ""),
            **({ex.CLASSES: f"float32 (batch, {N_CLASSES}): image-level class probability"} if heads else {}),
        },
        "output_size": [HEIGHT, WIDTH],
        "upsample": f"the TTA-averaged probabilities to {HEIGHT}x{WIDTH}, bilinear with half-pixel centres",
        "tta": {
            "name": tta,
            "flips": [list(f) for f in TTA_FLIPS[tta]],
            "how": "each flip of the normalised batch (axes of N, C, H, W) through the graph, flipped back, averaged",
        },
        "postprocess": {"classes": params.to_dict()["classes"], "source": str(where)},
        "gate": {
            "classifier_head": heads,
            "active": heads and any(t > 0 for t in gate),
            "cls_threshold": gate,
            "gate_min_area": [c.gate_min_area for c in params.classes],
        },
        "members": [{**r, "weight": 1 / len(ens)} for r in ens.record()],
        "trained_on": judged.get("data"),
        "metrics": {k: test.get(k) for k in METRIC_KEYS} if test else None,
        "metrics_note": judged.get("test_note")
        or (
            "95% bootstrap intervals over the split's images" if test else "not evaluated on a held-out split"
        ),
        "training_code": judged.get("code"),
        "exported_by": _versions(),
        "exported_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def export_runs(
    runs: Sequence[str | Path],
    out: str | Path,
    postprocess: str | Path | None = None,
    tta: str | None = None,
    opset: int = OPSET,
) -> dict[str, Any]:
    """Export run folders (or checkpoints) with their tuned post-processing.

    Writes ``out`` (``model.onnx``), ``model.json`` (``exported`` reads it) and ``model.md``
    (the model card) beside it, or none of them. One run: its own ``postprocess.yaml`` and
    ``metrics.json``; several: the ``postprocess`` file (or folder) tuned for them. ``tta``:
    default the one the post-processing was tuned with. Returns {model, metadata, card, parity}.
    Raises ``exported.ExportError`` for a run without tuned post-processing, members of
    different input sizes or class counts, a TTA that contradicts the tuning.
    """
    runs, out = [Path(r) for r in runs], Path(out)
    if out.suffix != ".onnx":
        raise ex.ExportError(f"{out}: the model file's name must end in .onnx")
    ens = load_ensemble(runs, "cpu")
    if len(set(ens.sizes)) > 1 or ens.classes != N_CLASSES:
        listing = ", ".join(
            f"{r} ({h}x{w}, {i.classes} classes)" for r, (h, w), i in zip(runs, ens.sizes, ens.infos)
        )
        raise ex.ExportError(f"members must share one input size and predict {N_CLASSES} classes: {listing}")
    where = _postprocessing(ens, runs, postprocess)
    params = pp.PostParams.from_yaml(where)
    judged, tuned = _judged(params, where)
    meta = _metadata(ens, params, where, judged, _tta(tta, tuned, where), opset)
    graph = _Graph(ens.models).eval()
    meta_file, card = ex.metadata_path(out), out.with_suffix(".md")
    with atomic_path(out) as tmp, atomic_path(meta_file) as tmp_meta, atomic_path(card) as tmp_card:
        _write_onnx(graph, ens.sizes[0], tmp, opset)
        diff = _parity(graph, tmp, meta, out)
        meta = {
            "model_file": out.name,
            "model_sha256": ex.sha256(tmp),
            "export_parity_max_diff": diff,
            **meta,
        }
        tmp_meta.write_text(json.dumps(meta, indent=2, default=str))
        tmp_card.write_text(model_card(meta))
    return {"model": out, "metadata": meta_file, "card": card, "parity": diff}
