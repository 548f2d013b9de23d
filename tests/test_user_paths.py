"""The README's paths, taken as their users take them: the notebooks run in order with their
defaults in a fresh copy of the repository (as "Run All" in JupyterLab does), JupyterLab opened in
a real browser, and the Colab install line taken from the package metadata."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from browser import CHROMIUM_FLAGS
from nbout import outputs

from steelnb.batch import book, notebook

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.stem for p in (REPO / "notebooks").glob("0[1-6]_*.ipynb"))
#: screenshots and executed notebooks of these tests, kept for a person to look at
OUTPUT = Path(os.environ.get("STEELNB_TEST_OUTPUT", REPO / "test-output"))


def _code(nb: Path) -> str:
    cells = json.loads(nb.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


# --- Colab and the network: static checks -------------------------------------------------------


def test_no_notebook_decides_the_network() -> None:
    """HF_HUB_OFFLINE belongs to tests, CI and `steelnb run --offline`; a notebook a Colab user opens
    online must let an ImageNet request through."""
    setting = [p.name for p in (REPO / "notebooks").glob("*.ipynb") if "HF_HUB_OFFLINE" in _code(p)]
    assert not setting, f"notebooks that set HF_HUB_OFFLINE: {setting}"


def test_repository_url_is_set_once_and_used_everywhere() -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    assert notebook.repository_url() == declared, "reinstall (pip install -e .): the metadata is stale"
    assert notebook.colab_install_line() == f'!pip install "git+{declared}"'
    assert f'!pip install "git+{declared}"' in book.colab_install_markdown()
    readme = (REPO / "README.md").read_text()
    assert f'!pip install "git+{declared}"' in readme, "the README's Colab line differs from pyproject.toml"
    reproduce = (REPO / "book" / "reproduce.md").read_text()
    assert "_build/colab_install.md" in reproduce, "the Colab section no longer includes the generated line"
    texts = [readme, reproduce, *(_code(p) for p in (REPO / "notebooks").glob("*.ipynb"))]
    texts += [p.read_text() for p in (REPO / "book").glob("*.md")]
    assert not [t for t in texts if "<org>" in t or "this repository's URL" in t], "a placeholder is left"


def test_version_names_the_repository() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "steelnb.cli", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == f"steelnb {__import__('steelnb').__version__} ({notebook.repository_url()})"


# --- JupyterLab in a real browser ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_jupyterlab_opens_a_notebook_with_its_kernel_ready(tmp_path: Path) -> None:
    """`cd notebooks && jupyter lab`, as the README says: the lab serves, 03_train opens in headless
    Chromium with every cell rendered, the kernel reaches Idle, and its first code cell (the
    imports of steelnb) runs there. The screenshot is saved under test-output/."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    sync_playwright, PlaywrightTimeout = playwright.sync_playwright, playwright.TimeoutError
    name = "03_train.ipynb"
    n_cells = len(json.loads((REPO / "notebooks" / name).read_text())["cells"])
    port, token = _free_port(), "steelnb-test"
    env = {  # the lab's settings, runtime files and workspaces stay in tmp_path
        **os.environ,
        **{f"JUPYTER_{k}_DIR": str(tmp_path / k.lower()) for k in ("CONFIG", "RUNTIME", "DATA")},
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
    }
    log = tmp_path / "lab.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", "--allow-root", "--LabApp.news_url="],  # fmt: skip
        cwd=REPO / "notebooks", env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not serve:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        OUTPUT.mkdir(parents=True, exist_ok=True)
        shot = OUTPUT / "jupyterlab-03_train.png"
        with sync_playwright() as p:
            chrome = p.chromium.launch(executable_path=browser, args=CHROMIUM_FLAGS)
            page = chrome.new_page(viewport={"width": 1400, "height": 900})
            try:
                page.goto(f"{base}/lab/tree/{name}?token={token}")
                page.wait_for_function(
                    "n => document.querySelectorAll('.jp-NotebookPanel .jp-Cell').length === n",
                    arg=n_cells,
                    timeout=120_000,
                )
                # the kernel's name and state are read in one check in the page: read apart, the
                # lab's own start-up requests can turn "Idle" to "Busy" in between (CI saw it)
                idle = "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')].some(e => /Python 3 \\(ipykernel\\)\\s*\\|\\s*Idle/.test(e.textContent))"
                try:
                    page.wait_for_function(idle, timeout=120_000)
                except PlaywrightTimeout:
                    status = " ".join(page.locator(".jp-StatusBar-TextItem").all_inner_texts())
                    pytest.fail(
                        f"the Python 3 (ipykernel) kernel never showed Idle; the status bar: {status}"
                    )
                # run the first code cell (the notebook's imports) in the lab's kernel
                page.locator(".jp-NotebookPanel .jp-CodeCell").first.click()
                page.keyboard.press("Escape")
                page.keyboard.press("Shift+Enter")
                page.wait_for_function(
                    "() => /\\[1\\]/.test(document.querySelector('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt').textContent)",
                    timeout=180_000,
                )
                page.wait_for_function(idle, timeout=180_000)
                errors = page.locator(".jp-NotebookPanel .jp-CodeCell").first.locator(
                    ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
                )
                tracebacks = [t for t in errors.all_inner_texts() if "Error" in t]
                assert not tracebacks, tracebacks
            finally:
                page.screenshot(path=str(shot))
                chrome.close()
        kernels = json.load(urllib.request.urlopen(f"{base}/api/kernels?token={token}", timeout=10))
        assert [k["execution_state"] for k in kernels] == ["idle"], kernels
        assert shot.stat().st_size > 10_000, f"{shot}: an empty screenshot"
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


# --- the notebooks in order, with their defaults, as a person runs them -------------------------


def _fresh_copy(dest: Path) -> Path:
    """The repository as a clone gives it: what git tracks plus new files it does not ignore (no
    data set, no runs, no built book)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=False
    )
    if listed.returncode != 0:  # not a git work tree (an unpacked archive): leave out what runs generate
        generated = shutil.ignore_patterns(
            ".git",
            ".venv",
            ".*_cache",
            ".benchmarks",
            "test-output",
            "_build",
            "runs",
            "results",
            "*.egg-info",
            "__pycache__",
        )
        shutil.copytree(REPO, dest, ignore=generated)
        for folder in ("data", "weights"):
            for p in (dest / folder).iterdir():
                if p.name != "README.md":
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        return dest
    for rel in filter(None, listed.stdout.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _run_all(copy: Path, name: str, label: str) -> str:
    """Execute notebooks/<name>.ipynb in copy/notebooks with its defaults and save it in place, as
    "Run All" then "Save" does; return the text of its outputs. A copy of the executed notebook
    is kept under test-output/ for a person to read."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = copy / "notebooks" / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    kept = OUTPUT / "in-order" / label
    kept.mkdir(parents=True, exist_ok=True)
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(
            f"{label}: {name} failed with its defaults (executed copy: {kept / path.name}):\n{str(e)[-3000:]}"
        )
    finally:
        nbformat.write(nb, path)
        nbformat.write(nb, kept / path.name)
    return outputs(path)[0]


def _smoke_plan(copy: Path) -> Path:
    """plans/smoke.yaml with its training cut to two batches per run, evaluated without TTA at half
    size, and no benchmarks: the same stages, run folders, sizes and names as `steelnb run smoke`
    (what the notebooks then find in weights/smoke/), in a few minutes instead of ten. The
    recipe's runs (07, the gate and pseudo-label trainings, 08) are left out: they write apart, in
    weights/smoke-variants, and the notebook batch of tests/notebooks runs them. Of the training
    runs it keeps one of each kind the notebooks then meet (B4 Dice+BCE from scratch, comparable
    with 03's default run; Lite0 from ImageNet, another encoder and start, with two losses for the
    smoke's 04) and leaves out the others (ResNet-50, B3, Lite0 from scratch, two more losses,
    classification first): each of those cost a kernel, an import and an evaluation of 308 images,
    about a minute of a core."""
    import yaml

    plan = yaml.safe_load((copy / "plans" / "smoke.yaml").read_text())
    plan["name"] = "smoke"
    plan["defaults"].update(
        epochs=1, limit_train_batches=2, limit_val_batches=2, eval_tta="none", tune_height=32, tune_width=224
    )
    plan["benchmarks"] = []
    recipe = {"07_pseudo_labels", "08_recipe", "03_train__gate", "03_train__pseudo"}
    kinds = {
        "03_train__efficientnet-b3_dice_bce",
        "03_train__lite0_scratch_dice_bce",
        "03_train__lite0_cls_stage",
    }
    left_out = recipe | kinds | {"03_train__lite0_cls_first"}
    for stage in plan["stages"]:
        stage["runs"] = [
            r
            for r in stage["runs"]
            if r["notebook"] not in left_out
            and r.get("name") not in left_out
            and (r.get("parameters") or {}).get("encoder") != "resnet50"
        ]
        for run in stage["runs"]:
            if run.get("name") == "03_train__lite0_imagenet_{loss}":
                run["matrix"] = {"loss": ["tversky"]}
            if run["notebook"] == "06_results":  # its pairs name runs left out above
                run["parameters"].pop("pairs", None)
        for run in stage["runs"]:  # 05 without TTA too: the test checks what the notebooks say, not scores
            if run["notebook"] == "05_evaluate":
                run["parameters"]["tta"] = "none"
    plan["stages"] = [stage for stage in plan["stages"] if stage["runs"]]
    _wait_only_for_kept_runs(plan)
    out = copy / "plans" / "smoke-short.yaml"
    out.write_text(yaml.safe_dump(plan, sort_keys=False))
    return out


def _wait_only_for_kept_runs(plan: dict) -> None:
    """A run's `after` keeps the runs the shortened plan still has (a plan naming a run it lacks is
    refused, test_pipeline): each entry's name, or its template for each value of its matrix."""
    kept = set()
    for stage in plan["stages"]:
        for run in stage["runs"]:
            name = run.get("name") or run["notebook"]
            ((key, values),) = (run.get("matrix") or {"_": [None]}).items()
            kept |= {name.format(**{key: value}) for value in values}
    for stage in plan["stages"]:
        for run in stage["runs"]:
            if "after" in run:
                run["after"] = [name for name in run["after"] if name in kept]


@pytest.mark.slow
def test_notebooks_in_order_with_defaults_then_again_beside_the_smoke_runs(tmp_path: Path) -> None:
    """A fresh copy of the repository; 01 to 06 in order with their defaults from notebooks/; then
    the smoke plan fills weights/smoke/ with runs of other encoders and losses, and beside them
    come a run of another size and one stopped before its evaluation; then 01, 02, 04, 05 and 06
    once more, with the first pass's data, run folder and saved outputs in place among all those
    (not 03: a second "Run All" of it retrains into the same folder). Every notebook finishes, and
    the summaries say which runs they left out and why."""
    copy = _fresh_copy(tmp_path / "steelnb")
    shown = {name: _run_all(copy, name, "first") for name in NOTEBOOKS}
    runs = sorted(p.parent.name for p in (copy / "weights").glob("*/metrics.json"))
    assert len(runs) == 1, f"first: 03_train's default run folder under weights/: {runs}"
    assert "no training runs" not in shown["06_results"]
    smoke = subprocess.run(
        [sys.executable, "-m", "steelnb.cli", "run", str(_smoke_plan(copy)), "--no-book"],
        cwd=copy,
        capture_output=True,
        text=True,
    )
    assert smoke.returncode == 0, smoke.stdout[-3000:] + smoke.stderr[-3000:]
    # beside them, as a user's folder fills: a run of another size, and one stopped before its evaluation
    args = (
        "train --data-dir data/synthetic --subset subset_study.csv --folds folds.csv --encoder resnet50 "
        "--height 32 --width 192 --max-images 8 --epochs 1 --limit-train-batches 2 --limit-val-batches 1 "
        "--out-dir weights --no-progress-bar"
    ).split()
    for name, extra in (("resnet50__dice_bce__32x192", []), ("stopped", ["--no-evaluate"])):
        train = subprocess.run(
            [sys.executable, "-m", "steelnb.cli", *args, "--run-name", name, *extra],
            cwd=copy,
            capture_output=True,
            text=True,
        )
        assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    found = sorted(
        p.parent.relative_to(copy / "weights").as_posix() for p in (copy / "weights").rglob("metrics.json")
    )
    default = "efficientnet-b4__dice_bce__64x416"
    assert default in found and f"smoke/{default}" in found and len(found) == 6, (
        found
    )  # 03 default, 32x192, stopped, and the shortened smoke's three runs
    # the second pass leaves out 03: its defaults name the same folder by construction
    # (TrainConfig.name, test_config), so training it again cost two minutes and checked nothing more
    shown = {name: _run_all(copy, name, "second") for name in NOTEBOOKS if name != "03_train"}
    again = sorted(
        p.parent.relative_to(copy / "weights").as_posix() for p in (copy / "weights").rglob("metrics.json")
    )
    assert again == found, f"second: a notebook wrote another run folder: {again}"
    # 04 compares one run per loss: of the two comparable B4 Dice+BCE runs it keeps the newer and says so
    assert "left out of the comparison" in shown["04_loss_ablation"]
    assert "an older run with the loss dice_bce" in shown["04_loss_ablation"], shown["04_loss_ablation"]
    for name in ("04_loss_ablation", "05_evaluate", "06_results"):
        assert "left out of the" in shown[name], f"{name} does not say which runs it left out"
    # 05 chooses among the comparable runs and names the two it left out, with the reason
    assert "chosen on validation" in shown["05_evaluate"]
    assert "resnet50__dice_bce__32x192" in shown["05_evaluate"] and "32x192" in shown["05_evaluate"]
    assert "stopped" in shown["05_evaluate"] and "no test-split evaluation" in shown["05_evaluate"]
    # 06 tells 03's default run from the smoke plan's run of the same name
    assert f"smoke/{default}" in shown["06_results"]
    assert re.search(f"(?<!smoke/){default}", shown["06_results"]), "06 lists only the smoke runs"
