"""cpugraph: a model run through onnxruntime on the CPU gives the model's logits, per input size,
with and without a classification head; a graph that differs is not used; the runtime choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from steelnb.judge import cpugraph
from steelnb.judge.ensemble import load_run
from steelnb.judge.inference import predict_tensors
from steelnb.model.models import has_classifier, split_logits


@pytest.mark.parametrize("classifier", [False, True])
def test_onnx_logits_equal_the_models_at_two_sizes_and_batches(
    make_tiny_run, tmp_path: Path, classifier: bool
) -> None:
    run = make_tiny_run(tmp_path / "run", classifier=classifier)
    torch_model = load_run(run, "cpu").models[0]
    onnx_model = load_run(run, "cpu", runtime="onnx").models[0]
    assert isinstance(onnx_model, cpugraph.OnnxCpu) and has_classifier(onnx_model) == classifier
    torch.manual_seed(0)
    for h, w in [(64, 320), (32, 160)]:
        for n in (3, 1):  # the batch axis is dynamic: the session built at 3 serves 1
            x = torch.randn(n, 3, h, w)
            with torch.no_grad():
                want, got = split_logits(torch_model(x)), split_logits(onnx_model(x))
            for a, b in zip(want, got):
                if a is not None:
                    assert b.shape == a.shape
                    assert torch.allclose(a, b, atol=1e-4), float((a - b).abs().max())
    assert sorted(onnx_model.sessions) == [(3, 32, 160), (3, 64, 320)]


def test_predictions_through_onnx_equal_torchs(tiny_run: Path) -> None:
    images = torch.randint(0, 256, (2, 64, 320, 3), dtype=torch.uint8)
    a = predict_tensors(load_run(tiny_run, "cpu").models[0], images, tta="h", out_size=(64, 320))
    b = predict_tensors(
        load_run(tiny_run, "cpu", runtime="onnx").models[0], images, tta="h", out_size=(64, 320)
    )
    assert torch.allclose(a.probs, b.probs, atol=1e-5)


def test_a_graph_that_differs_is_not_used(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_run(tiny_run, "cpu", runtime="onnx").models[0]
    monkeypatch.setattr(cpugraph, "TOLERANCE", -1.0)  # any difference, even none, is too much
    x = torch.randn(1, 3, 64, 320)
    with pytest.warns(UserWarning, match="onnxruntime not used at input"):
        out = model(x)
    assert model.sessions[(3, 64, 320)] is None
    with torch.no_grad():
        assert torch.equal(out, model.model(x))  # torch's own logits


def test_runtime_choice() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert cpugraph.runtime(cpu, "auto") == "onnx" and cpugraph.runtime(cuda, "auto") == "torch"
    assert cpugraph.runtime(cpu, "torch") == "torch" and cpugraph.runtime(cuda, "onnx") == "torch"
    with pytest.raises(cpugraph.RuntimeChoiceError, match="expected one of torch, onnx, auto"):
        cpugraph.runtime(cpu, "tensorrt")
