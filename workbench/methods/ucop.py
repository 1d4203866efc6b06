"""The unified compression operator C(s, b, ρ) (METHODS.md §3, stage 3 of the edge-VLM pipeline; *proposal*):
a weight-pruning mask s, b-bit weight quantisation and a token budget ρ, applied to a TinyVLM as one method.

- s (`sparsity`): unstructured magnitude pruning of every weight matrix (each `nn.Linear` / `nn.Embedding`
  weight), the `sparsity` fraction of smallest |w| per tensor set to exactly 0; the mask is stored as a bitmask.
- b (`bits`): 32 = fp32 (exact), 16 = fp16, 2..8 = symmetric integer codes of the kept entries with fp32
  scales **per output channel** (one per weight row; `group=0`) or **per block** of `group` consecutive
  weights (`group > 0`). Position embeddings, the sink, norms, biases and running-norm buffers stay fp32
  (≈ 2 % of the parameters).
- ρ (`rho`): the token budget — STTF with the top-k gate on pixel change scores, k = round(ρ·N) recomputed
  patches per frame after a dense frame 0, temporal fusion on (no scene-cut test: sensor noise would fire it);
  ρ = 1 is the dense encoder.

`compress(model, cfg)` gives a `Pocket` — the packed tensors exactly as they are written to disk
(`save_pocket`, safetensors + JSON metadata; what a device downloads) — and `pocket.model()` the device's
runtime TinyVLM (dequantised fp32 weights, pruned entries 0, the budget attached as its method).
`pocket.nbytes` is the size of the compressed weights; `analytic_bytes` predicts it from shapes alone (the
tests check both against the file). At the no-op setting (s = 0, b = 32, ρ = 1) the runtime model is the
dense model bit for bit.

    >>> from workbench.models.registry import create_model
    >>> dense = create_model("tinyvlm-debug")
    >>> p = compress(dense, UCOPConfig(sparsity=0.3, bits=4, rho=0.1))
    >>> p.nbytes < analytic_bytes(dense, UCOPConfig())["total"] / 6, p.model().compression.name
    (True, 'ucop')
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from workbench.errors import CheckpointError
from workbench.methods.ops import quant
from workbench.models.config import TinyVLMConfig
from workbench.models.tinyvlm import TinyVLM
from workbench.pipeline import Dense, attach

FORMAT = "workbench-pocket/1"


@dataclass(frozen=True)
class UCOPConfig:
    """C(s, b, ρ): sparsity s in [0, 1), bits b in {2..8, 16, 32}, group (0 = per output channel, g > 0 =
    blocks of g weights), token budget rho in (0, 1]."""

    sparsity: float = 0.0
    bits: int = 32
    group: int = 0
    rho: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), not {self.sparsity}")
        if self.bits not in (*range(2, 9), 16, 32):
            raise ValueError(f"bits must be 2..8, 16 or 32, not {self.bits}")
        if self.group < 0:
            raise ValueError(f"group must be 0 (per channel) or a block size > 0, not {self.group}")
        if not 0.0 < self.rho <= 1.0:
            raise ValueError(f"rho must be in (0, 1], not {self.rho}")

    @property
    def is_noop(self) -> bool:
        return self.sparsity == 0.0 and self.bits == 32 and self.rho == 1.0


class UCOP:
    """The operator's token side as a method: dense at ρ = 1, else STTF top-k (k = round(ρ·N)) with fusion."""

    name = "ucop"

    def __init__(self, cfg: UCOPConfig, num_patches: int = 196):
        from workbench.methods.sttf import STTF, STTFConfig
        self.cfg = cfg
        self.k = max(1, int(round(cfg.rho * num_patches)))
        self._inner = Dense() if cfg.rho >= 1.0 else STTF(STTFConfig(
            source="pixels", policy="topk", k=self.k, scene_cut=None, schedule="clip"))

    def config(self) -> dict:
        return {**asdict(self.cfg), "k": self.k}

    def visual_tokens(self, model, frames, modality, clip=None, count=False):
        return self._inner.visual_tokens(model, frames, modality, clip, count)


def weight_names(model: TinyVLM) -> list[str]:
    """The tensors the operator prunes and quantises: every nn.Linear / nn.Embedding weight, in state order."""
    names = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))}
    return [k for k in model.state_dict() if k in names]


def _layout(shape, cfg: UCOPConfig) -> dict:
    n = int(np.prod(shape))
    kept = n - int(round(cfg.sparsity * n))
    rows = shape[0] if len(shape) > 1 else 1
    groups = rows if cfg.group == 0 else -(-n // cfg.group)
    return {"shape": list(shape), "kept": kept, "groups": groups}


def analytic_bytes(model: TinyVLM, cfg: UCOPConfig) -> dict[str, int]:
    """Bytes of the compressed weights predicted from shapes alone: per tensor and `total`.

    Compressed matrix: ceil(kept·b/8) codes (kept·4 at 32 bits, kept·2 at 16) + 4 bytes per scale group
    (b ≤ 8) + ceil(n/8) mask bytes (s > 0). Every other tensor: 4 bytes per entry.
    """
    out, compressible = {}, set(weight_names(model))
    for name, t in model.state_dict().items():
        if name not in compressible or (cfg.bits == 32 and cfg.sparsity == 0):
            out[name] = t.numel() * 4
            continue
        lay = _layout(tuple(t.shape), cfg)
        size = lay["kept"] * cfg.bits // 8 if cfg.bits >= 16 else quant.packed_bytes(lay["kept"], cfg.bits)
        size += 4 * lay["groups"] if cfg.bits <= 8 else 0
        size += quant.packed_bytes(t.numel(), 1) if cfg.sparsity > 0 else 0
        out[name] = size
    out["total"] = sum(out.values())
    return out


@dataclass
class Pocket:
    """A compressed TinyVLM: the packed tensors as stored, the layout of each compressed weight, the configs."""

    tensors: dict[str, torch.Tensor]
    layout: dict[str, dict]
    model_cfg: TinyVLMConfig
    cfg: UCOPConfig

    @property
    def nbytes(self) -> int:
        """Bytes of the compressed weights (the tensors' payload in the file, without its JSON header)."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The dequantised fp32 state dict (pruned entries exactly 0)."""
        state = {k: v for k, v in self.tensors.items() if ":" not in k}
        for name, lay in self.layout.items():
            state[name] = _decode(self.tensors, name, lay, self.cfg)
        return state

    def model(self) -> TinyVLM:
        """The device's runtime model: dequantised weights, the token budget attached as its method."""
        model = TinyVLM(self.model_cfg)
        try:
            model.load_state_dict(self.state_dict(), strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"pocket weights do not match the config ({e})") from e
        return attach(model.eval(), UCOP(self.cfg, self.model_cfg.num_patches))


def compress(model: TinyVLM, cfg: UCOPConfig) -> Pocket:
    """Apply C(s, b, ρ) to `model`'s weights (the model is not changed)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors, layout = {}, {}
    for name in (weight_names(model) if not (cfg.bits == 32 and cfg.sparsity == 0) else []):
        w = state.pop(name).float()
        lay = _layout(tuple(w.shape), cfg)
        mask = quant.magnitude_mask(w, lay["kept"] / w.numel())  # kept entries
        kept_values = w[mask]  # (kept,) in flat order
        if cfg.sparsity > 0:
            tensors[f"{name}:mask"] = torch.from_numpy(quant.pack_mask(mask))
        if cfg.bits == 32:
            tensors[f"{name}:values"] = kept_values.contiguous()
        elif cfg.bits == 16:
            tensors[f"{name}:values"] = kept_values.half().contiguous()
        else:
            codes, scale = quant.quantize_symmetric(w * mask, cfg.bits, cfg.group)  # (G, g) over the dense layout
            flat = codes.reshape(-1)[: w.numel()][mask.reshape(-1)]  # the kept entries' codes
            tensors[f"{name}:codes"] = torch.from_numpy(quant.pack_codes(flat, cfg.bits))
            tensors[f"{name}:scale"] = scale.contiguous()
        layout[name] = lay
    for name, t in state.items():
        tensors[name] = t.float().contiguous() if t.is_floating_point() else t
    return Pocket(tensors, layout, model.cfg, cfg)


def _decode(tensors: dict, name: str, lay: dict, cfg: UCOPConfig) -> torch.Tensor:
    shape, n = tuple(lay["shape"]), int(np.prod(lay["shape"]))
    mask = (quant.unpack_mask(tensors[f"{name}:mask"], shape) if cfg.sparsity > 0
            else torch.ones(shape, dtype=torch.bool))
    if int(mask.sum()) != lay["kept"]:
        raise CheckpointError(f"{name}: mask keeps {int(mask.sum())} entries, the layout says {lay['kept']}")
    out = torch.zeros(n)
    if cfg.bits >= 16:
        out[mask.reshape(-1)] = tensors[f"{name}:values"].float()
        return out.view(shape)
    levels = (1 << (cfg.bits - 1)) - 1
    codes = torch.full((n,), levels, dtype=torch.long)  # code `levels` = the value 0
    codes[mask.reshape(-1)] = quant.unpack_codes(tensors[f"{name}:codes"], cfg.bits, lay["kept"])
    scale = tensors[f"{name}:scale"]
    pad = scale.numel() * (n // scale.numel() if cfg.group == 0 else cfg.group) - n
    codes = torch.cat([codes, codes.new_full((pad,), levels)]).view(scale.numel(), -1)  # (G, g)
    return quant.dequantize_symmetric(codes, scale, cfg.bits, shape, cfg.group) * mask


def save_pocket(pocket: Pocket, path: str | os.PathLike, info: dict | None = None) -> int:
    """Write the pocket checkpoint (safetensors; config, operator and layout as JSON metadata) atomically;
    returns the file's size in bytes."""
    meta = {"format": FORMAT, "config": pocket.model_cfg.to_json(), "ucop": json.dumps(asdict(pocket.cfg)),
            "layout": json.dumps(pocket.layout, sort_keys=True), "info": json.dumps(info or {}, sort_keys=True)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(pocket.tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path.stat().st_size


def load_pocket(path: str | os.PathLike) -> Pocket:
    """Read a pocket checkpoint (never unpickles); CheckpointError when it is not one."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"{path}: not a pocket checkpoint (format {meta.get('format')!r})")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable pocket checkpoint ({e})") from e
    cfg = UCOPConfig(**json.loads(meta["ucop"]))
    return Pocket(tensors, json.loads(meta["layout"]), TinyVLMConfig.from_json(meta["config"]), cfg)


def header_bytes(path: str | os.PathLike) -> int:
    """Length of a safetensors file's header (8-byte length prefix + JSON), so file size = header + data."""
    with open(path, "rb") as f:
        return 8 + int.from_bytes(f.read(8), "little")


def apply(model: TinyVLM, cfg: UCOPConfig) -> TinyVLM:
    """The compressed runtime model of `model` under C(s, b, ρ) (a new model; `model` is unchanged).

        >>> from workbench.models.registry import create_model
        >>> apply(create_model("tinyvlm-debug"), UCOPConfig(bits=8)).compression.config()["bits"]
        8
    """
    return compress(model, cfg).model()
