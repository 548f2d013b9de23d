"""The data: the run's configuration, the Severstal label files and their RLE, images, class-balanced
subsets and splits, the synthetic set and its Kaggle-size twin, the numbers of the EDA, and the
tensors that training reads.

The bottom layer: its modules import nothing from the other folders (tests/test_imports.py).

- ``config``: Run configuration: one frozen dataclass, saved as YAML beside every checkpoint.
- ``errors``: The base of steelnb's own errors.
- ``fileio``: Atomic writes: every file steelnb writes appears whole or not at all.
- ``locks``: One writer per folder: a training run's folder, a book's ``runs/``.
- ``rle``: Run-length encoding in the Kaggle Severstal convention.
- ``images``: Image files: which files in a folder are images, reading one by its content, and the
  ImageNet statistics every model input is normalised with.
- ``labels``: Severstal label files: read both CSV formats into one tidy table, and build the image
  table.
- ``sampling``: Class-balanced subsets and stratified folds.
- ``synthetic``: A synthetic Severstal data set in the exact Kaggle layout, calibrated to the real
  statistics.
- ``twin``: A Kaggle-size synthetic twin: synthetic sheets that carry a real label table.
- ``eda``: The numbers of the EDA notebook, computed here so that tests check them.
- ``contrast``: Defect-to-background contrast: how far a mask's grey level stands from its
  surroundings.
- ``dataset``: Images and masks as tensors: reading, albumentations transforms, Dataset and
  DataModule.
"""

__all__ = [
    "config",
    "errors",
    "fileio",
    "locks",
    "rle",
    "images",
    "labels",
    "sampling",
    "synthetic",
    "twin",
    "eda",
    "contrast",
    "dataset",
]
