"""Summaries for the notebooks and the book: run tables from the runs' metrics, curves, bars.

Everything here reads the files a training run leaves (``weights/<run>/metrics.json``) and the
batch status (``book/runs/status.json``); nothing scrapes notebook outputs. Figures are
``matplotlib.figure.Figure`` objects (they show inline in a notebook when returned last).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..data.errors import SteelnbError
from ..judge import reference
from ..model.runfolder import RunFolderError, RunRecord, read_runs
from . import status

#: The reference project's reported IoU per encoder: a *soft* IoU on probabilities with the four
#: classes merged into one mask, on its own validation split. ResNet-50 ran at 256x1600; the B3
#: value is its results table's (its abstract says 0.54).
REFERENCE = pd.DataFrame(
    list(reference.REFERENCE), columns=["encoder", "mask size", "reference soft IoU (classes merged)"]
)  # the reference's numbers have one home, steelnb.judge.reference
FAILED_COLUMNS = ["run", "encoder", "loss", "mask size", "status"]


class ReportError(SteelnbError):
    """A run folder whose metrics cannot be read; names the file."""


def read_metrics(source: str | Path | Sequence[str | Path]) -> list[RunRecord]:
    """The runs under a folder (recursively), or the given run folders or metrics files
    (``runfolder.read_runs``): ``RunRecord`` s, read like their metrics (``record["test"]``), with
    the run folder beside them (``record.folder``). Sorted by run name; an unreadable metrics file
    raises ``ReportError`` (a ``ValueError``) naming the file."""
    try:
        return read_runs(source)
    except RunFolderError as e:
        raise ReportError(str(e)) from e


def latest_by(
    runs: Sequence[RunRecord], key: str | Sequence[str]
) -> tuple[dict[Any, RunRecord], list[RunRecord]]:
    """One run per value of ``key`` (e.g. "loss"; several keys, e.g. ("loss", "seed"): per tuple of
    their values, a missing one None): the one whose ``metrics.json`` was written last (runs from
    ``read_metrics``; equal times keep the later of ``runs``).

    Returns ({value: its latest run}, the older runs in the order they were superseded)."""

    def value(m: Mapping[str, Any]) -> Any:
        return m[key] if isinstance(key, str) else tuple(m.get(k) for k in key)

    latest: dict[Any, RunRecord] = {}
    older: list[RunRecord] = []
    for m in sorted(runs, key=lambda m: m.folder.metrics_file.stat().st_mtime):
        if value(m) in latest:
            older.append(latest[value(m)])
        latest[value(m)] = m
    return latest, older


def failed_runs(runs_dir: str | Path | None, notebook: str = "03_train") -> pd.DataFrame:
    """Rows for the training runs that failed in the last batch (``status.json``)."""
    if runs_dir is None:
        return pd.DataFrame(columns=FAILED_COLUMNS)
    rows = []
    for rec in status.records(runs_dir, notebook=notebook, state="failed"):
        p = {**rec.get("effective", {}), **rec.get("parameters", {})}
        h, w = p.get("height", "?"), p.get("width", "?")
        name = p.get("run_name") or f"{p.get('encoder')}__{p.get('loss')}__{h}x{w}"
        rows.append(
            {
                "run": name,
                "encoder": p.get("encoder"),
                "loss": p.get("loss"),
                "mask size": f"{h}x{w}",
                "status": f"failed ({rec.get('error', '')[:80]})",
            }
        )
    return pd.DataFrame(rows, columns=FAILED_COLUMNS)


def history_frame(metrics: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per-epoch history of one or several runs as one long table with a ``run`` column."""
    runs = [metrics] if isinstance(metrics, Mapping) else list(metrics)
    frames = [pd.DataFrame(m.get("history") or []).assign(run=m.get("run")) for m in runs]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", "epoch"])


def per_class_frame(
    metrics: Sequence[Mapping[str, Any]], label: str = "run", block: str = "best"
) -> pd.DataFrame:
    """Long table: one row per (run, class) with dice, iou and kaggle of the ``best`` block."""
    rows = []
    for m in metrics:
        pc = (m.get(block) or {}).get("per_class") or {}
        for c in range(len(pc.get("dice", []))):
            rows.append(
                {
                    label: m.get(label),
                    "class": c + 1,
                    **{k: float(v[c]) for k, v in pc.items() if isinstance(v, list) and len(v) > c},
                }
            )
    return pd.DataFrame(rows)


def plot_history(
    metrics: Mapping[str, Any] | Sequence[Mapping[str, Any]], label: str = "run", width_in: float = 12.0
) -> Figure:
    """Training curves, one line per run: loss (train solid, validation dashed), validation
    Dice and Kaggle metric, validation IoU and soft IoU, learning rate per parameter group."""
    runs = [metrics] if isinstance(metrics, Mapping) else list(metrics)
    fig = Figure(figsize=(width_in, width_in * 0.55))
    axes = fig.subplots(2, 2).ravel()
    panels = [
        ("loss", [("train_loss", "-", "train"), ("val_loss", "--", "val")]),
        ("validation Dice / Kaggle metric", [("val_dice", "-", "Dice"), ("val_kaggle", "--", "Kaggle")]),
        ("validation IoU / soft IoU", [("val_iou", "-", "IoU"), ("val_soft_iou", "--", "soft IoU")]),
        ("learning rate", [("lr_encoder", "-", "encoder"), ("lr_decoder", "--", "decoder+head")]),
    ]
    colours = [f"C{i}" for i in range(10)]
    for ax, (title, series) in zip(axes, panels):
        for i, m in enumerate(runs):
            h = pd.DataFrame(m.get("history") or [])
            for key, style, name in series:
                if key in h and h[key].notna().any():
                    tag = name if len(runs) == 1 else f"{m.get(label)} {name}"
                    ax.plot(h["epoch"], h[key], style, marker="o", ms=3, color=colours[i % 10], label=tag)
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if title == "learning rate" and ax.lines:
            ax.set_yscale("log")
        if ax.lines:
            ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def plot_per_class(
    metrics: Sequence[Mapping[str, Any]], metric: str = "dice", label: str = "run", width_in: float = 10.0
) -> Figure:
    """Grouped bars: ``metric`` per class on the validation split at the best epoch, raw (threshold
    0.5, no post-processing), one bar per ``label`` (the mean of runs sharing it, e.g. seeds); the
    title says so, since the test split's per-class numbers are ``comparison.per_class_table``'s."""
    frame = per_class_frame(metrics, label=label)
    fig = Figure(figsize=(width_in, 3.2))
    ax = fig.subplots()
    if len(frame) and metric in frame:
        table = frame.pivot_table(index="class", columns=label, values=metric)
        k = max(len(table.columns), 1)
        for i, col in enumerate(table.columns):
            ax.bar(table.index + (i - (k - 1) / 2) * 0.8 / k, table[col], 0.8 / k, label=str(col))
        ax.set_xticks(table.index, [f"class {c}" for c in table.index])
        ax.legend(fontsize=8, frameon=False, ncol=min(k, 4))
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("validation split, best epoch, raw (threshold 0.5, not post-processed)", fontsize=9)
    fig.tight_layout()
    return fig
