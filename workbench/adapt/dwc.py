"""DWC — dynamic weight-update compression on the downlink (METHODS.md §5.3).

The cloud sends ΔW = W_trained − W_device of the trained tensors, each encoded by one codec:

| codec | what is sent per tensor of n entries | bytes |
|---|---|---|
| `fp32` | the dense delta | 4n |
| `fp16` | the dense delta in half precision | 2n |
| `nf4` | NF4 codes, blocks of 64, fp16 absmax per block (QLoRA's format, our CPU code) | ⌈n/64⌉·(32 + 2) |
| `sign1` | 1-bit sign + one fp32 scale mean|Δ| (BitDelta) | ⌈n/8⌉ + 4 |
| `topk` | the top-ρ entries by |Δ| (*proposal*): positions (bitmask or 16/32-bit indices, whichever is smaller), b-bit symmetric codes with one fp32 per-tensor scale (b = 16/32: half/float values) | ⌈ρn·b/8⌉ + min(⌈n/8⌉, 2ρn) + 4 |
| `full` | not a delta: the new values of every parameter, fp32 (the send-everything baseline) | 4n |

Both ends know the ordered list of tensor names (from the registered AKD configuration) and their shapes, so
the payload carries a compact layout — per tensor [name index, kept, index kind, bits] — and one concatenated
blob per part and dtype (`pack` / `unpack`), not one safetensors entry per tensor (whose JSON header would
outweigh a sparse update). The device applies W ← W + dequant(ΔŴ) (`full`: W ← value). A zero delta decodes to
exact zeros under every codec, so it leaves the weights bit-identical. `decode_delta` checks every size first
and raises `WireError` before anything is returned (no half updates).

    >>> import torch
    >>> d = {"w": torch.tensor([0.0, 0.5, -2.0, 0.01])}
    >>> blobs, lay = encode_delta(d, CodecConfig("topk", density=0.5, bits=8), ["w"])
    >>> [round(v, 3) for v in decode_delta(blobs, lay, ["w"], {"w": (4,)})["w"].tolist()]
    [0.0, 0.504, -2.0, 0.0]
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from workbench.adapt.router import ROUTER_NAMES
from workbench.adapt.wire import WireError
from workbench.methods.ops import quant

CODECS = ("fp32", "fp16", "nf4", "sign1", "topk", "full")
_INDEX = ("none", "mask", "u16", "u32")


@dataclass(frozen=True)
class CodecConfig:
    """name (see `CODECS`); density ρ and bits b for `topk` (b in 2..8, 16, 32)."""

    name: str = "topk"
    density: float = 0.5
    bits: int = 8

    def __post_init__(self):
        if self.name not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}, not {self.name!r}")
        if self.name == "topk" and (not 0.0 < self.density <= 1.0 or self.bits not in (*range(2, 9), 16, 32)):
            raise ValueError(f"topk needs density in (0, 1] and bits in 2..8, 16, 32 (got {self.density}, {self.bits})")

    @property
    def label(self) -> str:
        return f"topk ρ={self.density:g} {self.bits}-bit" if self.name == "topk" else self.name


def names_digest(names: list[str]) -> str:
    """A short digest of the agreed name list (both ends check it)."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def part_spec(codec: str, n: int, kept: int = 0, index: str = "none", bits: int = 0) -> list[tuple[str, torch.dtype, int]]:
    """The parts a tensor of n entries is sent as: [(part, dtype, count)], in blob order."""
    if codec in ("fp32", "full"):
        return [("v", torch.float32, n)]
    if codec == "fp16":
        return [("v", torch.float16, n)]
    if codec == "nf4":
        blocks = -(-n // quant.NF4_BLOCK)
        return [("q", torch.uint8, quant.packed_bytes(blocks * quant.NF4_BLOCK, 4)), ("s", torch.float16, blocks)]
    if codec == "sign1":
        return [("q", torch.uint8, quant.packed_bytes(n, 1)), ("s", torch.float32, 1)]
    if codec != "topk":
        raise WireError("delta", f"unknown codec {codec!r}")
    spec = {"none": [], "mask": [("q", torch.uint8, quant.packed_bytes(n, 1))],
            "u16": [("i", torch.int16, kept)], "u32": [("i", torch.int32, kept)]}[index]
    if bits == 32:
        return spec + [("v", torch.float32, kept)]
    if bits == 16:
        return spec + [("v", torch.float16, kept)]
    return spec + [("q", torch.uint8, quant.packed_bytes(kept, bits)), ("s", torch.float32, 1)]


def _encode_one(d: torch.Tensor, cfg: CodecConfig) -> tuple[list[torch.Tensor], int, str, int]:
    """One tensor → (parts in `part_spec` order, kept, index kind, bits)."""
    n = d.numel()
    flat = d.detach().float().reshape(-1)
    if cfg.name in ("fp32", "full"):
        return [flat.clone()], n, "none", 32
    if cfg.name == "fp16":
        return [flat.half()], n, "none", 16
    if cfg.name == "nf4":
        codes, absmax = quant.nf4_quantize(flat)
        return [torch.from_numpy(quant.pack_codes(codes.reshape(-1), 4)), absmax], n, "none", 4
    if cfg.name == "sign1":
        signs, scale = quant.sign_scale(flat)
        return [torch.from_numpy(quant.pack_mask(signs)), scale], n, "none", 1
    nonzero = bool((flat != 0).any())
    k = min(n, max(1, int(round(cfg.density * n)))) if nonzero else 0
    mask = quant.magnitude_mask(flat, k / n if n else 0.0)
    pos = mask.nonzero().reshape(-1)
    cost = {"none": 0 if k == 0 else math.inf, "mask": quant.packed_bytes(n, 1),
            "u16": 2 * k if n <= 1 << 16 else math.inf, "u32": 4 * k}
    index = min(cost, key=cost.get)
    parts = {"none": [], "mask": [torch.from_numpy(quant.pack_mask(mask))],
             "u16": [torch.from_numpy(pos.numpy().astype(np.uint16).view(np.int16))],  # uint16 bits as int16
             "u32": [pos.to(torch.int32)]}[index]
    values = flat[mask]
    if cfg.bits == 32:
        parts.append(values.clone())
    elif cfg.bits == 16:
        parts.append(values.half())
    elif k == 0:
        parts += [torch.zeros(0, dtype=torch.uint8), torch.zeros(1)]
    else:
        codes, scale = quant.quantize_symmetric(values, cfg.bits, group=-1)
        parts += [torch.from_numpy(quant.pack_codes(codes.reshape(-1), cfg.bits)), scale]
    return parts, k, index, cfg.bits


def encode_delta(delta: dict[str, torch.Tensor], cfg: CodecConfig, names: list[str]) -> tuple[dict[str, torch.Tensor], dict]:
    """{name: ΔW} (names ⊆ the agreed `names`) → (blobs, layout {codec, names, tensors: [[i, kept, index, bits]]})."""
    pos = {n: i for i, n in enumerate(names)}
    blobs: dict[str, list[torch.Tensor]] = {}
    rows = []
    for name in sorted(delta, key=lambda n: pos[n]):
        parts, kept, index, bits = _encode_one(delta[name], cfg)
        spec = part_spec(cfg.name, delta[name].numel(), kept, index, bits)
        for (part, dtype, count), t in zip(spec, parts, strict=True):
            assert t.dtype == dtype and t.numel() == count, (name, part)
            blobs.setdefault(f"{part}.{str(dtype).split('.')[-1]}", []).append(t.reshape(-1))
        rows.append([pos[name], kept, _INDEX.index(index), bits])
    layout = {"codec": cfg.name, "names": names_digest(names), "tensors": rows}
    return {k: torch.cat(v) for k, v in blobs.items()}, layout


def decode_delta(blobs: dict[str, torch.Tensor], layout: dict, names: list[str],
                 shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """(blobs, layout) → {name: ΔŴ float32}, sizes checked against the agreed names and shapes first; WireError on
    any inconsistency (nothing partial is returned)."""
    try:
        codec, digest, rows = layout["codec"], layout["names"], layout["tensors"]
        rows = [(int(i), int(k), _INDEX[int(x)], int(b)) for i, k, x, b in rows]
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise WireError("delta", f"bad layout ({type(e).__name__}: {e})") from e
    if digest != names_digest(names):
        raise WireError("delta", "the update names other tensors than this device's model has")
    offsets = {k: 0 for k in blobs}
    pieces = []
    for i, kept, index, bits in rows:
        if not 0 <= i < len(names):
            raise WireError("delta", f"tensor index {i} out of range")
        shape = tuple(shapes[names[i]])
        n = int(np.prod(shape)) if shape else 1
        if not 0 <= kept <= n:
            raise WireError("delta", f"{names[i]}: kept {kept} of {n} entries")
        parts = {}
        for part, dtype, count in part_spec(codec, n, kept, index, bits):
            key = f"{part}.{str(dtype).split('.')[-1]}"
            blob = blobs.get(key)
            if blob is None or blob.dtype != dtype or blob.dim() != 1 or offsets[key] + count > blob.numel():
                raise WireError("delta", f"{names[i]}: the payload is missing part {key} ({count} entries)")
            parts.setdefault(part, []).append(blob[offsets[key]: offsets[key] + count])
            offsets[key] += count
        pieces.append((names[i], shape, n, kept, index, bits, parts))
    if any(offsets[k] != blobs[k].numel() for k in blobs):
        raise WireError("delta", "the payload has bytes no tensor of the layout accounts for")
    return {name: _decode_one(codec, shape, n, kept, index, bits, parts)
            for name, shape, n, kept, index, bits, parts in pieces}


def _decode_one(codec, shape, n, kept, index, bits, parts) -> torch.Tensor:
    if codec in ("fp32", "fp16", "full"):
        return parts["v"][0].float().clone().view(shape)
    if codec == "nf4":
        blocks = -(-n // quant.NF4_BLOCK)
        codes = quant.unpack_codes(parts["q"][0], 4, blocks * quant.NF4_BLOCK)
        return quant.nf4_dequantize(codes, parts["s"][0], shape)
    if codec == "sign1":
        return quant.sign_unscale(quant.unpack_mask(parts["q"][0], (n,)), parts["s"][0], shape)
    if index == "mask":
        mask = quant.unpack_mask(parts["q"].pop(0), (n,))
        if int(mask.sum()) != kept:
            raise WireError("delta", f"the index keeps {int(mask.sum())} entries, the layout says {kept}")
        pos = mask.nonzero().reshape(-1)
    elif index in ("u16", "u32"):
        raw = parts["i"][0]
        pos = torch.from_numpy(raw.numpy().view(np.uint16).astype(np.int64)) if index == "u16" else raw.long()
        if kept and (int(pos.min()) < 0 or int(pos.max()) >= n or bool((pos[1:] <= pos[:-1]).any())):
            raise WireError("delta", "indices out of range or not increasing")
    else:
        pos = torch.zeros(0, dtype=torch.long)
    if bits >= 16:
        values = parts["v"][0].float()
    elif kept == 0:
        values = torch.zeros(0)
    else:
        codes = quant.unpack_codes(parts["q"][0], bits, kept)
        values = quant.dequantize_symmetric(codes.view(1, -1), parts["s"][0], bits, (kept,), group=-1)
    out = torch.zeros(n)
    out[pos] = values
    return out.view(shape)


def layout_summary(layout: dict, names: list[str], shapes: dict[str, tuple[int, ...]]) -> list[dict]:
    """Per tensor: name, entries, kept fraction, bits sent per entry (for the per-layer figure)."""
    out = []
    for i, kept, x, bits in layout["tensors"]:
        name = names[int(i)]
        n = int(np.prod(shapes[name])) if shapes[name] else 1
        sent = sum(count * torch.empty(0, dtype=dt).element_size()
                   for _, dt, count in part_spec(layout["codec"], n, int(kept), _INDEX[int(x)], int(bits)))
        out.append({"tensor": name, "entries": n, "kept": int(kept) / n, "bits_per_entry": 8.0 * sent / n})
    return out


ROUTER_PART = "router.float32"


def apply_update(blobs: dict[str, torch.Tensor], meta: dict, names: list[str],
                 current: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A decoded downlink (`wire.decode`'s tensors and meta) against the `current` weights → {name: new value} of
    every tensor it changes: W + ΔŴ (codec `full`: the values themselves) for the agreed `names`, and the domain
    router's values when the update carries them (part `router`, fp32, `router.ROUTER_NAMES` order). Sizes are
    checked before anything is returned; WireError otherwise."""
    blobs = dict(blobs)
    router = blobs.pop(ROUTER_PART, None)
    if bool(meta.get("router")) != (router is not None):
        raise WireError("delta", "the router part and the update's description disagree")
    try:
        layout = meta["layout"]
    except (KeyError, TypeError) as e:
        raise WireError("delta", "the update has no layout") from e
    shapes = {n: tuple(current[n].shape) for n in names}
    delta = decode_delta(blobs, layout, names, shapes)
    replace = layout["codec"] == "full"
    new = {n: (d if replace else current[n] + d) for n, d in delta.items()}
    if router is not None:
        sizes = [current[n].numel() for n in ROUTER_NAMES]
        if router.dtype != torch.float32 or router.dim() != 1 or router.numel() != sum(sizes):
            raise WireError("delta", f"the router part holds {router.numel()} values, not {sum(sizes)}")
        for name, part in zip(ROUTER_NAMES, torch.split(router, sizes), strict=True):
            new[name] = part.clone().view(current[name].shape)
    return new
