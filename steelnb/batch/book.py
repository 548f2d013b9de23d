"""The report: a Jupyter Book 1.x built offline from the executed notebooks in ``book/runs``.

The table of contents is generated at build time (``book/_build/_toc.yml``) from the last
plan's runs (``status.json``), so several runs of one notebook each get a page and a title;
benchmark results (``bench/results/*.json``) become tables on the performance page.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from ..data.errors import SteelnbError
from ..data.fileio import DiskFullError, free_space, human_size, write_text
from ..data.locks import hold
from .benchmarks import bench_markdown
from .notebook import TITLES
from .status import read_status

CAPTIONS = {
    "01": "Data",
    "02": "Data",
    "03": "Training runs",
    "04": "Comparisons",
    "05": "Evaluation",
    "06": "Results",
    "07": "The winners' recipe",
    "08": "The winners' recipe",
    "09": "Real steel (34 labelled Severstal images)",
}


#: notebooks that are a study of their own (on other data, or plans/seeds.yaml's own runs in
#: weights/seeds): their page stays in the report after another plan ran, where an earlier plan's
#: runs of the shared notebooks would be stale
STANDALONE = ("09_real_sample", "04_loss_ablation__seeds", "08_recipe__seeds", "06_results__seeds")


class BookError(SteelnbError):
    """The Jupyter Book build reported errors; the message quotes them."""


def write_toc(book_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the table of contents for the runs in ``book_dir/runs`` (the last plan's order).

    Static pages first (intro) and last (performance, reproduce); each executed notebook is
    a chapter under a caption by its number, with a title that tells runs of one notebook apart.
    A standalone study's page (``STANDALONE``) is kept when it was run, whichever plan ran last.
    """
    book_dir = Path(book_dir)
    runs_dir = book_dir / "runs"
    status = read_status(runs_dir)
    slugs = [s for s in status.get("order", []) if (runs_dir / f"{s}.ipynb").is_file()]
    if not slugs:
        slugs = sorted(q.stem for q in runs_dir.glob("*.ipynb"))
    slugs += [s for s in STANDALONE if s not in slugs and (runs_dir / f"{s}.ipynb").is_file()]
    parts: list[dict[str, Any]] = []
    for slug in sorted(slugs, key=lambda s: (s[:2], slugs.index(s))):
        caption = CAPTIONS.get(slug[:2], "Notebooks")
        if not parts or parts[-1]["caption"] != caption:
            parts.append({"caption": caption, "chapters": []})
        rec = status.get("runs", {}).get(slug, {})
        title = rec.get("title") or TITLES.get(slug.split("__")[0], slug)
        parts[-1]["chapters"].append({"file": f"runs/{slug}", "title": title})
    notes = [{"file": n} for n in ("performance", "reproduce") if (book_dir / f"{n}.md").is_file()]
    if notes:
        parts.append({"caption": "Notes", "chapters": notes})
    toc = {"format": "jb-book", "root": "intro", "parts": parts}
    out = Path(out) if out else book_dir / "_build" / "_toc.yml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(toc, sort_keys=False))
    return out


def colab_install_markdown() -> str:
    """The Colab section's first cell for the reproduce page, with the repository address from the
    package metadata (``[project.urls]`` in pyproject.toml, set once)."""
    from .notebook import colab_install_line

    return (
        "```\n"
        f"{colab_install_line()}     # the project's repository, from its package metadata\n"
        "!kaggle competitions download -c severstal-steel-defect-detection\n"
        "!mkdir -p data/severstal && unzip -q severstal-steel-defect-detection.zip -d data/severstal\n"
        "```\n"
    )


def build_book(book_dir: str | Path = "book") -> Path:
    """Build the report with ``jupyter-book build`` (offline, no execution); return index.html.

    Raises ``BookError`` quoting the build's error lines when it fails or reports errors.
    """
    book_dir = Path(book_dir).resolve()
    if not (book_dir / "_config.yml").is_file():
        raise BookError(f"{book_dir}: no _config.yml; expected the Jupyter Book sources (book/)")
    with hold(book_dir / "runs", "steelnb book"):  # held already when a plan builds its book
        return _build(book_dir)


def _build(book_dir: Path) -> Path:
    toc = write_toc(book_dir)
    bench = bench_markdown(book_dir.parent / "bench" / "results")
    write_text(
        book_dir / "_build" / "bench_results.md",
        bench or "No benchmark results yet: run the commands below, then `steelnb book`.\n",
    )
    write_text(book_dir / "_build" / "colab_install.md", colab_install_markdown())
    cmd = [
        sys.executable,
        "-c",
        "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
        "build",
        str(book_dir),
        "--toc",
        str(toc),
    ]
    env = {**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    log = proc.stdout + proc.stderr
    index = book_dir / "_build" / "html" / "index.html"
    if "No space left on device" in log or "Disk quota exceeded" in log:
        raise _no_room(book_dir, index)
    write_text(book_dir / "_build" / "build.log", log)
    errors = [
        ln for ln in log.splitlines() if "ERROR" in ln or "CRITICAL" in ln or ln.startswith("Traceback")
    ]
    if proc.returncode != 0 or errors or not index.is_file():
        shown = "\n".join(errors[:20]) or log[-2000:]
        raise BookError(
            f"jupyter-book build {book_dir} failed (exit {proc.returncode}); "
            f"full log in {book_dir / '_build' / 'build.log'}:\n{shown}"
        )
    return index


def _no_room(book_dir: Path, index: Path) -> DiskFullError:
    """The error of a build the disk stopped: free space and an estimate of what the book needs
    (its pages embed the executed notebooks' outputs, Sphinx keeps a second copy in its doctrees,
    the theme's files take a few MB)."""
    runs = sum(p.stat().st_size for p in (book_dir / "runs").glob("*.ipynb"))
    needed = 2 * runs + 20 * 2**20
    return DiskFullError(
        f"{index}: no room to build the book: {human_size(free_space(index.parent))} free on "
        f"{book_dir / '_build'}, it needs about {human_size(needed)} (twice the executed notebooks' "
        f"{human_size(runs)}, and 20 MB for the theme); the executed runs and status.json are intact, "
        "the pages may be partly from this build: free space there and run steelnb book again"
    )
