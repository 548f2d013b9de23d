"""Scored run folders for the tests of the summaries: a test_scores.csv and the metrics.json
test block that ``evaluation.summarize`` makes of it, with no training behind them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from steelnb.judge import evaluation
from steelnb.model.runfolder import RunFolder, RunRecord


def scored_run(
    folder: Path,
    found: float,
    images: int = 12,
    first: int = 0,
    false_positive: bool = True,
    n_boot: int = 500,
) -> RunRecord:
    """A run folder whose test scores find ``found`` of each defect (class 3 on half the images),
    its test images numbered from ``first``; with ``false_positive``, 30 wrong class-1 pixels on
    image 1. Returns the run as ``report.read_metrics`` gives it."""
    rows = []
    for i in range(images):
        for c in range(1, 5):
            truth = 100 if (i % 2 == 0 and c == 3) else 0
            tp = int(truth * found)
            fp = 30 if (false_positive and i == 1 and c == 1) else 0
            rows.append((f"{first + i:09x}.jpg", c, tp, fp, truth - tp, tp, fp, truth - tp))
    folder.mkdir(parents=True)
    scores = pd.DataFrame(rows, columns=["ImageId", "ClassId", *evaluation.COUNT_COLUMNS])
    scores.to_csv(folder / evaluation.SCORES_FILE, index=False)
    test = evaluation.summarize(evaluation.counts_of(scores), n_boot=n_boot)
    (folder / "metrics.json").write_text(json.dumps({"run": folder.name, "test": test}))
    return RunRecord(RunFolder(folder), {"run": folder.name, "test": test})
