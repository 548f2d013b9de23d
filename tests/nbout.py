"""Notebooks for the tests: tiny stand-ins to execute, and what an executed notebook shows."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook


def write_notebook(path: Path, params: str, body: str) -> None:
    """A two-cell notebook at ``path``: ``params`` in the cell tagged ``parameters``, then ``body``."""
    cell = new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[cell, new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def outputs(path: Path) -> tuple[str, int]:
    """All text/html/markdown output of an executed notebook, and its number of PNG outputs."""
    nb = nbformat.read(str(path), as_version=4)
    text, pngs = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text.append(out["text"])
            data = out.get("data", {})
            text += [str(data.get(k, "")) for k in ("text/plain", "text/html", "text/markdown")]
            pngs += "image/png" in data
    return "\n".join(text), pngs
