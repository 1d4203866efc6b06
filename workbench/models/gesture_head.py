"""The gesture head: a small classifier over the visual tokens laid back on the frame × patch grid.

Tokens (dense, fused runs or a subset) → `VisualTokens.to_grid` (B, T, 14·14, D): a fused token fills every
frame of its run, exactly the information the decoder gets → LayerNorm + a linear reduction to `reduce`
channels → average pooling to a coarse `pool` = (time bins, rows, cols) grid → MLP → class logits.

Why a grid and not attention pooling: gestures are small moving limbs (a few percent of the patches on a few
frames). This project's first head pooled all 3 136 tokens with learned queries; the queries started nearly
uniform, the pooled vector was dominated by the static background and the head never left chance (its
gradient towards the informative tokens was ~1e-6). Pooling onto a fixed coarse grid keeps where and when
the motion happened (left vs right arm, clockwise vs counter-clockwise) with no attention to learn.

    >>> import torch
    >>> from workbench.models.visual_tokens import VisualTokens
    >>> head = GridHead(dim=16, grid=14, classes=11)
    >>> head(VisualTokens.dense(torch.randn(2, 6, 196, 16))).shape
    torch.Size([2, 11])
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workbench.models.visual_tokens import VisualTokens


class GridHead(nn.Module):
    def __init__(self, dim: int, grid: int, classes: int, reduce: int = 32, pool: tuple[int, int, int] = (8, 4, 4),
                 hidden: int = 256):
        super().__init__()
        self.grid, self.pool = grid, pool
        self.norm = nn.LayerNorm(dim)
        self.reduce = nn.Linear(dim, reduce)
        flat = reduce * pool[0] * pool[1] * pool[2]
        self.mlp = nn.Sequential(nn.LayerNorm(flat), nn.Linear(flat, hidden), nn.GELU(), nn.Linear(hidden, classes))

    def forward(self, vt: VisualTokens, n_frames: int | None = None) -> torch.Tensor:
        """(B, classes). n_frames defaults to the last frame any token covers + 1."""
        if n_frames is None:
            n_frames = int(vt.t_end.max()) + 1 if vt.num_tokens else 1
        x = vt.to_grid(n_frames, self.grid * self.grid)  # (B, T, N, D)
        b = x.shape[0]
        x = self.reduce(self.norm(x))  # (B, T, N, r)
        x = x.view(b, n_frames, self.grid, self.grid, -1).permute(0, 4, 1, 2, 3)  # (B, r, T, g, g)
        x = F.adaptive_avg_pool3d(x, self.pool).flatten(1)  # (B, r·t·h·w)
        return self.mlp(x)
