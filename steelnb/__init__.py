"""steelnb: segmentation of the four Severstal steel-defect classes.

One subpackage per stage of the flow, in the order the data takes; each imports only from
itself and the ones before it (``tests/test_imports.py`` checks every import, lazy ones too):

- ``steelnb.data``, the data: ``config``, ``errors``, ``fileio``, ``locks``, ``rle``, ``images``,
  ``labels``, ``sampling``, ``synthetic``, ``twin``, ``eda``, ``contrast``, ``dataset``
- ``steelnb.model``, the model and its training: ``pretrained``, ``models``, ``losses``,
  ``metrics``, ``checkpoints``, ``training``, ``provenance``, ``runfiles``, ``runfolder``
- ``steelnb.judge``, judging a run: ``inference``, ``ensemble``, ``postprocess``, ``evaluation``,
  ``scoring``, ``tuning``, ``summaries``, ``tables``, ``stats``, ``comparison``, ``crossval``,
  ``reference``, ``submission``, ``predict_run``, ``viz``, ``exported``, ``modelcard``, ``export``
- ``steelnb.winners``, the Kaggle winners' recipe: ``pseudo``, ``recipe``
- ``steelnb.batch``, batches and the book: ``notebook``, ``status``, ``report``, ``interrupts``,
  ``pipeline``, ``estimate``, ``slurm``, ``benchmarks``, ``book``

At the top, above them all: ``cli`` (the ``steelnb`` command, which imports each stage when its
command runs), ``__main__`` (``python -m steelnb``), and ``config`` and ``training``: the documented
``from steelnb.config import TrainConfig`` and ``from steelnb.training import fit``, which are
``steelnb.data.config`` and ``steelnb.model.training`` under their first names.

Import the module you need from its stage, e.g. ``from steelnb.data import rle``.
"""

from .data.config import HEIGHT, N_CLASSES, WIDTH, TrainConfig

__version__ = "0.1.0"
__all__ = ["HEIGHT", "WIDTH", "N_CLASSES", "TrainConfig", "__version__"]
