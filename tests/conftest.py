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


@pytest.fixture(scope="session")
def tiny_adapt_files(tmp_path_factory) -> tuple[Path, Path]:
    """(pocket, teacher) checkpoints for cloud-device tests, built from the random-init `tinyvlm-debug`: the
    pocket is C(s=0, b=8, ρ=0.1) of it, the teacher another random TinyVLM of the same config."""
    import torch
    from workbench.methods import ucop
    from workbench.models.io import save_checkpoint
    from workbench.models.registry import create_model
    from workbench.models.tinyvlm import TinyVLM
    root = tmp_path_factory.mktemp("adapt-files")
    base = create_model("tinyvlm-debug")
    ucop.save_pocket(ucop.compress(base, ucop.UCOPConfig(bits=8, rho=0.1)), root / "pocket.safetensors")
    torch.manual_seed(1)
    save_checkpoint(TinyVLM(base.cfg).eval(), root / "teacher.safetensors")
    return root / "pocket.safetensors", root / "teacher.safetensors"


@pytest.fixture(scope="module")
def dashboard_server():
    """The whole dashboard on the random-init debug model on a real Gradio server (loopback), one per test module
    (closed at the module's end: an idle server burns ~10 % of a core)."""
    from workbench.ui.layout import build_demo
    demo = build_demo(model_name="tinyvlm-debug")
    demo.queue(default_concurrency_limit=2).launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield demo
    demo.close()


@pytest.fixture(scope="session")
def hf_tiny_models():
    """Tiny random Hugging Face VLMs of the three supported families behind the model protocol (LLaVA-1.5,
    Qwen2-VL, LLaVA-OneVision; models/hf/tiny.py builds them from configs, as transformers' tests do), once."""
    from workbench.models.hf.tiny import tiny_vlm
    return {f: tiny_vlm(f) for f in ("llava", "qwen2vl", "onevision")}


@pytest.fixture(scope="session")
def hf_folders(tmp_path_factory):
    """The same families written with save_pretrained (model + tokenizer + processor parts) to `my-<family>`."""
    from workbench.models.hf.tiny import save
    root = tmp_path_factory.mktemp("hf")
    return {f: save(f, root / f"my-{f}") for f in ("llava", "qwen2vl", "onevision")}
