"""Compression-aware pre-training (stage 1 of the edge-VLM pipeline): the decoder sees the kinds of token sets
the methods will hand it — dense, STTF-style fused runs from a reference-state pixel gate at a random
threshold, and random token subsets — so compressed inputs stay in distribution.

    >>> import torch
    >>> enc = torch.randn(2, 4, 196, 8)
    >>> compress_for_training(enc, "drop", keep=0.25).num_tokens
    196
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from workbench.methods.ops.fusion import fuse_runs
from workbench.methods.ops.gates import patch_pixels, reference_gate
from workbench.models.visual_tokens import VisualTokens

MODES = ("dense", "fuse", "drop")


@dataclass(frozen=True)
class AugmentConfig:
    p_dense: float = 0.10
    p_fuse: float = 0.65
    p_drop: float = 0.25
    tau_log_range: tuple[float, float] = (np.log(0.015), np.log(0.25))  # pixel L1 threshold, log-uniform
    keep_range: tuple[float, float] = (0.08, 0.6)

    def sample(self, rng: np.random.Generator) -> tuple[str, float]:
        """(mode, knob): knob is tau for 'fuse', keep ratio for 'drop'."""
        mode = MODES[int(rng.choice(3, p=np.array([self.p_dense, self.p_fuse, self.p_drop]) /
                                    (self.p_dense + self.p_fuse + self.p_drop)))]
        if mode == "fuse":
            return mode, float(np.exp(rng.uniform(*self.tau_log_range)))
        if mode == "drop":
            return mode, float(rng.uniform(*self.keep_range))
        return mode, 0.0


def training_tokens(encode, frames: torch.Tensor, mode: str, tau: float = 0.05, keep: float = 0.3, patch: int = 8,
                    generator: torch.Generator | None = None) -> tuple[VisualTokens, torch.Tensor, torch.Tensor]:
    """Frames (B, T, C, H, W) → (the token set the decoder trains on, encoder outputs (F, N, D) of the frames
    that were encoded, those frames (F, C, H, W)); `encode` maps (F, C, H, W) → (F, N, D).

    In 'fuse' mode only frames where the gate recomputes at least one patch are encoded (the others' tokens
    are never used), which saves 30–65% of the encoder work at the thresholds used here.
    """
    b, t = frames.shape[:2]
    if mode == "fuse":
        with torch.no_grad():
            gate = reference_gate(patch_pixels(frames, patch), tau)
        needed = gate.mask.any(-1)  # (B, T)
        enc_needed = encode(frames[needed])  # (F_needed, N, D)
        enc = enc_needed.new_zeros(b, t, *enc_needed.shape[1:])
        enc[needed] = enc_needed
        return fuse_runs(enc, gate.mask), enc_needed, frames[needed]
    flat = frames.flatten(0, 1)
    enc_flat = encode(flat)
    return compress_for_training(enc_flat.unflatten(0, (b, t)), mode, keep, generator), enc_flat, flat


def compress_for_training(enc: torch.Tensor, mode: str, keep: float = 0.3,
                          generator: torch.Generator | None = None) -> VisualTokens:
    """Dense encoder tokens (B, T, N, D) → dense or a random subset of `keep` of the tokens."""
    if mode == "dense":
        return VisualTokens.dense(enc)
    if mode == "drop":
        b, t, n, _ = enc.shape
        k = max(1, int(round(keep * t * n)))
        order = _uniform((b, t * n), generator).to(enc.device).argsort(1)[:, :k].sort(1).values  # frame-major order
        return VisualTokens.dense(enc).select(order)
    raise ValueError(f"mode must be one of {MODES}, not {mode!r}")


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    """U(0, 1) drawn on the generator's device (CPU generators give the same draws whatever the model's device)."""
    return torch.rand(shape, generator=generator, device=generator.device if generator is not None else None)
