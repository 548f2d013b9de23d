"""Headless Chromium for the tests that open the report and JupyterLab (test_book, test_user_paths)."""

from __future__ import annotations

#: headless Chromium on a machine with no network: no sandbox as root, no GPU, and none of the
#: background connections it would otherwise keep trying
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
