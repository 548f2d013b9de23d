"""Judging a run: inference (a model in, probabilities out), ensembles, post-processing and its tuning
on validation, evaluation on the test split with bootstrap intervals, comparisons of runs, cross-
validation, the reference's numbers, the Kaggle submission, the ``steelnb predict`` command, overlay
pictures, and the ONNX export with its runtime and model card.

Its modules import from this folder and from ``steelnb.data``, ``steelnb.model`` only
(tests/test_imports.py).

- ``inference``: From a checkpoint and image files to mask probabilities: the model-facing half of
  prediction.
- ``ensemble``: Ensembles of trained runs: several checkpoints predicting as one model.
- ``postprocess``: Post-processing of predicted probabilities into masks, and its tuning on
  validation data.
- ``evaluation``: A trained run judged on its held-out test split, with 95% bootstrap intervals.
- ``scoring``: A prediction of labelled images scored image by image: pixel counts per (image,
  class).
- ``tuning``: Post-processing tuned on labelled images: the validation half of judging a run.
- ``summaries``: Counts of a scored prediction summarised, each number with its 95% bootstrap
  interval.
- ``tables``: Result tables rendered for a person: snake_case columns and keys turned into the
  labels a reader sees ("tuned on validation", "gain over all-empty [95% CI]").
- ``stats``: Bootstrap confidence intervals over images for per-image scores.
- ``comparison``: Test-split tables and paired comparisons of runs, for the ablation, evaluation and
  results pages.
- ``classwise``: One run per class, chosen on validation: the per-class choice of a study's runs.
- ``crossval``: Cross-validation on a small labelled set: every image judged once, out of fold.
- ``reference``: The reference project's reported numbers, and the runs of ours most like them, side
  by side.
- ``submission``: The Kaggle submission file.
- ``predict_run``: A prediction run: a checkpoint (or an ensemble of several) over a folder of
  images to a Kaggle submission, an evaluation against labels when given, and overlay pictures.
- ``viz``: Pictures people can read: defect outlines over the steel image, truth above prediction.
- ``exported``: An exported model: an ONNX graph and the metadata file beside it, run through
  onnxruntime.
- ``modelcard``: The model card of an export: ``model.md`` beside ``model.onnx``, written from its
  metadata.
- ``export``: ``steelnb export RUN [RUN ...]``: trained runs and their tuned post-processing as one
  ONNX graph, its metadata file and a model card, for a machine without steelnb.
"""

__all__ = [
    "inference",
    "ensemble",
    "postprocess",
    "evaluation",
    "scoring",
    "tuning",
    "summaries",
    "tables",
    "stats",
    "comparison",
    "classwise",
    "crossval",
    "reference",
    "submission",
    "predict_run",
    "viz",
    "exported",
    "modelcard",
    "export",
]
