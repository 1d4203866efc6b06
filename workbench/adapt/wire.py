"""The wire format between device and cloud: safetensors bytes whose JSON metadata carries the payload's kind,
its fields and a SHA-256 checksum over both. Never pickles: safetensors is a JSON header + raw tensor bytes, and
the header is parsed as JSON before any tensor is read.

Two payload kinds:
- `sample` (uplink): one uploaded sample's kept tokens — `pixels` uint8 (K, C·p·p), `patch` uint8/int16 (K,),
  `t_start` / `t_end` uint8 (K,) — and {sample_id, device, round, num_frames, grid, patch_size, confidence}.
  Tokens that are not sent are absent from the payload (its length is the uplink's byte count).
- `delta` (downlink): the codec's tensors (`dwc.encode_delta`) with {round, codec, layout, base_hash,
  new_hash}: the device applies it only onto weights whose hash is `base_hash` and only if the result hashes
  to `new_hash`.

Every decoding problem — not safetensors, truncated, oversized, wrong kind, checksum mismatch, bad shapes or
values — raises `WireError` (an `InputError`) with a clear message.

    >>> import torch
    >>> data = encode("sample", {"x": torch.arange(3, dtype=torch.uint8)}, {"sample_id": "a"})
    >>> tensors, meta = decode(data, "sample")
    >>> meta["sample_id"], tensors["x"].tolist()
    ('a', [0, 1, 2])
    >>> bad = bytearray(data); bad[-1] ^= 1
    >>> decode(bytes(bad), "sample")
    Traceback (most recent call last):
    ...
    workbench.adapt.wire.WireError: sample payload: checksum mismatch (the payload was altered or corrupted)
"""
from __future__ import annotations

import hashlib
import json

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from workbench.adapt.tokens import TokenSet
from workbench.errors import InputError

VERSION = 1
KINDS = ("sample", "delta")
MAX_PAYLOAD_BYTES = 32 * 1024 * 1024
MAX_HEADER_BYTES = 1024 * 1024


class WireError(InputError):
    """A payload that cannot be used (malformed, truncated, oversized, altered, inconsistent)."""

    def __init__(self, what: str, reason: str):
        super().__init__(f"{what} payload", reason)


def checksum(kind: str, meta: dict, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the kind, the canonical JSON of `meta` and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    h.update(f"{kind}/{VERSION}\n".encode())
    h.update(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"\n{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def encode(kind: str, tensors: dict[str, torch.Tensor], meta: dict) -> bytes:
    """Serialise a payload (tensors made contiguous CPU; meta must be JSON-serialisable)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    wb = {"kind": kind, "version": VERSION, "meta": json.dumps(meta, sort_keys=True),
          "sha256": checksum(kind, meta, tensors)}
    return st_save(tensors, metadata={f"wb.{k}": str(v) for k, v in wb.items()})


def _header(data: bytes, kind: str) -> dict:
    if len(data) < 8:
        raise WireError(kind, f"{len(data)} bytes is too short to be a safetensors payload")
    n = int.from_bytes(data[:8], "little")
    if n > MAX_HEADER_BYTES or 8 + n > len(data):
        raise WireError(kind, f"truncated or malformed: the header claims {n} bytes, {len(data) - 8} follow")
    try:
        header = json.loads(data[8: 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireError(kind, f"the header is not JSON ({e})") from e
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise WireError(kind, "the header has no metadata")
    return header["__metadata__"]


def decode(data: bytes, kind: str, max_bytes: int = MAX_PAYLOAD_BYTES) -> tuple[dict[str, torch.Tensor], dict]:
    """Parse and verify a payload of `kind` → (tensors, meta). WireError on any problem."""
    if len(data) > max_bytes:
        raise WireError(kind, f"{len(data)} bytes exceed the limit of {max_bytes}")
    wb = _header(data, kind)
    if wb.get("wb.kind") != kind:
        raise WireError(kind, f"wrong payload kind {wb.get('wb.kind')!r} (want {kind!r})")
    if wb.get("wb.version") != str(VERSION):
        raise WireError(kind, f"unsupported version {wb.get('wb.version')!r} (this build speaks {VERSION})")
    try:
        meta = json.loads(wb["wb.meta"])
        tensors = st_load(bytes(data))
    except (KeyError, json.JSONDecodeError, SafetensorError, ValueError, RuntimeError) as e:
        raise WireError(kind, f"truncated or malformed ({type(e).__name__}: {e})") from e
    if not isinstance(meta, dict) or checksum(kind, meta, tensors) != wb.get("wb.sha256"):
        raise WireError(kind, "checksum mismatch (the payload was altered or corrupted)")
    return tensors, meta


# ---- uplink: one sample's kept tokens -------------------------------------------------------------------

def sample_payload(tokens: TokenSet, meta: dict) -> bytes:
    """The uplink bytes of a TokenSet (only its tokens: whatever was dropped is not in it).

        >>> from workbench.data.shapesworld import make_clip
        >>> from workbench.adapt.tokens import tokens_from_clip
        >>> ts = tokens_from_clip(make_clip(0), 0.1)
        >>> back = parse_sample(sample_payload(ts, {"confidence": 0.1}))
        >>> torch.equal(back.pixels, ts.pixels), back.meta["confidence"]
        (True, 0.1)
    """
    n = tokens.grid * tokens.grid
    tensors = {"pixels": tokens.pixels.to(torch.uint8),
               "patch": tokens.patch.to(torch.uint8 if n <= 256 else torch.int16),
               "t_start": tokens.t_start.to(torch.uint8), "t_end": tokens.t_end.to(torch.uint8)}
    full = {**meta, "sample_id": tokens.sample_id, "num_frames": tokens.num_frames, "grid": tokens.grid,
            "patch_size": tokens.patch_size, "channels": tokens.channels}
    return encode("sample", tensors, full)


def parse_sample(data: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> TokenSet:
    """Verify an uplink payload → TokenSet (meta in `.meta`). WireError on inconsistent fields."""
    tensors, meta = decode(data, "sample", max_bytes)
    try:
        t, g, p, c = (int(meta[k]) for k in ("num_frames", "grid", "patch_size", "channels"))
        sid = str(meta["sample_id"])
        pix, patch, t0, t1 = (tensors[k] for k in ("pixels", "patch", "t_start", "t_end"))
    except (KeyError, TypeError, ValueError) as e:
        raise WireError("sample", f"missing or bad field ({e})") from e
    k = pix.shape[0] if pix.dim() == 2 else -1
    problems = []
    if not (1 <= t <= 64 and 1 <= g <= 64 and 1 <= p <= 32 and c in (2, 3)):
        problems.append(f"implausible geometry T={t} grid={g} patch={p} C={c}")
    elif pix.dtype != torch.uint8 or pix.dim() != 2 or pix.shape[1] != c * p * p or k < 1:
        problems.append(f"pixels must be uint8 (K ≥ 1, {c * p * p}), got {pix.dtype} {tuple(pix.shape)}")
    elif any(x.dim() != 1 or x.shape[0] != k for x in (patch, t0, t1)):
        problems.append("patch / t_start / t_end must have one entry per token")
    else:
        patch, t0, t1 = patch.long(), t0.long(), t1.long()
        if int(patch.min()) < 0 or int(patch.max()) >= g * g:
            problems.append("a patch index is outside the grid")
        if bool((t0 > t1).any()) or int(t1.max()) >= t:
            problems.append("a run's frames are outside the clip")
    if problems:
        raise WireError("sample", "; ".join(problems))
    rest = {k2: v for k2, v in meta.items() if k2 not in ("num_frames", "grid", "patch_size", "channels", "sample_id")}
    return TokenSet(pix, patch, t0, t1, t, c, p, g, sid, rest)


def state_hash(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a weight dict (names, dtypes, shapes, bytes; order-independent) — 'hash before / after'.

        >>> state_hash({"w": torch.zeros(2)}) == state_hash({"w": torch.zeros(2)}) != state_hash({"w": torch.ones(2)})
        True
    """
    return checksum("state", {}, {k: v.detach().cpu() for k, v in tensors.items()})[:32]
