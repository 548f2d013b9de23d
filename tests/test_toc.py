"""The report's table of contents: the last plan's runs in its order, one caption per notebook
number, titles that tell runs of one notebook apart, and the notes pages last."""

from __future__ import annotations

from pathlib import Path

import yaml

from steelnb.batch.book import write_toc
from steelnb.batch.status import write_status


def _book(tmp_path: Path, slugs: list[str]) -> Path:
    book = tmp_path / "book"
    (book / "runs").mkdir(parents=True)
    for slug in slugs:
        (book / "runs" / f"{slug}.ipynb").write_text("{}")
    for note in ("performance", "reproduce"):
        (book / f"{note}.md").write_text(f"# {note}\n")
    return book


def test_toc_follows_the_plan_with_run_titles(tmp_path: Path) -> None:
    slugs = ["02_class_balance", "03_train__resnet50", "03_train__efficientnet-b3", "06_results", "01_eda"]
    book = _book(tmp_path, [*slugs, "03_train__old"])  # an earlier plan's run stays out
    runs = {s: {"slug": s, "title": f"title of {s}"} for s in slugs[1:3]}
    write_status(book / "runs", {"plan": "p", "order": slugs, "runs": runs})
    toc = yaml.safe_load(write_toc(book).read_text())
    assert toc["root"] == "intro"
    parts = [(p["caption"], [c.get("title") or c["file"] for c in p["chapters"]]) for p in toc["parts"]]
    assert parts == [
        ("Data", ["The data", "Class balance"]),  # by notebook number, then the plan's order
        ("Training runs", ["title of 03_train__resnet50", "title of 03_train__efficientnet-b3"]),
        ("Results", ["Results"]),
        ("Notes", ["performance", "reproduce"]),
    ]
    assert toc["parts"][1]["chapters"][0]["file"] == "runs/03_train__resnet50"


def test_toc_without_a_status_file_lists_every_executed_notebook(tmp_path: Path) -> None:
    book = _book(tmp_path, ["05_evaluate", "01_eda"])
    (book / "reproduce.md").unlink()
    toc = yaml.safe_load(write_toc(book, out=tmp_path / "toc.yml").read_text())
    files = [c["file"] for p in toc["parts"] for c in p["chapters"]]
    assert files == ["runs/01_eda", "runs/05_evaluate", "performance"]


def test_the_real_sample_page_stays_when_another_plan_ran_last(tmp_path: Path) -> None:
    book = _book(tmp_path, ["02_class_balance", "09_real_sample"])
    write_status(book / "runs", {"plan": "smoke", "order": ["02_class_balance"], "runs": {}})
    toc = yaml.safe_load(write_toc(book).read_text())
    captions = [p["caption"] for p in toc["parts"]]
    assert captions == ["Data", "Real steel (34 labelled Severstal images)", "Notes"]
    (book / "runs" / "09_real_sample.ipynb").unlink()  # not run: no page
    toc = yaml.safe_load(write_toc(book).read_text())
    assert [p["caption"] for p in toc["parts"]] == ["Data", "Notes"]
