"""The model protocol: everything a method or the pipeline may touch on a model, implemented by TinyVLM
(`models/tinyvlm.py`) and by `HFVLM` over unmodified Hugging Face VLMs (`models/hf/`). Methods are written
against these names only; no method imports TinyVLM or a transformers class.

Encoder side (STTF's partial encoding, `methods/ops/partial.py`): `model.encoder` is a `VisionTower` — the patch
embedding, the blocks with split q/k/v and attention (so R changed queries attend over cached keys/values), the
final map — and `model.cfg.num_patches` / `max_frames` are the patch grid and the frame limit. Two members are
optional and only HF towers have them: `embed_at` (a tower whose recomputed rows need more than stem + position:
CLIP's pre-LayerNorm, the processor's normalisation) and `attn.indexed` (RoPE towers: Qwen2-VL's `qkv(x, idx)`
needs the rows' positions).

Decoder side (SparseVLM, FastV, random): `model.decoder.blocks` (its depth fixes the pruning depths) and
`model.generate(vt, prompt, max_new_tokens, pruner=method, count=...)`, which applies `pruner.plan(depth)`
through the `decoder_protocol` contract (PruneView → Selection): `models/decoding.py` for TinyVLM,
`models/hf/driver.py` (forward pre-hooks) for HF decoders.

Pipeline: `model.cfg` (name, caption_prompt, gesture_classes, to_json), `model.eval()`, `model.encode(frames, m)`
(the dense baseline); optional `model.input_frames(clip)` (frames at the tower's own resolution; TinyVLM takes
the clip's frames as they are) and `Generation.visual_tokens` (tokens that entered the language model when the
tower's tokens are not the LM's: Qwen2-VL merges 2×2 patches, OneVision pools).

    >>> from workbench.models.registry import create_model
    >>> m = create_model("tinyvlm-debug")
    >>> isinstance(m.encoder, VisionTower), isinstance(m, VLM)
    (True, True)
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Attention(Protocol):
    def qkv(self, x: torch.Tensor, *idx) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, R, D) → q, k, v each (B, heads, R, head_dim); RoPE towers (`indexed`) take the rows' idx (R,)."""

    def attend(self, q, k, v, *args) -> torch.Tensor:
        """q (B, h, R, hd) over k, v (B, h, N, hd) → (B, R, D) (the output projection included)."""


@runtime_checkable
class Block(Protocol):
    ln1: object
    attn: Attention
    ln2: object
    mlp: object
    hook_out: object  # HookPoint: sees the full-frame (B, N, D) block output


@runtime_checkable
class VisionTower(Protocol):
    patch_size: int
    stems: object  # {modality: module with .in_features}: pixels of a patch → embedding (no position)
    pos_embed: torch.Tensor  # (1, N, D)
    blocks: object  # sequence of Block

    def embed(self, frames: torch.Tensor, modality: str) -> torch.Tensor:
        """(F, C, H, W) → (F, N(+extra), D) every patch embedded (the dense call)."""

    def finish(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Last block's output (F, K, D) → encoder features (a per-token map)."""


@runtime_checkable
class VLM(Protocol):
    cfg: object
    encoder: VisionTower
    decoder: object  # .blocks: the decoder layers

    def encode(self, frames: torch.Tensor, modality: str) -> torch.Tensor:
        """(B, T, C, H, W) → (B, T, N, D) dense encoder features."""

    def generate(self, vt, prompt=None, max_new_tokens: int = 48, pruner=None, count: bool = False, **kw):
        """VisualTokens → Generation (texts, ids, decoder stats); pruner: a decoder-side method."""


def is_hf(model) -> bool:
    """True for a Hugging Face model behind the protocol (`models/hf/vlm.HFVLM`)."""
    return hasattr(model, "input_frames") and hasattr(model, "hf")
