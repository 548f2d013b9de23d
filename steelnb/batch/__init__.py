"""Batches and the book: the notebooks' shared setup, plans run through papermill here or as Slurm
jobs, their record (status.json) and estimated time, Ctrl-C handling, benchmarks, the report's
summaries and the Jupyter Book.

Its modules import from this folder and from ``steelnb.data``, ``steelnb.model``, ``steelnb.judge``,
``steelnb.winners`` only (tests/test_imports.py).

- ``notebook``: What the notebooks share: their titles, and the setup their first code cell runs.
- ``status``: The batch's record, ``book/runs/status.json``: which runs the last plan had, in what
  order, and how each ended.
- ``report``: Summaries for the notebooks and the book: run tables from the runs' metrics, curves,
  bars.
- ``interrupts``: Ctrl-C and SIGTERM during a batch: stop cleanly, say what was stopped.
- ``pipeline``: Batch runs: execute the notebooks of a plan with papermill, then build the Jupyter
  Book.
- ``estimate``: What a plan costs before it starts: its time on this device from measured parts.
- ``slurm``: Plan runs as Slurm jobs through submitit: ``steelnb run PLAN --executor slurm``.
- ``benchmarks``: The benchmarks of the performance page: running a plan's ``bench/*.py`` scripts,
  the one schema their results are written in (``bench/results/*.json``), and the page's tables.
- ``book``: The report: a Jupyter Book 1.x built offline from the executed notebooks in
  ``book/runs``.
"""

__all__ = [
    "notebook",
    "status",
    "report",
    "interrupts",
    "pipeline",
    "estimate",
    "slurm",
    "benchmarks",
    "book",
]
