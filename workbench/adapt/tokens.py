"""`TokenSet`: the visual tokens of one sample as they travel from the device to the cloud, and how a model
encodes a set it received.

A token is one STTF run of the device (METHODS.md §1): a patch index, the first and last frame of the run and
the patch's pixels at the run's first frame, as uint8 (C·p·p = 192 bytes for RGB 8×8 patches; the tokens'
only payload). Pixels rather than device encoder outputs, so that the cloud can run *any* model on them — the
teacher's own encoder and the student copy with its adapters (AKD trains the encoder side too).

The cloud rebuilds the frames from the runs (a run's pixels fill every frame it covers; patches no kept token
covers are absent) and encodes each frame that starts a run with its attention restricted to the patches
present in that frame (`encode_tokens`): an absent (not sent) patch is never attended to. The encoder output
of a token is the output at its run's first frame — as the device's STTF computes it, except that here all
present patches are recomputed from their (reused) pixels instead of taken from stale caches.

Training cost: `grad_frames` encodes only that many of the needed frames per sample with autograd (the rest
without), a stochastic but unbiased-in-expectation restriction of the encoder's gradient to a frame subset.

    >>> import torch
    >>> from workbench.data.shapesworld import make_clip
    >>> from workbench.models.registry import create_model
    >>> ts = tokens_from_clip(make_clip(0), rho=0.1)
    >>> ts.num_tokens < 16 * 196, ts.pixels.dtype
    (True, torch.uint8)
    >>> encode_tokens(create_model("tinyvlm-debug"), ts).embeds.shape[1] == ts.num_tokens
    True
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from workbench.data.clip import Clip
from workbench.methods.ops.fusion import run_ends
from workbench.methods.ops.gates import GateRule, patch_pixels, run_gate
from workbench.models.tinyvlm import TinyVLM
from workbench.models.visual_tokens import VisualTokens


@dataclass
class TokenSet:
    """One sample's tokens. pixels (K, C·p·p) uint8; patch, t_start, t_end (K,) long; frame-major order."""

    pixels: torch.Tensor
    patch: torch.Tensor
    t_start: torch.Tensor
    t_end: torch.Tensor
    num_frames: int
    channels: int = 3
    patch_size: int = 8
    grid: int = 14
    sample_id: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return int(self.patch.numel())

    def select(self, keep: torch.Tensor) -> "TokenSet":
        """The tokens where `keep` (K,) bool is True (order kept)."""
        return TokenSet(self.pixels[keep], self.patch[keep], self.t_start[keep], self.t_end[keep],
                        self.num_frames, self.channels, self.patch_size, self.grid, self.sample_id, dict(self.meta))

    def frames(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Rebuilt frames (T, C, H, W) float in [0, 1] and the present mask (T, N) bool: each run's pixels fill
        every frame it covers; patches no token covers are zero and absent."""
        t, n, p, c, g = self.num_frames, self.grid * self.grid, self.patch_size, self.channels, self.grid
        cover = (self.t_start[:, None] <= torch.arange(t)) & (torch.arange(t) <= self.t_end[:, None])  # (K, T)
        ki, ti = cover.nonzero(as_tuple=True)
        grid = torch.zeros(t * n, c * p * p)
        grid[ti * n + self.patch[ki]] = self.pixels[ki].float() / 255.0
        present = torch.zeros(t * n, dtype=torch.bool)
        present[ti * n + self.patch[ki]] = True
        x = grid.view(t, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5)  # (T, gh, gw, C, p, p) → (T, C, gh, p, gw, p)
        return x.reshape(t, c, g * p, g * p), present.view(t, n)


def runs_from_mask(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Recompute mask (T, N) → (patch, t_start, t_end) of every run, frame-major (as `fuse_runs` orders them)."""
    ends = run_ends(mask[None])[0]  # (T, N)
    tt, ii = mask.nonzero(as_tuple=True)
    return ii, tt, ends[tt, ii]


def tokens_from_runs(frames: torch.Tensor, patch: torch.Tensor, t_start: torch.Tensor, t_end: torch.Tensor,
                     patch_size: int = 8, sample_id: str = "", meta: dict | None = None) -> TokenSet:
    """Frames (T, C, H, W) in [0, 1] + runs → the TokenSet (pixels rounded to uint8)."""
    t, c, h, _ = frames.shape
    pix = patch_pixels(frames[None], patch_size)[0]  # (T, N, C·p·p)
    values = torch.round(pix[t_start, patch].clamp(0, 1) * 255).to(torch.uint8)
    return TokenSet(values, patch.long(), t_start.long(), t_end.long(), t, c, patch_size, h // patch_size,
                    sample_id, dict(meta or {}))


def tokens_from_clip(clip: Clip, rho: float = 1.0, patch_size: int = 8) -> TokenSet:
    """A clip's tokens under the STTF top-k gate (k = round(ρ·N) after a dense frame 0; ρ = 1: every
    patch-frame) — the gate the device's operator uses, without running any model."""
    frames = torch.from_numpy(np.ascontiguousarray(clip.frames))
    t, n = frames.shape[0], (frames.shape[-1] // patch_size) ** 2
    if rho >= 1.0:
        mask = torch.ones(t, n, dtype=torch.bool)
    else:
        rule = GateRule("topk", 0.05, max(1, int(round(rho * n))), None, None)
        mask = run_gate(rule, patch_pixels(frames[None], patch_size)).mask[0]
    return tokens_from_runs(frames, *runs_from_mask(mask), patch_size, clip.sample_id)


def tokens_from_visual(clip: Clip, vt: VisualTokens, patch_size: int = 8) -> TokenSet:
    """The TokenSet of a device's visual tokens (batch 1): the pixels behind each run it encoded."""
    frames = torch.from_numpy(np.ascontiguousarray(clip.frames))
    return tokens_from_runs(frames, vt.patch[0], vt.t_start[0], vt.t_end[0], patch_size, clip.sample_id)


def encode_frames(model: TinyVLM, frames: torch.Tensor, present: torch.Tensor, modality: str = "rgb") -> torch.Tensor:
    """Frames (F, C, H, W) + present mask (F, N) → encoder tokens (F, N, D), each frame's attention restricted
    to its present patches (absent keys get −inf); outputs at absent patches are computed but meaningless."""
    enc = model.encoder
    bias = torch.zeros(present.shape[0], 1, 1, present.shape[1], device=frames.device)
    bias.masked_fill_(~present[:, None, None, :], float("-inf"))  # (F, 1, 1, N)
    x = enc.embed(frames, modality)
    for blk in enc.blocks:
        x = blk(x, bias)
    return enc.finish(x, modality)


def encode_tokens(model: TinyVLM, tokens: TokenSet, modality: str = "rgb", grad_frames: int | None = None,
                  generator: torch.Generator | None = None) -> VisualTokens:
    """Encode a received TokenSet with `model`'s encoder → VisualTokens (1, K, D) with the runs' spans and sizes.

    grad_frames: None = autograd as the caller set it; k = only k randomly chosen frames (per `generator`) of
    those that start a run are encoded with autograd, the rest under no_grad.
    """
    frames, present = tokens.frames()
    needed = torch.unique(tokens.t_start)  # frames that start at least one run
    dev = model.device
    order = torch.arange(len(needed))
    if grad_frames is not None and grad_frames < len(needed):
        order = torch.randperm(len(needed), generator=generator)
    with_grad = order[: len(needed) if grad_frames is None else grad_frames]
    out = torch.zeros(len(needed), present.shape[1], model.encoder.norm.normalized_shape[0], device=dev)
    parts = []
    for sel, grad in ((with_grad, True), (order[len(with_grad):], False)):
        if len(sel):
            f = needed[sel]
            with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
                parts.append((sel, encode_frames(model, frames[f].to(dev), present[f].to(dev), modality)))
    for sel, x in parts:
        out = out.index_copy(0, sel.to(dev), x)
    row = torch.searchsorted(needed, tokens.t_start)  # which encoded frame each token comes from
    embeds = out[row.to(dev), tokens.patch.to(dev)]  # (K, D)
    size = (tokens.t_end - tokens.t_start + 1).float()
    return VisualTokens(embeds[None], tokens.patch[None].to(dev), tokens.t_start[None].to(dev),
                        tokens.t_end[None].to(dev), size[None].to(dev), None)
