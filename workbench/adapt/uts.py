"""UTS — uncertainty-guided token sampling on the device's uplink (METHODS.md §5.1).

1. **Sample gate**: a captioned sample is uploaded only when its sequence confidence — the product over the
   generated tokens of the maximum next-token probability — is below `threshold` (`sequence_confidence`
   recomputes the greedy decode's probabilities with one teacher-forced pass; `generate` keeps its signature).
2. **Token uncertainty** by real MC dropout *inside* the device model (`mc_dropout_variance`): the encoder runs
   once up to the first chosen block, then `passes` times through the chosen blocks with dropout active on
   their attention output and MLP hidden units (a fresh mask per pass, from a seeded generator), and through
   the rest of the encoder (final LayerNorm + running norm). A token's uncertainty is the variance of its
   encoder output across passes, averaged over channels. Because the masks act on hidden units that the
   following layers mix and renormalise, the variance depends on how the token's features are built, not on
   its norm — unlike the released Cdcca code, which drops out the *fixed* output features, whose variance is
   x²·p/(1−p) (`magnitude_uncertainty`, kept for the ablation).
3. **Token drop**: the `drop` fraction of most uncertain tokens is **not sent** (`keep_mask`): the payload holds
   only the kept tokens and their indices (`wire.sample_payload`).

    >>> import torch
    >>> from workbench.models.registry import create_model
    >>> from workbench.data.shapesworld import make_clip
    >>> from workbench.adapt.tokens import tokens_from_clip
    >>> m, clip = create_model("tinyvlm-debug"), make_clip(0)
    >>> ts = tokens_from_clip(clip, 0.1)
    >>> u = token_uncertainty(m, clip, ts, UTSConfig(passes=4))
    >>> u.shape == (ts.num_tokens,), int(keep_mask(u, 0.25).sum()) == ts.num_tokens - round(0.25 * ts.num_tokens)
    (True, True)
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from workbench.adapt.akd import caption_batch
from workbench.adapt.tokens import TokenSet
from workbench.data.clip import Clip
from workbench.models.tinyvlm import TinyVLM
from workbench.models.visual_tokens import VisualTokens

RANKINGS = ("mc", "magnitude", "random")


@dataclass(frozen=True)
class UTSConfig:
    """gate: use the sample gate (False = upload every sample); threshold on the sequence confidence;
    drop: fraction of tokens not sent (0.5: with the router, 0.25 / 0.4 / 0.5 gave the same night CIDEr within
    one seed's noise — 0.898 / 0.909 / 0.922 after 3 rounds — and 0.5 keeps the uplink under 10 % of
    send-everything); passes, p, layers: MC dropout (encoder block indices, negative from the
    end); ranking: 'mc' (this module), 'magnitude' (Cdcca's), 'random' (the baseline); seed."""

    gate: bool = True
    threshold: float = 0.05
    drop: float = 0.5
    passes: int = 10
    p: float = 0.2
    layers: tuple[int, ...] = (-2, -1)
    ranking: str = "mc"
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.drop < 1.0:
            raise ValueError(f"drop must be in [0, 1), not {self.drop}")
        if self.ranking not in RANKINGS:
            raise ValueError(f"ranking must be one of {RANKINGS}, not {self.ranking!r}")
        if self.passes < 2 or not 0.0 < self.p < 1.0:
            raise ValueError("MC dropout needs passes ≥ 2 and p in (0, 1)")


@torch.no_grad()
def sequence_confidence(model: TinyVLM, vt: VisualTokens, answer_ids: list[int], prompt: str | None = None) -> float:
    """∏ over the generated tokens of max softmax probability at that step (greedy: the token's own probability).

        >>> from workbench.models.registry import create_model
        >>> m = create_model("tinyvlm-debug")
        >>> vt = m.encode_dense(torch.rand(1, 2, 3, 112, 112), "rgb")
        >>> 0.0 < sequence_confidence(m, vt, m.generate(vt, max_new_tokens=5).ids[0]) <= 1.0
        True
    """
    if not answer_ids:
        return 1.0
    ids, _, mask = caption_batch(model.tokenizer, model.cfg.caption_prompt if prompt is None else prompt,
                                 [answer_ids])
    logits, _ = model(vt, ids)
    probs = logits[mask].float().softmax(-1).amax(-1)  # (L,)
    return float(torch.exp(torch.log(probs.clamp_min(1e-30)).sum()))


def _drop(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    keep = torch.rand(x.shape, generator=gen) >= p
    return x * keep / (1.0 - p)


def _block_with_dropout(blk, x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """One pre-LN block with dropout on its attention output and on its MLP hidden units."""
    x = x + _drop(blk.attn(blk.ln1(x)), p, gen)
    hidden = F.gelu(blk.mlp.fc1(blk.ln2(x)))
    return x + blk.mlp.fc2(_drop(hidden, p, gen))


@torch.no_grad()
def mc_variance_from(encoder, x: torch.Tensor, first: int, cfg: UTSConfig, modality: str = "rgb",
                     gen: torch.Generator | None = None) -> torch.Tensor:
    """Hidden states x (F, N, D) entering encoder block `first` → per-token MC-dropout variance (F, N):
    `cfg.passes` passes through blocks first.. (dropout in `cfg.layers`) and `finish`, variance over passes
    (Welford), mean over channels."""
    depth = len(encoder.blocks)
    chosen = {i % depth for i in cfg.layers}
    gen = gen or torch.Generator().manual_seed(cfg.seed)
    mean = torch.zeros_like(x)
    m2 = torch.zeros_like(x)
    for k in range(cfg.passes):
        h = x
        for i in range(first, depth):
            blk = encoder.blocks[i]
            h = _block_with_dropout(blk, h, cfg.p, gen) if i in chosen else blk(h)
        out = encoder.finish(h, modality)
        delta = out - mean
        mean += delta / (k + 1)
        m2 += delta * (out - mean)
    return (m2 / (cfg.passes - 1)).mean(-1)


@torch.no_grad()
def mc_dropout_variance(model: TinyVLM, frames: torch.Tensor, cfg: UTSConfig, modality: str = "rgb",
                        gen: torch.Generator | None = None) -> torch.Tensor:
    """Frames (F, C, H, W) → (F, N) MC-dropout variance of each patch token's encoder output."""
    enc = model.encoder
    first = min(i % len(enc.blocks) for i in cfg.layers)
    x = enc.embed(frames.to(model.device), modality)
    for blk in enc.blocks[:first]:
        x = blk(x)
    return mc_variance_from(enc, x, first, cfg, modality, gen).cpu()


@torch.no_grad()
def magnitude_uncertainty(features: torch.Tensor, cfg: UTSConfig, gen: torch.Generator | None = None) -> torch.Tensor:
    """The released Cdcca score: dropout applied `passes` times to *fixed* features (K, D), variance over
    passes averaged over channels — in expectation mean(x²)·p/(1−p), a magnitude ranking."""
    gen = gen or torch.Generator().manual_seed(cfg.seed)
    draws = torch.stack([_drop(features, cfg.p, gen) for _ in range(cfg.passes)])  # (passes, K, D)
    return draws.var(0).mean(-1)


def token_uncertainty(model: TinyVLM, clip: Clip, tokens: TokenSet, cfg: UTSConfig,
                      features: torch.Tensor | None = None) -> torch.Tensor:
    """(K,) uncertainty of each token of `tokens` (runs of `clip`) under cfg.ranking. For 'mc' each token's score
    is its patch's variance at the run's first frame (frames that start no run are not computed);
    'magnitude' needs the device's token `features` (K, D); 'random' is uniform noise from the seed."""
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + zlib.crc32(tokens.sample_id.encode()))
    if cfg.ranking == "random":
        return torch.rand(tokens.num_tokens, generator=gen)
    if cfg.ranking == "magnitude":
        if features is None:
            raise ValueError("the magnitude ranking needs the device's token features")
        return magnitude_uncertainty(features, cfg, gen)
    frames = torch.from_numpy(np.ascontiguousarray(clip.frames))
    needed = torch.unique(tokens.t_start)
    var = mc_dropout_variance(model, frames[needed], cfg, clip.modality, gen)  # (F, N)
    return var[torch.searchsorted(needed, tokens.t_start), tokens.patch]


def keep_mask(uncertainty: torch.Tensor, drop: float) -> torch.Tensor:
    """(K,) bool: all but the round(drop·K) most uncertain tokens (ties: the earlier index is dropped first);
    at least one token is kept.

        >>> keep_mask(torch.tensor([0.1, 0.9, 0.5, 0.2]), 0.5).tolist()
        [True, False, False, True]
    """
    k = uncertainty.numel()
    n_drop = min(int(round(drop * k)), k - 1)
    keep = torch.ones(k, dtype=torch.bool)
    if n_drop > 0:
        order = torch.sort(uncertainty, descending=True, stable=True).indices[:n_drop]
        keep[order] = False
    return keep
