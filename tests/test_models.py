"""Model building (names, offline weights, local weights) and checkpoint loading (ours, raw,
DataParallel, the reference's Catalyst files), never running code from a file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from steelnb.model import models
from steelnb.model.models import CheckpointError, ModelError, build_model, load_model

torch.set_num_threads(1)


def test_unknown_names_list_valid_ones() -> None:
    with pytest.raises(ModelError, match="Unet, UnetPlusPlus"):
        build_model("Unet3", "resnet18", encoder_weights=None)
    with pytest.raises(ModelError, match="efficientnet-b4"):
        build_model("Unet", "efficientnet-b99", encoder_weights=None)


def test_other_architectures_and_shapes() -> None:
    x = torch.randn(1, 3, 64, 96)
    for arch in ("Unet", "FPN"):
        assert build_model(arch, "resnet18", encoder_weights=None, classes=4)(x).shape == (1, 4, 64, 96)


def _offline_build(env_offline: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    if env_offline:
        env["HF_HUB_OFFLINE"] = "1"
    code = (
        "from steelnb.model.models import build_model\n"
        "build_model('Unet', 'resnet18', encoder_weights='imagenet')\n"
    )
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # 5-14 s on two cores (trains, exports or starts a process): CI runs it, the fast loop does not
def test_imagenet_offline_fails_fast_with_advice() -> None:
    start = time.monotonic()
    proc = _offline_build(env_offline=True)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert "WeightsUnavailableError" in proc.stderr and "encoder_weights=None" in proc.stderr
    assert "local weights file" in proc.stderr
    assert elapsed < 60, f"offline failure took {elapsed:.0f} s: hub retries?"  # hang guard, not a benchmark


@pytest.mark.slow  # 5-14 s on two cores (trains, exports or starts a process): CI runs it, the fast loop does not
def test_imagenet_without_network_fails_fast() -> None:
    if models._hub_reachable():
        pytest.skip("the hub is reachable: the offline path cannot be exercised here")
    proc = _offline_build(env_offline=False)
    assert proc.returncode != 0 and "encoder_weights=None" in proc.stderr


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_encoder_weights(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(1)
    src = build_model("Unet", "resnet18", encoder_weights=None)
    path = tmp_path / f"resnet18{suffix}"
    state = {k: v.contiguous() for k, v in src.encoder.state_dict().items()}
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    torch.manual_seed(2)
    model = build_model("Unet", "resnet18", encoder_weights=str(path))
    assert torch.equal(model.encoder.conv1.weight, src.encoder.conv1.weight)
    with pytest.raises(ModelError, match="do not fit"):
        build_model("Unet", "resnet34", encoder_weights=str(path))


def _same_output(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-5)


def test_raw_and_dataparallel_state_dicts(tmp_path: Path) -> None:
    src = build_model("Unet", "resnet18", encoder_weights=None, classes=4)
    torch.save(src.state_dict(), tmp_path / "raw.pth")
    torch.save({"module." + k: v for k, v in src.state_dict().items()}, tmp_path / "dp.pth")
    for name, source in (("raw.pth", "state_dict"), ("dp.pth", "dataparallel")):
        model, info = load_model(tmp_path / name)
        assert (info.encoder, info.classes, info.source) == ("resnet18", 4, source)
        assert _same_output(model, src)


def test_catalyst_reference_checkpoint(tmp_path: Path) -> None:
    src = build_model("Unet", "resnet50", encoder_weights=None, classes=1)
    path = tmp_path / "best_full.pth"
    torch.save(
        {
            "model_state_dict": src.state_dict(),
            "epoch": 7,
            "valid_metrics": {"loss": 0.3, "iou": 0.5},
            "optimizer_state_dict": {},
        },
        path,
    )
    model, info = load_model(path)
    assert (info.arch, info.encoder, info.classes, info.source) == ("Unet", "resnet50", 1, "catalyst")
    assert info.config is None and _same_output(model, src)


def test_infer_efficientnet_b4_from_keys() -> None:
    state = build_model("Unet", "efficientnet-b4", encoder_weights=None, classes=1).state_dict()
    assert models.infer_encoder(state) == "efficientnet-b4"


def test_mismatch_names_expected_and_found(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(build_model("Unet", "resnet18", encoder_weights=None, classes=4).state_dict(), path)
    with pytest.raises(
        CheckpointError, match=r"r18.pth: encoder mismatch: expected efficientnet-b4, found resnet18"
    ):
        load_model(path, encoder="efficientnet-b4")
    with pytest.raises(CheckpointError, match=r"classes mismatch: expected 1, found 4"):
        load_model(path, classes=1)
    with pytest.raises(CheckpointError, match="neither best.ckpt"):
        load_model(tmp_path)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # unpickling would call open(marker, "w"): creates the file
        return (open, (str(self.marker), "w"))


def test_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": _Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        load_model(path)
    assert not marker.exists()


# --- pretrained weights cached for offline use (steelnb weights fetch) -------------------------
import re  # noqa: E402

import segmentation_models_pytorch as smp  # noqa: E402

from steelnb.cli import main  # noqa: E402
from steelnb.model.models import WeightsUnavailableError  # noqa: E402


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty steelnb cache and an empty Hugging Face cache, both under tmp_path."""
    import huggingface_hub.constants as hfc

    monkeypatch.setenv("STEELNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path / "cache"


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr("socket.create_connection", refuse)
    monkeypatch.setattr(models, "_hub_reachable", refuse)
    monkeypatch.setattr(models, "_download_encoder", refuse)


def _random_encoder_state(encoder: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {
        k: v.contiguous() for k, v in smp.encoders.get_encoder(encoder, weights=None).state_dict().items()
    }


def _assert_encoder_equals(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    got = model.encoder.state_dict()
    assert set(got) == set(state)
    different = [k for k in state if not torch.equal(got[k], state[k])]
    assert not different, f"tensors not loaded from the file: {different[:5]}"


@pytest.mark.parametrize("encoder", ["resnet18", "efficientnet-b3"])
def test_cached_imagenet_loads_without_network(
    cache: Path, monkeypatch: pytest.MonkeyPatch, encoder: str
) -> None:
    state = _random_encoder_state(encoder, seed=0)
    cache.mkdir()
    torch.save(state, cache / f"{encoder}-imagenet.pth")
    assert models.cached_weights_path(encoder) == cache / f"{encoder}-imagenet.pth"
    _no_network(monkeypatch)
    torch.manual_seed(1)  # a different random init: equality below proves the file was read
    model = build_model("Unet", encoder, "imagenet")
    _assert_encoder_equals(model, state)


def test_uncached_imagenet_offline_names_fetch_command(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=2.0: False)
    with pytest.raises(WeightsUnavailableError) as info:
        build_model("Unet", "resnet18", "imagenet")
    message = str(info.value)
    assert "`steelnb weights fetch resnet18`" in message
    assert str(cache / "resnet18-imagenet.pth") in message
    assert "encoder_weights=None" in message and "local weights file" in message


def test_cached_file_of_wrong_encoder_names_the_file(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache.mkdir()
    wrong = cache / "resnet18-imagenet.pth"
    torch.save(_random_encoder_state("efficientnet-b0", seed=0), wrong)
    _no_network(monkeypatch)
    with pytest.raises(ModelError, match=re.escape(str(wrong)) + ".*do not fit"):
        build_model("Unet", "resnet18", "imagenet")
    r34 = cache.parent / "r34.pth"
    torch.save(_random_encoder_state("resnet34", seed=0), r34)
    with pytest.raises(ModelError, match=re.escape(str(r34)) + ".*do not fit"):
        build_model("Unet", "resnet18", encoder_weights=str(r34))


@pytest.mark.parametrize("encoder", ["resnet18", "tu-resnet18"])
def test_weights_file_path_loads_every_tensor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoder: str
) -> None:
    state = _random_encoder_state(encoder, seed=3)  # tu-: keys start with "model.", kept as they are
    path = tmp_path / "enc.pth"
    torch.save(state, path)
    _no_network(monkeypatch)
    torch.manual_seed(4)
    _assert_encoder_equals(build_model("Unet", encoder, encoder_weights=str(path)), state)


def test_cli_fetch_writes_cache_then_loads(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = _random_encoder_state("resnet18", seed=5)
    asked: list[tuple[str, str]] = []

    def fake_download(encoder: str, weights: str) -> torch.nn.Module:  # smp's download step
        asked.append((encoder, weights))
        enc = smp.encoders.get_encoder(encoder, weights=None)
        enc.load_state_dict(state)
        return enc

    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=2.0: True)
    monkeypatch.setattr(models, "_download_encoder", fake_download)
    assert main(["weights", "fetch", "resnet18"]) == 0
    path = cache / "resnet18-imagenet.pth"
    assert asked == [("resnet18", "imagenet")]
    assert sorted(p.name for p in cache.iterdir()) == [path.name]  # no temporary file left behind
    assert str(path) in capsys.readouterr().out

    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^resnet18\timagenet\t\d+\.\d MB\t" + re.escape(str(path)) + "$", out, re.M), out
    assert main(["weights", "path", "resnet18"]) == 0 and capsys.readouterr().out.strip() == str(path)
    assert main(["weights", "path", "resnet34"]) == 1

    _no_network(monkeypatch)
    torch.manual_seed(6)
    _assert_encoder_equals(build_model("Unet", "resnet18", "imagenet"), state)


def test_cli_fetch_unknown_encoder_fails_before_network(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_network(monkeypatch)
    assert main(["weights", "fetch", "resnet18", "not-an-encoder"]) == 2
    err = capsys.readouterr().err
    assert "'not-an-encoder'" in err and "efficientnet-b4" in err  # names it and lists valid ones
    assert not cache.exists()


def test_cli_fetch_offline_says_how_to_copy(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=2.0: False)
    monkeypatch.setattr(models, "_download_encoder", lambda *a: pytest.fail("download attempted offline"))
    assert main(["weights", "fetch", "resnet18"]) == 2
    err = capsys.readouterr().err
    assert "offline" in err and "steelnb weights fetch resnet18" in err and str(cache) in err
    assert main(["weights", "list"]) == 0 and str(cache) in capsys.readouterr().out


def test_model_with_classifier_returns_the_pair_in_every_mode(tmp_path) -> None:
    """No patched forward: smp's own returns (mask logits, class logits) in training and eval mode;
    the state dict is smp's (``classification_head.*``), and a bare state dict loads by its keys."""
    from steelnb.model.models import has_classifier, split_logits

    torch.manual_seed(0)
    model = build_model("Unet", "resnet18", encoder_weights=None, classes=4, classifier=True)
    assert "forward" not in vars(model) and has_classifier(model)
    x = torch.randn(2, 3, 64, 96)
    masks, labels = model.train()(x)
    assert masks.shape == (2, 4, 64, 96) and labels.shape == (2, 4)
    with torch.no_grad():
        masks, labels = model.eval()(x)
    assert masks.shape == (2, 4, 64, 96) and labels.shape == (2, 4)
    assert any(k.startswith("classification_head.") for k in model.state_dict())
    path = tmp_path / "state.pt"
    torch.save(model.state_dict(), path)
    again, _ = load_model(path)
    assert has_classifier(again)
    with torch.no_grad():
        m2, l2 = again(x)
    assert torch.allclose(m2, masks, atol=1e-5) and torch.allclose(l2, labels, atol=1e-5)
    plain = torch.randn(1, 4, 8, 8)
    assert split_logits(plain) == (plain, None) and split_logits((plain, labels)) == (plain, labels)


def test_old_classifier_checkpoint_loads_and_predicts(make_tiny_run, synthetic_data, tmp_path) -> None:
    """A run saved with a head (its keys as before the patched forward was removed) loads, and
    prediction gives the map of its mask logits alone (not scaled by the class probabilities,
    which only gate whole classes) and the class probabilities; a model without a head gives what
    it always did, and no class probabilities."""
    from steelnb.judge import inference as inf
    from steelnb.model.models import has_classifier

    head = make_tiny_run(tmp_path / "head", classifier=True)
    state = torch.load(head / "best.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("model.classification_head.") for k in state)
    model, info = load_model(head)
    assert has_classifier(model) and info.config.cls_weight == 0.5
    images = sorted((synthetic_data / "train_images").glob("*.jpg"))[:2]
    batch = next(inf.predict(model, images, (64, 320), out_size=(64, 320), progress=False))
    x = inf._normalised(torch.from_numpy(inf._Images(images, [(64, 320)])[0][1][0])[None], [()])
    with torch.no_grad():
        masks, labels = model(x)
    assert np.allclose(batch.probs[0], torch.sigmoid(masks)[0].numpy(), atol=1e-5)
    assert batch.class_probs.shape == (2, 4) and batch.class_probs.dtype == np.float32
    assert np.allclose(batch.class_probs[0], torch.sigmoid(labels)[0].numpy(), atol=1e-6)
    plain, _ = load_model(make_tiny_run(tmp_path / "plain"))
    assert not has_classifier(plain) and not any("classification_head" in k for k in plain.state_dict())
    with torch.no_grad():
        assert plain(x).shape == (1, 4, 64, 320)  # a tensor, not a pair
    batch = next(inf.predict(plain, images, (64, 320), out_size=(64, 320), progress=False))
    with torch.no_grad():
        assert np.allclose(batch.probs[0], torch.sigmoid(plain(x))[0].numpy(), atol=1e-5)
    assert batch.class_probs is None and batch.plain_class_probs is None
