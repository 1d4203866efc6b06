"""STTF's thresholds from data: the τ that meets a token budget ρ on calibration clips (`calibrate_tau`,
`budget_config`), the recompute rate of a gate (`recompute_rate`), and the τ a stage-2 checkpoint learned
(`learned_config`). Only the gate runs (and the stem for the embedding source) — no encoder blocks.

    >>> from workbench.models.registry import create_model
    >>> from workbench.data.shapesworld import make_clip
    >>> budget_config(create_model("tinyvlm-debug"), [make_clip(0)], 0.3).rho
    0.3
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from workbench.data.clip import Clip
from workbench.methods.ops.gates import patch_pixels, run_gate
from workbench.methods.sttf import SCORE_KIND, STTFConfig, event_rates
from workbench.models.protocol import VLM


@torch.no_grad()
def _gate_inputs(model: VLM, clip: Clip, source: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(feats (1, T, N, F) | None, scores (1, T, N) | None) for `run_gate`."""
    frames = torch.from_numpy(np.ascontiguousarray(clip.frames)).to(model.device)  # (T, C, H, W)
    if source == "events":
        return None, event_rates(clip, frames.shape[0], model.cfg.num_patches).to(model.device)
    if source == "embedding":
        return model.encoder.embed(frames, clip.modality)[None], None  # (1, T, N, D)
    return patch_pixels(frames[None], model.cfg.patch_size), None


def _rate_fn(model: VLM, clips, base: STTFConfig):
    groups: dict[tuple, list] = {}  # clips of equal shape run as one gate batch
    for c in clips:
        f, sc = _gate_inputs(model, c, base.source)
        groups.setdefault(tuple((f if sc is None else sc).shape[1:]), []).append((f, sc))
    if not groups:
        raise ValueError("calibration needs at least one clip")
    cat = lambda xs: None if xs[0] is None else torch.cat(xs)  # noqa: E731
    inputs = [(cat([f for f, _ in g]), cat([sc for _, sc in g])) for g in groups.values()]
    kind = SCORE_KIND[base.source] or "l1"

    def rate(tau: float) -> float:
        rule = replace(base.rule(), policy="threshold", tau=tau)
        hits = total = 0
        for f, s in inputs:
            m = run_gate(rule, f, s, kind).mask  # (B, T, N)
            hits, total = hits + int(m.sum()), total + m.numel()
        return hits / total
    return rate


def recompute_rate(model: VLM, clips, cfg: STTFConfig) -> float:
    """Mean recompute rate (keyframes included, i.e. tokens to the decoder / (T·N)) of the threshold gate of
    `cfg` over `clips`. Runs only the gate (and the stem for the embedding source).

        >>> from workbench.models.registry import create_model
        >>> from workbench.data.shapesworld import make_clip
        >>> recompute_rate(create_model("tinyvlm-debug"), [make_clip(0)], STTFConfig(tau=0.0))
        1.0
    """
    return _rate_fn(model, clips, cfg)(cfg.tau)


def calibrate_tau(model: VLM, clips, rho: float, source: str = "pixels", base: STTFConfig | None = None,
                  iters: int = 40) -> float:
    """τ such that the mean recompute rate over `clips` ≈ rho (the (1 − ρ) quantile of the reference-state
    scores), by bisection on log τ. The rate counts every frame (keyframes too), so it equals tokens per frame
    to the decoder / N; it cannot go below the keyframe floor (1/T for frame 0 alone) — asking for less raises.
    `base` supplies the other knobs (keyframes, scene cut). Returns the τ at or just below the budget.

        >>> from workbench.models.registry import create_model
        >>> from workbench.data.shapesworld import make_clip
        >>> m, clips = create_model("tinyvlm-debug"), [make_clip(s) for s in (0, 4)]
        >>> tau = calibrate_tau(m, clips, 0.1)
        >>> recompute_rate(m, clips, STTFConfig(tau=tau)) <= 0.1 < recompute_rate(m, clips, STTFConfig(tau=0.9 * tau))
        True

    Rendered clips move in jumps, so the rate is a step function of τ and ρ is met from below at the nearest
    step (and static clips, whose scores are exactly 0, put a step at τ = 0+); on event rates or natural video
    it is met closely (tests/test_sttf.py).
    """
    if not 0 < rho <= 1:
        raise ValueError(f"rho must be in (0, 1], not {rho}")
    base = replace(base or STTFConfig(), source=source, policy="threshold", rho=None)
    rate = _rate_fn(model, clips, base)
    lo, hi = 1e-7, 1.0
    if rate(lo) <= rho:
        return lo
    while rate(hi) > rho:
        hi *= 4
        if hi > 1e6:
            raise ValueError(f"rho={rho} is below what the gate can reach on these clips (keyframe floor "
                             f"{rate(hi):.3f}); lower the keyframe rate or raise rho")
    for _ in range(iters):
        mid = float(np.sqrt(lo * hi))
        if rate(mid) > rho:
            lo = mid
        else:
            hi = mid
    return hi


def budget_config(model: VLM, clips, rho: float, source: str = "pixels", **knobs) -> STTFConfig:
    """A budget-policy config: τ calibrated on `clips` for mean recompute rate rho (ρ = 31/196 ≈ the paper's
    31 tokens per frame). Other knobs (keyframe_every, scene_cut, fuse) pass through.

        >>> from workbench.models.registry import create_model
        >>> from workbench.data.shapesworld import make_clip
        >>> budget_config(create_model("tinyvlm-debug"), [make_clip(0)], 0.3).policy
        'budget'
    """
    base = STTFConfig(source=source, **knobs)
    return replace(base, policy="budget", rho=rho, tau=calibrate_tau(model, clips, rho, source, base))


def learned_config(checkpoint: str | Path, source: str = "pixels", **knobs) -> STTFConfig:
    """The threshold learned by the stage-2 fine-tune for `source` (stored in the checkpoint's info).

        learned_config("data/weights/tinyvlm-shapes-sttf.safetensors", "events")
    """
    from workbench.models.io import read_metadata
    gates = read_metadata(checkpoint).get("sttf_gate", {})
    if source not in gates:
        raise ValueError(f"{checkpoint}: no learned STTF gate for source {source!r} (has {sorted(gates)})")
    g = gates[source]
    kw = {"keyframe_every": g.get("keyframe_every"), "scene_cut": g.get("scene_cut"), **knobs}
    return STTFConfig(source=source, policy="threshold", tau=float(g["tau"]), **kw)
