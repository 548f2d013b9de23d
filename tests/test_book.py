"""The report: built offline from executed runs; its results page, opened in headless Chromium,
shows a row per run (failed runs marked); no asset is fetched from the network."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import papermill as pm
import pytest
from browser import CHROMIUM_FLAGS

from steelnb.batch import notebook, pipeline

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
RUNS = [
    ("resnet50", "dice_bce", 0.61),
    ("efficientnet-b3", "dice_bce", 0.66),
    ("efficientnet-b4", "tversky", 0.7),
]


def _metrics(encoder: str, loss: str, kaggle: float) -> dict:
    per_class = {"dice": [0.5, 0.4, 0.6, 0.7], "iou": [0.3, 0.2, 0.4, 0.5], "kaggle": [0.8, 0.9, 0.5, 0.7]}
    block = {
        "val_loss": 0.4,
        "dice": 0.55,
        "iou": 0.35,
        "kaggle": kaggle,
        "soft_iou": 0.3,
        "per_class": per_class,
    }
    history = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "val_loss": 1.2 / e,
            "val_dice": 0.1 * e,
            "val_iou": 0.05 * e,
            "val_kaggle": kaggle - 0.1 / e,
            "val_soft_iou": 0.1,
            "lr_encoder": 1e-3,
            "lr_decoder": 1e-2,
        }
        for e in (1, 2, 3)
    ]
    return {
        "run": f"{encoder}__{loss}__64x320",
        "arch": "Unet",
        "encoder": encoder,
        "loss": loss,
        "height": 64,
        "width": 320,
        "epochs_run": 3,
        "best_epoch": 3,
        "best": block,
        "final": block,
        "history": history,
        "wall_time_s": 90.0,
        "peak_gpu_mem_mb": None,
        "train_images_per_s": 4.2,
        "device": "cpu",
        "precision": "32-true",
        "data": {
            "kind": "synthetic",
            "dir": "/data/synthetic",
            "subset": "subset_study.csv",
            "n_train": 30,
            "n_val": 10,
            "n_test": 10,
            "clean_train": 14,
            "clean_val": 5,
            "clean_test": 5,
        },
    }


def _test_scores(kaggle: float) -> pd.DataFrame:
    """Counts for 10 test images x 4 classes: 5 clean images; defects found better as ``kaggle`` grows."""
    rows = []
    for i in range(10):
        for c in range(1, 5):
            truth = 100 if (i < 5 and c == 3) else 0
            tp = int(truth * kaggle)
            fp = 20 if (i == 9 and c == 1) else 0
            rows.append((f"{i:09x}.jpg", c, tp, fp, truth - tp, tp, fp, truth - tp))
    return pd.DataFrame(rows, columns=["ImageId", "ClassId", "tp", "fp", "fn", "tp_raw", "fp_raw", "fn_raw"])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A book with three finished runs and one failed one, and a benchmark result; returns html/."""
    tmp = tmp_path_factory.mktemp("report")
    book, weights = tmp / "book", tmp / "weights"
    (book / "runs").mkdir(parents=True)
    for name in ("_config.yml", "intro.md", "performance.md", "reproduce.md"):
        shutil.copy(REPO / "book" / name, book / name)
    for encoder, loss, kaggle in RUNS:
        run = weights / f"{encoder}__{loss}__64x320"
        run.mkdir(parents=True)
        from steelnb.judge.evaluation import counts_of, summarize

        scores = _test_scores(kaggle)
        scores.to_csv(run / "test_scores.csv", index=False)
        metrics = {
            **_metrics(encoder, loss, kaggle),
            # evaluated as evaluate_run writes it: the post-processed validation score chooses
            "test": {
                **summarize(counts_of(scores), n_boot=200),
                "split": "test",
                "val_tuned_kaggle": kaggle - 0.05,
            },
        }
        (run / "metrics.json").write_text(json.dumps(metrics))
    failed = {
        "slug": "03_train__efficientnet-b4_lovasz",
        "notebook": "03_train",
        "status": "failed",
        "title": "Training: efficientnet-b4, lovasz",
        "error": "RuntimeError: out of memory",
        "parameters": {"encoder": "efficientnet-b4", "loss": "lovasz"},
        "effective": {"height": 64, "width": 320},
    }
    status = {"plan": "test", "order": [failed["slug"], "06_results"], "runs": {failed["slug"]: failed}}
    (book / "runs" / "status.json").write_text(json.dumps(status))
    (tmp / "bench" / "results").mkdir(parents=True)
    (tmp / "bench" / "results" / "train.json").write_text(
        json.dumps([{"setting": "fp32", "images_per_s": 3.5}])
    )
    pm.execute_notebook(
        str(REPO / "notebooks" / "06_results.ipynb"),
        str(book / "runs" / "06_results.ipynb"),
        parameters={"weights_dir": str(weights), "runs_dir": str(book / "runs")},
        cwd=str(REPO / "notebooks"),
        progress_bar=False,
    )
    index = pipeline.build_book(book)
    assert index.name == "index.html"
    return index.parent


def test_book_pages_and_toc(built: Path) -> None:
    for page in ("index", "runs/06_results", "performance", "reproduce"):
        assert (built / f"{page}.html").is_file(), page
    results = (built / "runs" / "06_results.html").read_text()
    assert "efficientnet-b4__tversky__64x320" in results and "failed" in results and "95% CI" in results
    perf = (built / "performance.html").read_text()
    assert "images_per_s" in perf and "3.5" in perf  # the benchmark JSON became a table
    # the Colab section's install line, generated from the package metadata at build time
    reproduce = (built / "reproduce.html").read_text()
    assert f"git+{notebook.repository_url()}" in reproduce and "&lt;org&gt;" not in reproduce
    log = (built.parent / "build.log").read_text()
    assert "ERROR" not in log and "Traceback" not in log


def test_no_network_assets(built: Path) -> None:
    """Offline: every stylesheet and script the pages load is local."""
    for page in built.rglob("*.html"):
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', page.read_text())
        assert not [u for u in remote if "stylesheet" in u or u.endswith((".js", ".css"))], (page, remote)


def test_results_page_in_chromium(built: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    page = (built / "runs" / "06_results.html").as_uri()
    flags = ["--headless", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120
    ).stdout
    text = re.sub(r"<[^>]+>", " ", dom)
    table = dom[dom.index("Held-out test split") :]
    table = table[: table.index("</table>")]
    rows = [
        re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", r)).strip()
        for r in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)
    ]
    body = [r for r in rows if "64x320" in r]
    assert len(body) == 3, rows  # one row per finished run, best test Kaggle metric first
    for encoder, loss, _ in RUNS:
        assert any(
            r.startswith(f"{encoder}__{loss}__64x320 ") and f" {encoder} {loss} 64x320 synthetic" in r
            for r in body
        ), body  # run, its training seed ("–": none given), encoder, loss, size, data
    assert body[0].startswith("efficientnet-b4__tversky") and "30 / 10 / 10" in body[0]
    assert "failed (RuntimeError: out of memory)" in text  # the failed run is listed with its error
    assert "each arm minus the all-empty prediction" in text  # an arm: a run and its seeds
    assert "Results across all runs" in text
    shot = built / "results.png"
    subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=1280,2000", page],
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file() and shot.stat().st_size > 10_000
