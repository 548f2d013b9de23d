"""A loaded model run through onnxruntime on the CPU: the same network, about three times faster.

On one CPU thread, PyTorch's eager kernels for the EfficientNets' depthwise convolutions, their
BatchNorm and TensorFlow-style padding take most of an evaluation (``bench/bench_eval_runtime.py``
measures the ratio side by side). ``OnnxCpu`` wraps a model in eval mode: on its first CPU input
of each (channels, height, width) it exports the model in memory (torch.onnx's TorchScript
exporter, batch axis dynamic; nothing is written) and checks the graph against the model on that
input's first image; from then on that input size runs through onnxruntime with torch's thread
count. Its outputs are the model's logits (a tuple of masks and class logits for a model with a
classification head), so prediction, tuning and scoring use it unchanged. A graph whose outputs
differ from the model's by more than ``TOLERANCE``, or that cannot be exported, is not used:
the model runs in torch for that size, with a warning that says why. CUDA inputs always run in
torch.

``runtime(device, name)`` resolves the ``runtime`` parameter of ``ensemble.load_ensemble``:
``"torch"``, ``"onnx"`` (on the CPU), or ``"auto"`` (onnx on the CPU, torch on CUDA).

Imports: this module uses ``models`` only; ``ensemble`` uses it.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.errors import SteelnbError
from ..model.models import has_classifier, split_logits

RUNTIMES = ("torch", "onnx", "auto")
#: largest absolute difference of the graph's logits from the model's on the check image
TOLERANCE = 1e-3


class RuntimeChoiceError(SteelnbError):
    """An unknown ``runtime``; names the choices."""


def runtime(device: torch.device, name: str) -> str:
    """``"onnx"`` or ``"torch"``: what a model loaded on ``device`` runs in for ``name``."""
    if name not in RUNTIMES:
        raise RuntimeChoiceError(f"runtime={name!r}: expected one of {', '.join(RUNTIMES)}")
    return "onnx" if name in ("onnx", "auto") and device.type == "cpu" else "torch"


class OnnxCpu(nn.Module):
    """``model`` (in eval mode) run through onnxruntime for CPU inputs; see the module's doc."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.eval()
        self.classification_head = getattr(model, "classification_head", None)
        self.sessions: dict[tuple[int, ...], Any] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if x.device.type != "cpu" or self.model.training:
            return self.model(x)
        key = tuple(x.shape[1:])
        if key not in self.sessions:
            self.sessions[key] = self._session(x)
        session = self.sessions[key]
        if session is None:
            return self.model(x)
        out = session.run(None, {"image": np.ascontiguousarray(x.detach().float().numpy())})
        tensors = [torch.from_numpy(o) for o in out]
        return (tensors[0], tensors[1]) if len(tensors) == 2 else tensors[0]

    def _session(self, x: torch.Tensor) -> Any:
        """onnxruntime's session of the model at ``x``'s size, checked on ``x[:1]``; None (with a
        warning) when the export fails or its outputs differ from the model's."""
        import onnxruntime as ort

        try:
            graph = _exported(self.model, x[:1], has_classifier(self.model))
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # the exporter and onnxruntime raise many types
            warnings.warn(
                f"onnxruntime not used at input {tuple(x.shape[1:])}: {type(e).__name__}: {str(e)[:200]}",
                stacklevel=3,
            )
            return None
        with torch.no_grad():
            want = split_logits(self.model(x[:1]))
        got = session.run(None, {"image": np.ascontiguousarray(x[:1].float().numpy())})
        diff = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want) if w is not None)
        if diff > TOLERANCE:
            warnings.warn(
                f"onnxruntime not used at input {tuple(x.shape[1:])}: its logits differ from the "
                f"model's by {diff:.2e} (tolerance {TOLERANCE})",
                stacklevel=3,
            )
            return None
        return session


def _exported(model: nn.Module, probe: torch.Tensor, heads: bool) -> bytes:
    """The model as ONNX bytes (in memory), input ``image``, batch axis dynamic."""
    names = ["masks", "classes"] if heads else ["masks"]
    f = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(
            model,
            (probe,),
            f,
            input_names=["image"],
            output_names=names,
            dynamic_axes={n: {0: "batch"} for n in ["image", *names]},
            do_constant_folding=True,
            dynamo=False,
        )
    return f.getvalue()
