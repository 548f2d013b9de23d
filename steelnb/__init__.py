"""steelnb: segmentation of the four Severstal steel-defect classes.

One concept per module, in data-flow order: ``rle``, ``labels``, ``sampling``, ``synthetic``,
``dataset``, ``models``, ``losses``, ``metrics``, ``training``, ``inference``, ``viz``,
``pipeline``, ``cli``. Import the module you need, e.g. ``from steelnb import rle``.
"""

from .config import HEIGHT, N_CLASSES, WIDTH, TrainConfig

__version__ = "0.1.0"
__all__ = ["HEIGHT", "WIDTH", "N_CLASSES", "TrainConfig", "__version__"]
