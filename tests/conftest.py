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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny-model tests on one torch thread (restored after): on a loaded 2-core machine two
    spinning threads make a 32-wide block ~100× slower."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
