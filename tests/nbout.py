"""What an executed notebook shows, for the tests that run notebooks."""

from __future__ import annotations

from pathlib import Path

import nbformat


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
