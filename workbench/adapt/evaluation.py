"""The adaptation loop's accuracy: CIDEr (pycocoevalcap, the README's metrics) of a model's captions on a
domain's held-out clips — the device through its own method, the teacher from the tokens it would receive.

The main metric of every caption domain is **CIDEr** on a fixed set of held-out ShapesWorld test seeds seen
through the domain's shift (the same set before and after every round, so CIDEr's set-dependent IDF cancels
in comparisons). Clips are rendered once per process (`eval_clips` caches them).

    >>> from workbench.models.registry import create_model
    >>> caps = device_captions(create_model("tinyvlm-debug"), eval_clips("night", 1))
    >>> len(caps)
    1
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from workbench.adapt.tokens import encode_tokens, tokens_from_clip
from workbench.data.clip import Clip
from workbench.data.shifts import domain_seeds, shifted_clip
from workbench.eval.metrics import score_captions
from workbench.models.tinyvlm import TinyVLM


@lru_cache(maxsize=16)
def eval_clips(domain: str, n: int) -> tuple[Clip, ...]:
    """The first n held-out clips of a domain ('source' = unshifted), cached."""
    return tuple(shifted_clip(domain, s) for s in domain_seeds(domain, "eval", n))


@torch.no_grad()
def device_captions(model: TinyVLM, clips) -> dict[str, str]:
    """sample_id → caption of the model through its attached method (dense when none)."""
    from workbench.pipeline import active_method
    method = active_method(model)
    out = {}
    for c in clips:
        vt, _ = method.visual_tokens(model, torch.from_numpy(np.ascontiguousarray(c.frames))[None], c.modality, c)
        out[c.sample_id] = model.generate(vt).texts[0]
    return out


@torch.no_grad()
def token_captions(model: TinyVLM, clips, rho: float) -> dict[str, str]:
    """sample_id → caption of `model` from the token set a device at budget ρ would send (`encode_tokens`)."""
    model.eval()
    return {c.sample_id: model.generate(encode_tokens(model, tokens_from_clip(c, rho))).texts[0] for c in clips}


def cider(captions: dict[str, str], clips) -> float:
    """Corpus CIDEr of `captions` against the clips' five references (an empty caption scores as '<empty>')."""
    refs = {c.sample_id: c.captions for c in clips}
    hyps = {k: (v if v.strip() else "<empty>") for k, v in captions.items()}
    return float(score_captions(hyps, refs, spice=False).cider)
