"""`VisualTokens`: the visual tokens handed to the decoder, with where and when each one comes from.

Dense: one token per (frame, patch), size 1. Compressed (STTF fusion, pruning): fewer tokens, each with its
patch index, the first and last frame of the run it stands for, and a `size` (how many dense tokens it
replaces) used for proportional attention (ToMe): a log(size) bias on its attention logits, normalised by the
total size (see `attn_key_bias`).

    >>> import torch
    >>> vt = VisualTokens.dense(torch.zeros(1, 16, 196, 8))
    >>> vt.num_tokens, round(float(vt.attn_key_bias()[0, 0]), 3)  # −log(3136)
    (3136, -8.051)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class VisualTokens:
    embeds: torch.Tensor  # (B, M, D_enc) encoder outputs
    patch: torch.Tensor  # (B, M) long, patch index in the grid
    t_start: torch.Tensor  # (B, M) long, first frame of the run
    t_end: torch.Tensor  # (B, M) long, last frame of the run (inclusive)
    size: torch.Tensor  # (B, M) float, dense tokens this token stands for
    valid: torch.Tensor | None = None  # (B, M) bool; None = all valid (no padding)

    @classmethod
    def dense(cls, enc: torch.Tensor) -> "VisualTokens":
        """(B, T, N, D) encoder tokens → all T·N tokens, frame-major."""
        b, t, n, d = enc.shape
        frame = torch.arange(t).repeat_interleave(n).expand(b, -1)  # (B, T·N)
        patch = torch.arange(n).repeat(t).expand(b, -1)
        return cls(enc.reshape(b, t * n, d), patch, frame, frame, torch.ones(b, t * n), None)

    @classmethod
    def empty(cls, batch: int, dim: int) -> "VisualTokens":
        """No visual tokens at all (text-only language-model steps)."""
        z = torch.zeros(batch, 0, dtype=torch.long)
        return cls(torch.zeros(batch, 0, dim), z, z, z, torch.zeros(batch, 0), None)

    @property
    def num_tokens(self) -> int:
        return int(self.embeds.shape[1])

    def counts(self) -> torch.Tensor:
        """Real (non-padding) tokens per sample, (B,)."""
        if self.valid is None:
            return torch.full((self.embeds.shape[0],), self.embeds.shape[1])
        return self.valid.sum(1)

    def attn_key_bias(self) -> torch.Tensor:
        """(B, M) additive bias for these tokens as attention keys: log(size) − log(Σ size), −inf on padding.

        log(size) is proportional attention (a token standing for k identical ones attends like k copies).
        −log(Σ size) gives the whole visual block the prior attention mass of one token, whatever the number
        of frames or the compression (Σ size is the number of dense tokens represented, so dense and
        compressed sets get the same normalisation). Without it thousands of near-uniformly attended visual
        tokens out-vote every other key, the decoder uses them as its attention sink, and training drives the
        encoder to constant outputs (observed in this project's first runs).
        """
        size = self.size.clamp_min(1e-6)
        valid = torch.ones_like(size, dtype=torch.bool) if self.valid is None else self.valid
        total = (size * valid).sum(1, keepdim=True).clamp_min(1.0)  # (B, 1)
        bias = size.log() - total.log()
        return bias.masked_fill(~valid, float("-inf"))

    def to_grid(self, n_frames: int, n_patches: int) -> torch.Tensor:
        """Back to the dense layout (B, T, N, D): every token fills each frame of its run at its patch (a fused
        token stands for its whole run; a reused patch holds its cached output). Slots no token covers (dropped
        tokens) are zero. Differentiable in `embeds`.

            >>> vt = VisualTokens.dense(torch.arange(8.).view(1, 2, 2, 2))
            >>> torch.equal(vt.to_grid(2, 2), torch.arange(8.).view(1, 2, 2, 2))
            True
        """
        b, m, d = self.embeds.shape
        frames = torch.arange(n_frames)
        cover = (self.t_start[..., None] <= frames) & (frames <= self.t_end[..., None])  # (B, M, T)
        if self.valid is not None:
            cover &= self.valid[..., None]
        bi, mi, ti = cover.nonzero(as_tuple=True)  # one entry per (token, frame it covers)
        slot = (bi * n_frames + ti) * n_patches + self.patch[bi, mi]
        grid = self.embeds.new_zeros(b * n_frames * n_patches, d)
        return grid.index_copy(0, slot, self.embeds[bi, mi]).view(b, n_frames, n_patches, d)

    def select(self, index: torch.Tensor) -> "VisualTokens":
        """Keep tokens at `index` (B, K) per sample."""
        g = lambda x: torch.gather(x, 1, index)  # noqa: E731
        emb = torch.gather(self.embeds, 1, index[..., None].expand(-1, -1, self.embeds.shape[-1]))
        return VisualTokens(emb, g(self.patch), g(self.t_start), g(self.t_end), g(self.size),
                            None if self.valid is None else g(self.valid))

    @staticmethod
    def stack(items: list["VisualTokens"]) -> "VisualTokens":
        """Batch single-sample token sets of different lengths, padding to the longest (valid marks real)."""
        m = max(v.num_tokens for v in items)
        d = items[0].embeds.shape[-1]

        def pad(x, fill):
            out = x.new_full((len(items), m) + x.shape[2:], fill)
            return out

        emb, patch = pad(items[0].embeds, 0.0), pad(items[0].patch, 0)
        t0, t1, size = pad(items[0].t_start, 0), pad(items[0].t_end, 0), pad(items[0].size, 1.0)
        valid = torch.zeros(len(items), m, dtype=torch.bool)
        for i, v in enumerate(items):
            k = v.num_tokens
            emb[i, :k], patch[i, :k], t0[i, :k], t1[i, :k], size[i, :k] = v.embeds[0], v.patch[0], v.t_start[0], v.t_end[0], v.size[0]
            valid[i, :k] = True if v.valid is None else v.valid[0]
        assert emb.shape[-1] == d
        return VisualTokens(emb, patch, t0, t1, size, None if bool(valid.all()) else valid)
