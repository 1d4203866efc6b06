"""Uniform spatial pooling — the other sanity floor: each frame's g × g output grid averaged over rows × cols
cells (`ops/spatial.pool_grid`), as the 2 × 2 pooling video VLMs apply to their vision features.

The cells are the largest rows × cols ≤ budget (the squarest on ties; 98 = 7 × 14, 49 = 7 × 7, 31 → 5 × 6 = 30,
16 = 4 × 4: a prime budget is not a grid, and the tokens actually sent are what is reported). Each pooled token
is the mean of its cell's encoder outputs, has size = the cell's patches (proportional attention in the
decoder) and sits at the patch nearest the cell's centre. The encoder runs densely.

budget = N (cells of one patch) is dense, bit for bit (tested).

    >>> from workbench.models.registry import create_model
    >>> from workbench.data.shapesworld import make_clip
    >>> from workbench.pipeline import describe
    >>> d = describe(create_model("tinyvlm-debug"), make_clip(0, 8), Pool(PoolConfig(budget=31)))
    >>> d.tokens_per_frame, PoolConfig(budget=98).grid(14)
    (30.0, (7, 14))
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from workbench.methods.baseline import BaselineRun, EncoderBaseline, block_costs, mlp_width, stem_flops
from workbench.methods.ops.spatial import cell_centres, frame_tokens, grid_for_budget, pool_grid
from workbench.trace.schema import DECISIONS


@dataclass(frozen=True)
class PoolConfig:
    budget: int = 64

    def __post_init__(self):
        if self.budget < 1:
            raise ValueError(f"pooling budget must be ≥ 1 token per frame, not {self.budget}")

    def grid(self, g: int) -> tuple[int, int]:
        return grid_for_budget(g, self.budget)


@dataclass(frozen=True)
class Pool(EncoderBaseline):
    cfg: PoolConfig = field(default_factory=PoolConfig)
    name: str = "pool"


    def work(self, model, frames: torch.Tensor, modality: str) -> BaselineRun:
        out = model.encode(frames, modality)[0]  # (T, N, D) the dense encoder
        t, n, d = out.shape
        g = int(round(n ** 0.5))
        rows, cols = self.cfg.grid(g)
        cells = pool_grid(g, rows, cols)  # (N,) cell of every patch
        c = rows * cols
        count = torch.zeros(c).index_add_(0, cells, torch.ones(n))  # (C,)
        pooled = out.new_zeros(t, c, d).index_add_(1, cells, out) / count[None, :, None]  # (T, C, D)
        centre = cell_centres(g, cells, c)
        vt, _ = frame_tokens(pooled, centre.expand(t, -1), count.expand(t, -1))
        owner = cells[None] + torch.arange(t)[:, None] * c  # centres are row-major, so cell order = token order
        codes = torch.where(count[cells] > 1, DECISIONS["fused"], DECISIONS["kept"]).expand(t, -1).clone()
        layers = len(model.encoder.blocks)
        mlp = mlp_width(model)
        flops = stem_flops(model, modality, n) + layers * sum(block_costs(n, d, mlp))
        rows_in = np.full((layers, t), float(n))
        return BaselineRun(vt, owner, codes.long(), rows_in, rows_in.copy(), np.full(t, float(flops)))

