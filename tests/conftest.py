"""Shared fixtures. Real files live beside the checkout in ../shared/data/real (never copied into the repo)."""
from __future__ import annotations

from pathlib import Path

import pytest

import workbench  # noqa: F401  (sets the offline environment before anything imports gradio)

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Path to ../shared/data/real; skips the test with a clear reason when the folder is absent."""
    if not REAL.is_dir():
        pytest.skip(f"real data folder {REAL} is missing (it sits beside the checkout on the project machines)")
    return REAL
