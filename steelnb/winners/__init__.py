"""The Kaggle winners' recipe: pseudo-labels from confident predictions, and the recipe's steps, each
measured against a run.

Its modules import from this folder and from ``steelnb.data``, ``steelnb.model``, ``steelnb.judge``
only (tests/test_imports.py).

- ``pseudo``: Pseudo-labels: confident predictions on the unlabelled test images, as extra training
  data.
- ``recipe``: The Kaggle winners' recipe as measured steps of the study.
"""

__all__ = ["pseudo", "recipe"]
