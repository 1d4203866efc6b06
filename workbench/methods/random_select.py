"""Random selection — the sanity floor: a seeded uniform subset of `budget` patches per frame reaches the decoder.

`where="output"` (default): the encoder runs densely and a random `budget` of each frame's output tokens go to
the decoder (the floor of every selection method: VisionZip, ToMe, pooling). `where="input"`: the subset is
drawn before the blocks and only it is encoded (attention among the kept patches only; the stem still runs on
every patch) — a floor for encoder FLOPs too, as STTF's gate. Draws: one `torch.Generator` seeded with `seed`,
a fresh permutation per frame, so the same seed gives the same patches for every clip of the same length.

budget = N keeps every patch: dense, bit for bit (tested).

    >>> from workbench.models.registry import create_model
    >>> from workbench.data.shapesworld import make_clip
    >>> from workbench.pipeline import describe
    >>> m, c = create_model("tinyvlm-debug"), make_clip(0, 8)
    >>> a = describe(m, c, RandomSelect(RandomSelectConfig(budget=31, seed=3)))
    >>> b = describe(m, c, RandomSelect(RandomSelectConfig(budget=31, seed=3)))
    >>> a.tokens_per_frame, a.caption == b.caption
    (31.0, True)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from workbench.methods.baseline import (BaselineRun, EncoderBaseline, block_costs, dense_block, mlp_width,
                                        owner_in_order, patch_tokens, qkv, stem_flops)
from workbench.methods.ops.spatial import frame_tokens
from workbench.trace.schema import DECISIONS

WHERE = ("output", "input")


def random_patches(t: int, n: int, k: int, seed: int) -> torch.Tensor:
    """(T, k) sorted patch indices, a seeded uniform draw per frame.

        >>> random_patches(2, 10, 3, 0).shape, torch.equal(random_patches(2, 10, 3, 0), random_patches(2, 10, 3, 0))
        (torch.Size([2, 3]), True)
    """
    g = torch.Generator().manual_seed(int(seed))
    return torch.stack([torch.randperm(n, generator=g)[:k].sort().values for _ in range(t)])


@dataclass(frozen=True)
class RandomSelectConfig:
    budget: int = 64
    seed: int = 0
    where: str = "output"

    def __post_init__(self):
        if self.where not in WHERE:
            raise ValueError(f"random selection happens at one of {WHERE}, not {self.where!r}")
        if self.budget < 1:
            raise ValueError(f"random selection budget must be ≥ 1 token per frame, not {self.budget}")


@dataclass(frozen=True)
class RandomSelect(EncoderBaseline):
    cfg: RandomSelectConfig = field(default_factory=RandomSelectConfig)
    name: str = "random"


    def work(self, model, frames: torch.Tensor, modality: str) -> BaselineRun:
        enc = model.encoder
        x = enc.embed(frames[0], modality)  # (T, N, D)
        t, _, d = x.shape
        n = patch_tokens(model, x)
        kk = min(self.cfg.budget, n)
        mlp = mlp_width(model)
        idx = torch.arange(n).expand(t, -1) if kk == n else random_patches(t, n, kk, self.cfg.seed)  # (T, k)
        pick = lambda z: z if kk == n else z.gather(1, idx[..., None].expand(-1, -1, z.shape[-1]))  # noqa: E731
        inside = self.cfg.where == "input"
        if inside:
            if getattr(enc.blocks[0].attn, "indexed", False) and kk < n:
                qkv(enc.blocks[0], x[:1, :1])  # a RoPE tower: says why this cannot run there
            x = pick(x)  # (T, k, D): only the drawn patches are encoded
        m = x.shape[1]
        for blk in enc.blocks:
            x = dense_block(blk, x)[0]
        out = enc.finish(x, modality)
        if not inside:
            out = pick(out)
        layers = len(enc.blocks)
        flops = stem_flops(model, modality, n) + layers * sum(block_costs(m, d, mlp))
        vt, order = frame_tokens(out, idx, torch.ones(t, kk))
        local = torch.full((t, n), -1, dtype=torch.long).scatter_(1, idx, torch.arange(kk).expand(t, -1))
        codes = torch.full((t, n), DECISIONS["pruned"]).scatter_(1, idx, DECISIONS["kept"])
        rows_in = np.full((layers, t), float(m))
        return BaselineRun(vt, owner_in_order(local, order, kk), codes, rows_in, rows_in.copy(),
                           np.full(t, float(flops)))

