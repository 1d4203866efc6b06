"""Named model presets: `create_model(name)` returns a ready TinyVLM (or, for `hf:NAME_OR_PATH`, a Hugging Face
VLM behind the same protocol: `models/hf/`).

The shipped weights live in the repository's `data/weights/` (override with WORKBENCH_WEIGHTS_DIR).

    >>> m = create_model("tinyvlm-debug")
    >>> m.cfg.enc_depth
    1
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import CheckpointError
from workbench.models.config import TinyVLMConfig
from workbench.models.io import load_checkpoint
from workbench.models.tinyvlm import TinyVLM

REPO_ROOT = Path(__file__).resolve().parents[2]


def weights_dir() -> Path:
    return Path(os.environ.get("WORKBENCH_WEIGHTS_DIR", REPO_ROOT / "data" / "weights"))


@dataclass(frozen=True)
class ModelSpec:
    description: str
    file: str | None = None  # shipped weights under weights_dir()
    config: TinyVLMConfig | None = None  # random-init preset (no weights)


def _debug_config() -> TinyVLMConfig:
    from workbench.data.gestures import GESTURE_CLASSES
    from workbench.training.vocab import build_vocabulary
    return TinyVLMConfig(enc_dim=32, enc_depth=1, enc_heads=2, dec_dim=32, dec_depth=1, dec_heads=2,
                         vocab=build_vocabulary(), gesture_classes=tuple(GESTURE_CLASSES), name="tinyvlm-debug")


MODELS: dict[str, ModelSpec] = {
    "tinyvlm-shapes": ModelSpec("reference TinyVLM, stage 1 (compression-aware pre-training) on ShapesWorld "
                                "captions + synthetic DVS gestures", file="tinyvlm-shapes.safetensors"),
    "tinyvlm-shapes-sttf": ModelSpec("tinyvlm-shapes fine-tuned with STTF in the loop (stage 2); learned gate "
                                     "thresholds in its metadata", file="tinyvlm-shapes-sttf.safetensors"),
    "tinyvlm-debug": ModelSpec("tiny randomly initialised TinyVLM for tests (1 block each side)"),
}


def list_models() -> dict[str, str]:
    out = {name: spec.description for name, spec in MODELS.items()}
    out["hf:NAME_OR_PATH"] = ("a Hugging Face VLM (LLaVA-1.5, Qwen2-VL, LLaVA-OneVision) from a save_pretrained "
                              "folder or the local Hugging Face cache (offline)")
    return out


def model_path(name: str) -> Path:
    spec = MODELS.get(name)
    if spec is None or spec.file is None:
        raise CheckpointError(f"model {name!r} has no shipped weights; known: {sorted(MODELS)}")
    return weights_dir() / spec.file


def create_model(name: str = "tinyvlm-shapes") -> TinyVLM:
    """A named preset (shipped weights or random init), in eval mode; a path to a .safetensors file; or
    `hf:NAME_OR_PATH`, a Hugging Face VLM from a save_pretrained folder or the local HF cache
    (`models/hf/loading.py`: LLaVA-1.5, Qwen2-VL, LLaVA-OneVision)."""
    if name.startswith("hf:"):
        from workbench.models.hf.loading import load_hf
        return load_hf(name)
    if name.endswith(".safetensors") or os.sep in name:
        return load_checkpoint(name)
    if name not in MODELS:
        raise CheckpointError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    if name == "tinyvlm-debug":
        import torch
        torch.manual_seed(0)
        return TinyVLM(_debug_config()).eval()
    path = model_path(name)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights for {name!r} are missing; run `workbench train` to rebuild them")
    return load_checkpoint(path)
