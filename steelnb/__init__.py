"""steelnb: segmentation of the four Severstal steel-defect classes.

A flat package, one concept per module, in data-flow order:

- data: ``config``, ``rle``, ``images``, ``labels``, ``sampling``, ``synthetic``, ``twin``, ``eda``,
  ``contrast``, ``dataset``
- models: ``runfiles`` (a run folder's file names), ``models``, ``losses``, ``metrics``,
  ``training``, ``provenance``, ``runfolder`` (a run's folder as a type: config, split ids,
  metrics, checkpoints, scores)
- judging: ``inference`` (model in, probabilities out), ``ensemble``, ``postprocess``, ``scoring``
  (per-image counts), ``tuning`` (post-processing on validation), ``stats``, ``summaries`` (the
  test block, the gate, a prediction run's tables), ``evaluation`` (a run or an ensemble judged),
  ``comparison``, ``reference``, ``submission``, ``predict_run`` (the ``steelnb predict``
  command), ``tables`` (result tables with their labels for a reader), ``viz``
- the winners' recipe: ``pseudo`` (pseudo-labels), ``recipe`` (steps measured against a run)
- batch and report: ``notebook``, ``status``, ``report``, ``pipeline``, ``slurm`` (stages as Slurm
  jobs), ``benchmarks``, ``estimate`` (a plan's time from measured parts), ``book``, ``cli``

Imports point one way (``tests/test_imports.py``). Import the module you need, e.g.
``from steelnb import rle``.
"""

from .config import HEIGHT, N_CLASSES, WIDTH, TrainConfig

__version__ = "0.1.0"
__all__ = ["HEIGHT", "WIDTH", "N_CLASSES", "TrainConfig", "__version__"]
