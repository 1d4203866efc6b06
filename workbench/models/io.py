"""Checkpoints: one safetensors file holding the weights and, in its metadata, the config and provenance.

Loading never unpickles anything (safetensors is a flat tensor format + a JSON header).

    >>> import tempfile, os
    >>> from workbench.models.config import TinyVLMConfig
    >>> from workbench.models.tinyvlm import TinyVLM
    >>> m = TinyVLM(TinyVLMConfig(enc_dim=16, dec_dim=16, enc_depth=1, dec_depth=1, vocab=("a",)))
    >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
    >>> save_checkpoint(m, path, {"steps": 0})
    >>> load_checkpoint(path).cfg == m.cfg, read_metadata(path)["steps"]
    (True, 0)
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from workbench.errors import CheckpointError
from workbench.models.config import TinyVLMConfig
from workbench.models.tinyvlm import TinyVLM

FORMAT = "workbench-tinyvlm/1"


def save_checkpoint(model: TinyVLM, path: str | os.PathLike, info: dict | None = None) -> None:
    """Write weights + config + `info` (JSON-serialisable provenance: data, steps, metrics) atomically."""
    write_module(model, model.cfg.to_json(), FORMAT, path, info)


def write_module(module: torch.nn.Module, config_json: str, fmt: str, path: str | os.PathLike,
                 info: dict | None = None) -> None:
    """Write `module`'s weights (on CPU) with {format, config, info} metadata, atomically (temp file + rename).
    Shared by TinyVLM checkpoints and ANC modules."""
    meta = {"format": fmt, "config": config_json, "info": json.dumps(info or {}, sort_keys=True)}
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)


def read_module_metadata(path: str | os.PathLike, fmt: str, what: str, unreadable: str) -> dict:
    """The `info` dict plus `config` (a dict) of a file written by `write_module` in format `fmt`, without
    loading tensors; CheckpointError naming `unreadable` / `what` otherwise."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors {unreadable} ({e})") from e
    if meta.get("format") != fmt:
        raise CheckpointError(f"{path}: not {what} (format {meta.get('format')!r}, want {fmt!r})")
    info = json.loads(meta.get("info", "{}"))
    info["config"] = json.loads(meta["config"])
    return info


def read_metadata(path: str | os.PathLike) -> dict:
    """The checkpoint's `info` dict plus `config` (a dict), without loading tensors."""
    return read_module_metadata(path, FORMAT, "a TinyVLM checkpoint", "checkpoint")


def load_checkpoint(path: str | os.PathLike) -> TinyVLM:
    """Build the model from the checkpoint's config and load its weights (strict: every tensor must match)."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    info = read_metadata(path)
    cfg = TinyVLMConfig.from_json(json.dumps(info["config"]))
    model = TinyVLM(cfg)
    try:
        state = load_file(str(path))
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError) as e:
        raise CheckpointError(f"{path}: weights do not match the config ({e})") from e
    return model.eval()
