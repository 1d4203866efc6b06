"""Eventful Transformers (Dutson et al., ICCV 2023): token gates with reference states *inside every block*.

Frames are encoded in order; frame 0 densely. At a later frame, each block's gate compares every token's input
to the block with its reference — the input it had when that block last computed it — and lets through the
tokens that changed: the `k` with the largest ‖x − x_ref‖ (policy `topk`) or those with ‖x − x_ref‖ ≥ `tau`
(`threshold`). Only those are computed (their queries attend over all keys: fresh keys/values where computed,
the block's cached ones elsewhere); the others keep the block's buffered output from the last time they were
computed; references move only where a token is computed. This is STTF's closest relative — STTF gates once,
at the input, on pixels; Eventful gates at every block on the hidden states, so a token can be recomputed in
block 0 and skipped in block 3.

For the decoder: a patch whose final output was not recomputed at a frame holds exactly the token it had
before, so consecutive frames of such a run become one token with size = run length (STTF's fusion,
`ops/fusion.fuse_runs`) — without it every frame would hand the decoder N tokens. With `topk`, a non-key
frame sends k tokens, so a budget B tokens per frame (frame 0 counted, as STTF's ρ) is k = (T·B − N)/(T − 1)
rounded (`k_for_budget`; the budget actually hit is reported). Gate scores are elementwise (not counted as
FLOPs by either count); the stem runs on every patch of every frame (the gates are inside the blocks).

k = N (or τ = 0) computes every token of every block: the dense encoder's calls frame by frame, equal to the
dense clip bit for bit (CPU kernels are batch invariant; tested, as STTF's τ = 0).

    >>> from workbench.models.registry import create_model
    >>> from workbench.data.shapesworld import make_clip
    >>> from workbench.pipeline import describe
    >>> d = describe(create_model("tinyvlm-debug"), make_clip(0, 8), Eventful(EventfulConfig(budget=31)))
    >>> d.method, d.tokens_per_frame, k_for_budget(31, 8, 196)
    ('eventful', 30.625, 7)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from workbench.eval.flops import block_flops
from workbench.methods.baseline import BaselineRun, EncoderBaseline, mlp_width, patch_tokens, qkv, stem_flops
from workbench.methods.ops.fusion import fuse_runs, run_token_index
from workbench.trace.schema import DECISIONS

POLICIES = ("topk", "threshold")


def k_for_budget(budget: float, t: int, n: int) -> int:
    """Tokens per block at non-key frames so that (N + (T − 1)·k) / T ≈ budget (frame 0 is dense)."""
    if t <= 1:
        return n
    return int(min(n, max(0, round((t * budget - n) / (t - 1)))))


@dataclass(frozen=True)
class EventfulConfig:
    """policy: topk | threshold. k: tokens per block per non-key frame (topk). tau: ‖x − x_ref‖ threshold.
    budget: decoder tokens per frame (topk; replaces k, solved per clip length)."""

    policy: str = "topk"
    k: int = 196
    tau: float = 0.0
    budget: float | None = None

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"Eventful policy must be one of {POLICIES}, not {self.policy!r}")
        if self.k < 0 or self.tau < 0:
            raise ValueError(f"Eventful k and tau must be ≥ 0, got k={self.k}, tau={self.tau}")


@dataclass
class _BlockState:
    ref: torch.Tensor  # (1, N, D) the block's input when each token was last computed
    k: torch.Tensor  # (1, h, N, hd)
    v: torch.Tensor
    out: torch.Tensor  # (1, N, D) buffered block output


@dataclass(frozen=True)
class Eventful(EncoderBaseline):
    cfg: EventfulConfig = field(default_factory=EventfulConfig)
    name: str = "eventful"


    def _gate(self, score: torch.Tensor, k: int) -> torch.Tensor:
        """(N,) change scores → sorted indices of the tokens to compute."""
        n = score.numel()
        if self.cfg.policy == "threshold":
            return (score >= self.cfg.tau).nonzero().squeeze(1)
        if k >= n:
            return torch.arange(n)
        return score.topk(k, sorted=False).indices.sort().values

    def work(self, model, frames: torch.Tensor, modality: str) -> BaselineRun:
        enc = model.encoder
        t = frames.shape[1]
        n = model.cfg.num_patches
        mlp = mlp_width(model)
        k = k_for_budget(self.cfg.budget, t, n) if self.cfg.budget is not None else self.cfg.k
        states: list[_BlockState] = []
        final = None
        outs, masks, computed = [], [], np.zeros((len(enc.blocks), t))
        analytic = np.zeros(t)
        for f in range(t):
            x = enc.embed(frames[:, f], modality)  # (1, N, D)
            d = x.shape[-1]
            patch_tokens(model, x)
            analytic[f] = stem_flops(model, modality, n)
            last = None
            for li, blk in enumerate(enc.blocks):
                if f == 0:
                    idx = torch.arange(n)
                else:
                    idx = self._gate((x - states[li].ref)[0].norm(dim=-1), k)  # (R,)
                r = idx.numel()
                if r == n:  # the dense block's exact calls
                    q, kk, v = qkv(blk, blk.ln1(x), idx)
                    a = x + blk.attn.attend(q, kk, v)
                    o = blk.hook_out(a + blk.mlp(blk.ln2(a)))
                    st = _BlockState(x.clone(), kk.clone(memory_format=torch.contiguous_format),
                                     v.clone(memory_format=torch.contiguous_format), o)
                    if f == 0:
                        states.append(st)
                    else:
                        states[li] = st
                    x = o
                elif r == 0:
                    x = states[li].out
                else:
                    s, xs = states[li], x[:, idx]  # (1, R, D)
                    q, kk, v = qkv(blk, blk.ln1(xs), idx)
                    s.k.index_copy_(2, idx, kk)
                    s.v.index_copy_(2, idx, v)
                    a = xs + blk.attn.attend(q, s.k, s.v)  # R queries over all N keys
                    o = a + blk.mlp(blk.ln2(a))
                    s.ref = s.ref.index_copy(1, idx, xs)
                    s.out = s.out.index_copy(1, idx, o)
                    x = s.out
                computed[li, f] = r
                analytic[f] += block_flops(r, n, d, mlp) if r else 0
                last = idx
            if last.numel() == n:
                final = enc.finish(x, modality)  # (1, N, D)
            elif last.numel():
                final = final.index_copy(1, last, enc.finish(x[:, last], modality))
            mask = torch.zeros(n, dtype=torch.bool)
            mask[last] = True
            outs.append(final)
            masks.append(mask)
        enc_out = torch.stack(outs, 1)  # (1, T, N, D)
        mask = torch.stack(masks)[None]  # (1, T, N) recomputed at the last block
        vt = fuse_runs(enc_out, mask)
        owner = run_token_index(mask)[0]
        codes = torch.where(mask[0], DECISIONS["recomputed"], DECISIONS["fused"]).long()
        out_rows = np.full_like(computed, float(n))
        return BaselineRun(vt, owner, codes, computed, out_rows, analytic, mask[0].sum(1).numpy().astype(np.float64))

