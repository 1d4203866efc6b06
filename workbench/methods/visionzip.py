"""VisionZip-style selection (Yang et al., CVPR 2025): dominant tokens by the attention they receive, plus a few
contextual tokens merged from the rest — at the vision encoder's output, per frame.

The encoder runs densely (VisionZip saves the language model's work, not the tower's). In its last block, the
attention every token receives — summed over heads and queries, the variant the release uses for towers
without a CLS token — ranks the tokens; the top `budget − contextual` are kept as they are (dominant). Of the
leftover tokens, `contextual` uniformly spaced ones become targets, every other leftover joins the target
whose key (head-mean, last block) it is most similar to, and each group is averaged into one contextual token
with size = its members (`ops/spatial.contextual_merge`; the release adds the target to the mean of the others).
Default split: 10 contextual of every 64 (the release's 54 + 10). The attention probabilities are computed
beside the block's own fused attention from the same q, k (counted as the method's FLOPs).

budget = N (no contextual tokens) keeps every token: dense, bit for bit (tested).

    >>> from workbench.models.registry import create_model
    >>> from workbench.data.shapesworld import make_clip
    >>> from workbench.pipeline import describe
    >>> d = describe(create_model("tinyvlm-debug"), make_clip(0, 8), VisionZip(VisionZipConfig(budget=31)))
    >>> d.tokens_per_frame, VisionZipConfig(budget=64).split(196)
    (31.0, (54, 10))
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from workbench.methods.baseline import (BaselineRun, EncoderBaseline, block_costs, dense_block, mlp_width,
                                        owner_in_order, patch_tokens, stem_flops)
from workbench.methods.ops.spatial import attention_received, contextual_merge, frame_tokens, merge_flops
from workbench.trace.schema import DECISIONS


@dataclass(frozen=True)
class VisionZipConfig:
    """budget: tokens per frame to the decoder; contextual: the share of them that are contextual (10/64)."""

    budget: int = 64
    contextual: float = 10 / 64

    def __post_init__(self):
        if self.budget < 1:
            raise ValueError(f"VisionZip budget must be ≥ 1 token per frame, not {self.budget}")
        if not 0 <= self.contextual < 1:
            raise ValueError(f"VisionZip contextual share must be in [0, 1), not {self.contextual}")

    def split(self, n: int) -> tuple[int, int]:
        """(dominant, contextual) tokens per frame for a frame of n tokens."""
        b = min(self.budget, n)
        if b >= n:
            return n, 0
        ctx = min(max(1, round(b * self.contextual)), b - 1) if self.contextual > 0 else 0
        return b - ctx, ctx


@dataclass(frozen=True)
class VisionZip(EncoderBaseline):
    cfg: VisionZipConfig = field(default_factory=VisionZipConfig)
    name: str = "visionzip"


    def work(self, model, frames: torch.Tensor, modality: str) -> BaselineRun:
        enc = model.encoder
        x = enc.embed(frames[0], modality)  # (T, N, D)
        t, _, d = x.shape
        n = patch_tokens(model, x)
        dom, ctx = self.cfg.split(n)
        mlp = mlp_width(model)
        flops = stem_flops(model, modality, n)
        q = k = None
        for blk in enc.blocks:
            x, q, k = dense_block(blk, x)  # q, k: (T, h, N, hd), the last block's are the scores' inputs
            flops += sum(block_costs(n, d, mlp))
        out = enc.finish(x, modality)  # (T, N, D)
        layers = len(enc.blocks)
        rows = np.full((layers, t), float(n))
        if dom >= n:
            patch = torch.arange(n).expand(t, -1)
            vt, _ = frame_tokens(out, patch, torch.ones(t, n))
            owner = torch.arange(t * n).view(t, n)
            return BaselineRun(vt, owner, torch.full((t, n), DECISIONS["kept"]), rows, rows, np.full(t, float(flops)))
        received = attention_received(q, k)  # (T, N)
        flops += 2 * n * n * d  # per frame: q·kᵀ for the probabilities (the block's own attention is fused)
        top = received.topk(dom, dim=1).indices.sort(dim=1).values  # (T, dom) dominant patches, in patch order
        left_mask = torch.ones(t, n, dtype=torch.bool).scatter_(1, top, False)
        left = left_mask.nonzero()[:, 1].view(t, n - dom)  # (T, L) leftover patches, in patch order
        metric = k.mean(1)  # (T, N, hd) head-mean keys of the last block
        hd = metric.shape[-1]
        g = lambda z, i: z.gather(1, i[..., None].expand(-1, -1, z.shape[-1]))  # noqa: E731
        cx, csize, tgt, assign = contextual_merge(g(metric, left), g(out, left), ctx)
        flops += merge_flops(1, n - dom, ctx, hd, d)  # per frame
        tokens = torch.cat([g(out, top), cx], 1)  # (T, dom + ctx, D)
        patch = torch.cat([top, left.gather(1, tgt)], 1)  # a contextual token sits at its target's patch
        size = torch.cat([torch.ones(t, dom), csize], 1)
        vt, order = frame_tokens(tokens, patch, size)
        local = torch.empty(t, n, dtype=torch.long)
        local.scatter_(1, top, torch.arange(dom).expand(t, -1))
        local.scatter_(1, left, dom + assign)
        codes = torch.full((t, n), DECISIONS["recycled"]).scatter_(1, top, DECISIONS["kept"])
        owner = owner_in_order(local, order, dom + ctx)
        return BaselineRun(vt, owner, codes, rows, rows, np.full(t, float(flops)))

