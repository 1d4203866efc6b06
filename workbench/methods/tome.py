"""ToMe — Token Merging (Bolya et al., ICLR 2023) inside the vision encoder's blocks, as facebookresearch/ToMe.

In every block, between attention and MLP: bipartite soft matching on the head-mean keys of that block's
attention merges the `r` most similar token pairs (`ops/merge.py`): size-weighted means, sizes summed, at most
half the tokens per layer. Proportional attention: from the block after the first merge on, every attention
adds log(size) to its logits (`attend`'s additive key bias), so a token standing for k patches attends like k
copies. The decoder gets the merged tokens of each frame with their sizes (its own proportional attention is
the same log(size) key bias, `VisualTokens.attn_key_bias`), at the position of the token they merged into
(ToMe's destination); `owner` keeps the merge sources (which decoder token every patch went into) for the
overlay. Merged tokens are not computed: each block after a merge runs on the shorter sequence.

How much: `r` per layer as ToMe's `model.r` (an int, or a per-layer tuple), shaped by `schedule`
(`constant`; `decreasing` = the paper's (r, −1): 2r at the first block down to 0 at the last; `increasing`);
or a `budget` — tokens per frame leaving the encoder — solved into that shape (`ops/merge.schedule_for_budget`;
when the ≤ 50 % per layer cap makes a budget unreachable, the tokens actually left are what is reported).

Driven through the encoder's duck-typed interface (`embed`, `blocks[i].ln1 / attn.qkv / attn.attend / ln2 /
mlp / hook_out`, `finish`), so any tower presenting it runs ToMe. r = 0 (or budget = N) makes no merge and no
bias: the dense encoder's calls, bit for bit (tested).

    >>> from workbench.models.registry import create_model
    >>> from workbench.data.shapesworld import make_clip
    >>> from workbench.pipeline import describe
    >>> d = describe(create_model("tinyvlm-debug"), make_clip(0, 8), ToMe(ToMeConfig(budget=31)))
    >>> d.method, d.tokens_per_frame  # one encoder block: at most half the tokens merge, 98 is the floor
    ('tome', 98.0)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from workbench.methods.baseline import (BaselineRun, EncoderBaseline, block_costs, mlp_width, owner_in_order,
                                        patch_tokens, qkv, stem_flops)
from workbench.methods.ops.merge import bipartite_soft_matching, follow, merge_index, merge_wavg, parse_r, \
    schedule_for_budget
from workbench.methods.ops.spatial import frame_tokens
from workbench.trace.schema import DECISIONS

SCHEDULES = {"constant": 0.0, "decreasing": -1.0, "increasing": 1.0}


@dataclass(frozen=True)
class ToMeConfig:
    """budget: tokens per frame leaving the encoder (None: use r). r: merges per block (int, or one per block).
    schedule: the shape of r over blocks (constant | decreasing | increasing). prop_attn: log(size) bias."""

    budget: int | None = None
    r: int | tuple[int, ...] = 0
    schedule: str = "constant"
    prop_attn: bool = True

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"ToMe schedule must be one of {tuple(SCHEDULES)}, not {self.schedule!r}")
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"ToMe budget must be ≥ 1 token per frame, not {self.budget}")
        if isinstance(self.r, (list, tuple)):
            object.__setattr__(self, "r", tuple(int(v) for v in self.r))
        if any(v < 0 for v in (self.r if isinstance(self.r, tuple) else (self.r,))):
            raise ValueError(f"ToMe r must be ≥ 0, not {self.r}")

    def per_layer(self, depth: int, n: int) -> list[int]:
        """r of every block (ToMe's parse_r of (r, inflection), or the budget solved into that shape).

            >>> ToMeConfig(r=8, schedule="decreasing").per_layer(4, 196), ToMeConfig(budget=98).per_layer(4, 196)
            ([16, 10, 5, 0], [25, 25, 24, 24])
        """
        if self.budget is not None:
            return schedule_for_budget(n, depth, self.budget, SCHEDULES[self.schedule])
        if isinstance(self.r, tuple):
            return parse_r(depth, list(self.r))
        return parse_r(depth, (self.r, SCHEDULES[self.schedule]))


@dataclass(frozen=True)
class ToMe(EncoderBaseline):
    cfg: ToMeConfig = field(default_factory=ToMeConfig)
    name: str = "tome"


    def work(self, model, frames: torch.Tensor, modality: str) -> BaselineRun:
        """Frames (1, T, C, H, W) → the merged tokens of every frame (all frames as one batch)."""
        enc = model.encoder
        x = enc.embed(frames[0], modality)  # (T, N, D)
        t, _, d = x.shape
        n = patch_tokens(model, x)
        size = torch.ones(t, n, dtype=x.dtype)
        patch = torch.arange(n).expand(t, -1).clone()  # (T, n) position of every current token
        owner = torch.arange(n).expand(t, -1).clone()  # (T, N) current token of every patch
        rs = self.cfg.per_layer(len(enc.blocks), n)
        mlp = mlp_width(model)
        merged = False
        layer_in, layer_out, flops = [], [], stem_flops(model, modality, n)
        for blk, r in zip(enc.blocks, rs):
            cur = x.shape[1]
            q, k, v = qkv(blk, blk.ln1(x), None if merged else torch.arange(cur))  # each (T, h, cur, hd)
            bias = size.log()[:, None, None, :] if merged and self.cfg.prop_attn else None  # (T, 1, 1, cur)
            x = x + blk.attn.attend(q, k, v, bias)
            m = bipartite_soft_matching(k.mean(1), r)  # head-mean keys (T, cur, hd)
            if m is not None:
                x, size = merge_wavg(m, x, size)
                patch, owner, merged = merge_index(m, patch), follow(owner, m), True
            x = blk.hook_out(x + blk.mlp(blk.ln2(x)))
            att = block_costs(cur, d, mlp)[0]
            flops += att + (2 * ((cur + 1) // 2) * (cur // 2) * k.shape[-1] if m is not None else 0) \
                + block_costs(x.shape[1], d, mlp)[1]
            layer_in.append(cur)
            layer_out.append(x.shape[1])
        out = enc.finish(x, modality)  # (T, K, D)
        vt, order = frame_tokens(out, patch, size)
        ids = owner_in_order(owner, order, out.shape[1])
        sizes = size.gather(1, owner)  # (T, N) size of the token each patch went into
        codes = torch.where(sizes > 1, DECISIONS["fused"], DECISIONS["kept"]).long()
        rows = lambda v: np.tile(np.asarray(v, np.float64)[:, None], (1, t))  # noqa: E731  (L,) → (L, T)
        return BaselineRun(vt, ids, codes, rows(layer_in), rows(layer_out), np.full(t, float(flops)))

