"""Shared fixtures: the real Severstal files beside the checkout, and small CPU settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub in a test

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real Severstal labels and images); skip when absent (a user's clone)."""
    if not (SHARED_DATA / "severstal-labels").is_dir():
        pytest.skip(f"real Severstal data not found at {SHARED_DATA} (only on the project's machines)")
    return SHARED_DATA
