"""steelnb: segmentation of the four Severstal steel-defect classes.

A flat package, one concept per module, in data-flow order:

- data: ``config``, ``rle``, ``images``, ``labels``, ``sampling``, ``synthetic``, ``twin``, ``eda``,
  ``contrast``, ``dataset``
- models: ``models``, ``losses``, ``metrics``, ``training``, ``provenance``
- judging: ``inference`` (model in, probabilities out), ``ensemble``, ``postprocess``,
  ``evaluation``, ``stats``, ``comparison``, ``reference``, ``submission``, ``predict_run`` (the ``steelnb
  predict`` command), ``viz``
- the winners' recipe: ``pseudo`` (pseudo-labels), ``recipe`` (steps measured against a run)
- batch and report: ``notebook``, ``status``, ``report``, ``pipeline``, ``slurm`` (stages as Slurm
  jobs), ``benchmarks``, ``estimate`` (a plan's time from measured parts), ``book``, ``cli``

Imports point one way (``tests/test_imports.py``). Import the module you need, e.g.
``from steelnb import rle``.
"""

from .config import HEIGHT, N_CLASSES, WIDTH, TrainConfig

__version__ = "0.1.0"
__all__ = ["HEIGHT", "WIDTH", "N_CLASSES", "TrainConfig", "__version__"]
