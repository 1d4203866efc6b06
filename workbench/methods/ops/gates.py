"""Change scores and reference-state gates (STTF step 1–4; Eventful Transformers' reference trick).

A gate decides per frame and patch whether the token is recomputed (True) or reused (False). The reference
for a patch is updated only when the patch is recomputed, so slow drift accumulates until it fires.

    >>> import torch
    >>> x = torch.zeros(1, 4, 2, 3)          # (B, T, N, F): two patches, four frames
    >>> x[0, 1:, 1] = torch.tensor([0.04, 0.08, 0.12])[:, None]   # patch 1 drifts slowly
    >>> g = reference_gate(x, tau=0.1)
    >>> g.mask[0, :, 1].tolist()             # fires once the accumulated drift exceeds tau
    [True, False, False, True]
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GateResult:
    mask: torch.Tensor  # (B, T, N) bool, True = recompute
    score: torch.Tensor  # (B, T, N) change score against the reference (0 on frame 0)
    ref_age: torch.Tensor  # (B, T, N) long, frames since the patch was last recomputed (0 = recomputed now)
    key: torch.Tensor | None = None  # (B, T) bool dense frames (filled by `run_gate`)
    cut: torch.Tensor | None = None  # (B, T) bool dense because of a scene cut (filled by `run_gate`)


def patch_pixels(frames: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, T, C, H, W) → (B, T, N, C·p·p) pixels per patch, grid row-major."""
    b, t, c, h, w = frames.shape
    x = frames.reshape(b, t, c, h // patch, patch, w // patch, patch)  # (B, T, C, gh, p, gw, p)
    x = x.permute(0, 1, 3, 5, 2, 4, 6)  # (B, T, gh, gw, C, p, p)
    return x.reshape(b, t, (h // patch) * (w // patch), c * patch * patch)


def change_score(x: torch.Tensor, ref: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Per-token change of x against ref, (..., F) → (...).

    l1: mean |x − ref| (pixels); rel_l2: ‖x − ref‖ / (‖ref‖ + ε) (embeddings).
    """
    if kind == "l1":
        return (x - ref).abs().mean(-1)
    if kind == "rel_l2":
        return (x - ref).norm(dim=-1) / (ref.norm(dim=-1) + 1e-6)
    raise ValueError(f"change score kind must be l1 or rel_l2, not {kind!r}")


def reference_gate(x: torch.Tensor, tau: float | torch.Tensor, kind: str = "l1",
                   keyframes: torch.Tensor | None = None) -> GateResult:
    """Threshold gate with reference state over features x (B, T, N, F).

    tau: scalar or (B,) per-sample threshold. keyframes: (T,) or (B, T) bool, frames recomputed densely
    (frame 0 always is). Returns the mask, the scores and the reference age.
    """
    b, t, n, _ = x.shape
    tau = torch.as_tensor(tau, dtype=x.dtype).reshape(-1, 1).expand(b, 1)  # (B, 1)
    kf = torch.zeros(b, t, dtype=torch.bool) if keyframes is None else keyframes.expand(b, t).clone()
    kf[:, 0] = True
    mask = torch.zeros(b, t, n, dtype=torch.bool)
    score = torch.zeros(b, t, n, dtype=x.dtype)
    age = torch.zeros(b, t, n, dtype=torch.long)
    ref = x[:, 0].clone()
    mask[:, 0] = True
    for f in range(1, t):
        s = change_score(x[:, f], ref, kind)  # (B, N)
        m = (s > tau) | kf[:, f: f + 1]
        ref = torch.where(m[..., None], x[:, f], ref)
        mask[:, f], score[:, f] = m, s
        age[:, f] = torch.where(m, 0, age[:, f - 1] + 1)
    return GateResult(mask, score, age)


# ---- streaming gate (STTF inference and its stage-2 fine-tune) ------------------------------------------------
# One frame at a time, batched over clips (B = 1 at inference). Unlike `reference_gate` above (kept for stage-1
# training, which fires on s > τ), the streaming gate fires on s ≥ τ, so τ = 0 recomputes every patch.

POLICIES = ("threshold", "topk")


@dataclass(frozen=True)
class GateRule:
    """How a frame's change scores become a recompute mask.

    policy: "threshold" (s ≥ tau) or "topk" (the k highest scores of the frame; ties → lower patch index).
    keyframe_every: K, frames t with t % K == 0 are dense (None = only frame 0).
    scene_cut: a frame where more than this fraction of patches has s ≥ tau is dense (None = off); with
    the top-k policy `tau` is used only for this test.
    """

    policy: str = "threshold"
    tau: float = 0.05
    k: int = 31
    keyframe_every: int | None = None
    scene_cut: float | None = None

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"gate policy must be one of {POLICIES}, not {self.policy!r}")
        if self.tau < 0 or self.k < 0:
            raise ValueError(f"tau and k must be ≥ 0 (got tau={self.tau}, k={self.k})")
        if self.keyframe_every is not None and self.keyframe_every < 1:
            raise ValueError(f"keyframe_every must be ≥ 1 or None, not {self.keyframe_every}")


@dataclass
class GateState:
    """Per-clip gate state: the reference features of every patch (features at its last recompute), the age
    of that reference in frames, and the index of the next frame. Create one per clip with `GateState()`."""

    ref: torch.Tensor | None = None  # (B, N, F) reference features; None before frame 0 or without features
    age: torch.Tensor | None = None  # (B, N) long, frames since the last recompute
    frame: int = 0

    def clone(self) -> "GateState":
        c = lambda x: None if x is None else x.clone()  # noqa: E731
        return GateState(c(self.ref), c(self.age), self.frame)


@dataclass
class GateStep:
    mask: torch.Tensor  # (B, N) bool, True = recompute
    score: torch.Tensor  # (B, N) change score of this frame (vs the reference; 0 at frame 0 for reference sources)
    age: torch.Tensor  # (B, N) long reference age after this frame (0 = recomputed now)
    key: torch.Tensor  # (B,) bool, dense frame (first, periodic keyframe or scene cut)
    cut: torch.Tensor  # (B,) bool, dense because of a scene cut


def select_recompute(score: torch.Tensor, rule: GateRule) -> torch.Tensor:
    """(B, N) scores → (B, N) bool recompute mask under the rule's policy (keyframes not applied).

        >>> select_recompute(torch.tensor([[0.1, 0.0, 0.3]]), GateRule(tau=0.1)).tolist()
        [[True, False, True]]
        >>> select_recompute(torch.tensor([[0.1, 0.3, 0.3]]), GateRule("topk", k=1)).tolist()
        [[False, True, False]]
    """
    if rule.policy == "threshold":
        return score >= rule.tau
    k = min(rule.k, score.shape[-1])
    order = torch.sort(score, dim=-1, descending=True, stable=True).indices[..., :k]  # (B, k)
    return torch.zeros_like(score, dtype=torch.bool).scatter_(-1, order, True)


def gate_step(state: GateState, rule: GateRule, feat: torch.Tensor | None = None, score: torch.Tensor | None = None,
              kind: str = "l1") -> GateStep:
    """Gate one frame and update `state` in place (references move only where the patch is recomputed).

    Give `feat` (B, N, F) for reference-state sources (pixels: kind "l1", embeddings: kind "rel_l2"), or a
    ready `score` (B, N) for reference-free sources (event rates); both may be given (score wins).

        >>> st, rule = GateState(), GateRule(tau=0.1)
        >>> x = torch.zeros(1, 2, 1)
        >>> [gate_step(st, rule, x + d).mask[0].tolist() for d in (0.0, 0.06, 0.12)]
        [[True, True], [False, False], [True, True]]
    """
    if feat is None and score is None:
        raise ValueError("gate_step needs features or scores")
    b, n = (feat if score is None else score).shape[:2]
    t = state.frame
    if score is None:
        score = (feat.new_zeros(b, n) if state.ref is None else change_score(feat, state.ref, kind))
    first = t == 0 or state.age is None
    periodic = rule.keyframe_every is not None and t % rule.keyframe_every == 0
    key = torch.full((b,), first or periodic, dtype=torch.bool)
    cut = torch.zeros(b, dtype=torch.bool)
    if first or periodic:  # a dense frame: every patch, nothing else to decide
        mask = torch.ones(b, n, dtype=torch.bool)
    else:
        hits = score >= rule.tau  # (B, N): the threshold policy's mask and the scene-cut test
        if rule.scene_cut is not None:
            cut = hits.float().mean(-1) > rule.scene_cut  # (B,)
            key = cut.clone()
        mask = hits if rule.policy == "threshold" else select_recompute(score, rule)
        if bool(cut.any()):
            mask = mask | cut[:, None]
    if feat is not None:
        state.ref = feat.clone() if state.ref is None else torch.where(mask[..., None], feat, state.ref)
    age = torch.zeros(b, n, dtype=torch.long) if first else torch.where(mask, 0, state.age + 1)
    state.age, state.frame = age, t + 1
    return GateStep(mask, score, age, key, cut)


def run_gate(rule: GateRule, feats: torch.Tensor | None = None, scores: torch.Tensor | None = None,
             kind: str = "l1") -> GateResult:
    """`gate_step` over a whole clip batch: feats (B, T, N, F) and/or scores (B, T, N) → GateResult with
    `key` / `cut` (B, T) dense frames / scene cuts. Pure: a fresh GateState is used.

        >>> x = torch.zeros(1, 4, 2, 1); x[0, 1:, 1, 0] = torch.tensor([0.04, 0.08, 0.12])
        >>> run_gate(GateRule(tau=0.1), x).mask[0, :, 1].tolist()
        [True, False, False, True]
    """
    src = feats if scores is None else scores
    state, steps = GateState(), []
    for f in range(src.shape[1]):
        steps.append(gate_step(state, rule, None if feats is None else feats[:, f],
                               None if scores is None else scores[:, f], kind))
    st = lambda name: torch.stack([getattr(s, name) for s in steps], 1)  # noqa: E731  (B, T, ...)
    return GateResult(st("mask"), st("score"), st("age"), st("key"), st("cut"))


def soft_gate(score: torch.Tensor, log_tau: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Differentiable recompute probability sigmoid((log s − log τ) / temperature), scale-free in the score
    (the hard gate s ≥ τ is this ≥ 0.5). For straight-through training: m = hard + soft − soft.detach().

        >>> p = soft_gate(torch.tensor([0.05, 0.1, 0.2]), torch.tensor(0.1).log())
        >>> [round(v, 3) for v in p.tolist()]
        [0.2, 0.5, 0.8]
    """
    return torch.sigmoid((score.clamp_min(1e-12).log() - log_tau) / temperature)
