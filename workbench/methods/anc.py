"""ANC — Adaptive Neural Compression (METHODS.md §2): a learned router picks one encoder branch per frame.

Per clip, frame by frame: cheap features computed from pixels before the encoder (difference energy against the
previous frame and against the reference frame — the last frame actually encoded, whose tokens a skip reuses —
patch-energy statistics, scene complexity, frames since the reference, the previous decision) → the router's
logits → π = softmax((logits − cost_bias·c_k/c_full) / temperature) → a decision by argmax with hysteresis
(switch only when the best branch beats the current one by more than `hysteresis`); frame 0 is a keyframe run
by `first_frame` (default full; None lets the router pick any non-skip branch). The routing needs no encoder
output, so a clip is routed first and then every branch runs once, batched over the frames routed to it; skip
frames copy the previous frame's tokens. Forcing `full` reproduces dense exactly. The decoder receives N tokens
per frame (ANC changes how they are computed, not how many there are).

Routing stability (the paper's own weakness) is attacked three ways: the reference-frame features (a skip chain
ends when the accumulated change is large, not on per-frame noise), the previous decision as a router input plus
the training-time stability term, and inference hysteresis.

    >>> from workbench.models.registry import create_model
    >>> from workbench.methods.anc_modules import ANCModule
    >>> from workbench.data.shapesworld import make_clip
    >>> from workbench.pipeline import Dense, describe
    >>> model = create_model("tinyvlm-debug")
    >>> model = apply(model, ANCConfig(forced="full"), module=ANCModule.for_model(model))
    >>> describe(model, make_clip(0)).caption == describe(model, make_clip(0), method=Dense()).caption
    True
"""
from __future__ import annotations

import time
import weakref
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from workbench.data.clip import Clip
from workbench.eval.flops import count_flops
from workbench.methods.anc_modules import (BRANCHES, FULL, SKIP, ANCModule, BranchCache, analytic_branch_flops,
                                           load_anc, run_branch)
from workbench.methods.ops.routing import (event_patch_energy, hysteresis_choice, masked_softmax, patch_means,
                                           rgb_patch_energy, router_features)
from workbench.models.registry import weights_dir
from workbench.models.tinyvlm import TinyVLM
from workbench.models.visual_tokens import VisualTokens
from workbench.pipeline import FrameStats, attach
from workbench.trace import active_recorder

__all__ = ["ANCConfig", "ANC", "RouterState", "Route", "RouteStep", "apply", "shipped_path", "route_clip", "route_frame",
           "relative_costs",
           "BRANCHES", "BranchCache", "run_branch"]  # the last two re-exported for STTF+ANC combined mode


@dataclass(frozen=True)
class ANCConfig:
    """Inference knobs (the train-time ones live in `workbench.training.stage3.Stage3Config`)."""

    temperature: float = 1.0  # π = softmax(logits / temperature)
    hysteresis: float = 0.1  # switch only when the new best beats the current branch's probability by > h
    forced: str | None = None  # None = routed; a branch name forces it on every frame after the first
    first_frame: str | None = "full"  # keyframe: frame 0 always runs this branch (None = the router decides)
    cost_bias: float = 0.0  # logits −= cost_bias·c_k/c_full: > 0 trades accuracy for FLOPs without retraining
    weights: str | None = None  # ANC checkpoint for `apply`; None = data/weights/anc-<model name>.safetensors

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.hysteresis < 0:
            raise ValueError(f"hysteresis must be >= 0, got {self.hysteresis}")
        if self.forced is not None and self.forced not in BRANCHES:
            raise ValueError(f"forced must be None or one of {BRANCHES}, not {self.forced!r}")
        if self.first_frame is not None and self.first_frame not in BRANCHES[1:]:
            raise ValueError(f"first_frame must be None or one of {BRANCHES[1:]}, not {self.first_frame!r}")


# ---- routing (pixels only, before any encoder work) ----------------------------------------------------------

@dataclass
class RouterState:
    """Per-clip routing state, batched over B clips (inference: B = 1). Create one per clip with `start`."""

    t: int
    prev_frame: torch.Tensor | None  # (B, C, H, W)
    ref_frame: torch.Tensor | None  # (B, C, H, W) last frame whose tokens were computed (what a skip reuses)
    ref_t: torch.Tensor  # (B,) long, frame index of the reference
    acc: torch.Tensor | None  # (B, N) events: activity accumulated since the reference
    prev_choice: torch.Tensor  # (B,) long, −1 before frame 0

    @classmethod
    def start(cls, batch: int = 1) -> "RouterState":
        return cls(0, None, None, torch.zeros(batch, dtype=torch.long), None,
                   torch.full((batch,), -1, dtype=torch.long))


def router_inputs(state: RouterState, frame: torch.Tensor, modality: str, patch: int, level: float,
                  n_branches: int = len(BRANCHES)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features (B, F), allowed (B, K) bool, reference energy (B, N)) for frame (B, C, H, W) at state.t.

    Skip is not allowed at frame 0. RGB: brightness-compensated |difference| per patch against the previous
    and the reference frame. Events: per-patch event activity of the frame, and its sum since the reference.
    """
    b = frame.shape[0]
    first = state.t == 0
    if modality == "events":
        e_prev = event_patch_energy(frame, patch)  # (B, N)
        e_ref = e_prev if first or state.acc is None else state.acc + e_prev
    elif first:
        e_prev = e_ref = patch_means(frame, patch) * 0.0
    else:
        e_prev = rgb_patch_energy(frame, state.prev_frame, patch)
        e_ref = rgb_patch_energy(frame, state.ref_frame, patch)
    complexity = patch_means(frame, patch).std(-1, unbiased=False)  # (B,)
    age = torch.full((b,), state.t) - state.ref_t if not first else torch.zeros(b, dtype=torch.long)
    feats = router_features(e_prev, e_ref, complexity, age, torch.full((b,), first), state.prev_choice,
                            n_branches, level)
    allowed = torch.ones(b, n_branches, dtype=torch.bool)
    allowed[:, SKIP] = not first
    return feats, allowed, e_ref


def advance(state: RouterState, frame: torch.Tensor, choice: torch.Tensor, e_ref: torch.Tensor) -> None:
    """Move the state past frame (B, C, H, W) given the decisions (B,) (non-skip frames become the reference)."""
    computed = choice != SKIP  # (B,)
    if state.ref_frame is None:
        state.ref_frame = frame.clone()
    else:
        state.ref_frame = torch.where(computed[:, None, None, None], frame, state.ref_frame)
    state.ref_t = torch.where(computed, torch.full_like(state.ref_t, state.t), state.ref_t)
    state.acc = torch.where(computed[:, None], torch.zeros_like(e_ref), e_ref)
    state.prev_frame = frame
    state.prev_choice = choice.to(torch.long)
    state.t += 1


@dataclass
class Route:
    """The routing of one clip."""

    choices: np.ndarray  # (T,) int, branch index per frame
    probs: np.ndarray  # (T, K)
    features: np.ndarray  # (T, F)
    router_ms: np.ndarray  # (T,)


def relative_costs(costs: dict[str, float]) -> torch.Tensor:
    """(K,) c_k / c_full in BRANCHES order.

    >>> [round(v, 3) for v in relative_costs({"skip": 0, "light": 1, "medium": 5, "full": 10}).tolist()]
    [0.0, 0.1, 0.5, 1.0]
    """
    return torch.tensor([costs[b] / costs["full"] for b in BRANCHES], dtype=torch.float32)


@dataclass
class RouteStep:
    """One frame's routing: the decision, π over the branches, the router's features, the time it took."""

    choice: int
    probs: torch.Tensor  # (K,)
    features: torch.Tensor  # (F,)
    ms: float


@torch.no_grad()
def route_frame(module: ANCModule, state: RouterState, frame: torch.Tensor, modality: str,
                cfg: ANCConfig = ANCConfig(), bias: torch.Tensor | None = None, patch: int = 8) -> RouteStep:
    """Route one frame (1, C, H, W) at `state.t` and advance `state` (B = 1). `bias`: (K,) logit offsets
    (cost_bias · c_k / c_full) or None. Hysteresis compares with the previous frame's decision, which the state
    holds — so a stream routes frame after frame with one `RouterState` exactly as `route_clip` routes a clip.

    >>> from workbench.models.registry import create_model
    >>> module = ANCModule.for_model(create_model("tinyvlm-debug"))
    >>> st = RouterState.start(1)
    >>> [route_frame(module, st, torch.rand(1, 3, 112, 112), "rgb").choice != 0 for _ in range(2)][0]
    True
    """
    t0 = time.perf_counter()
    forced = None if cfg.forced is None else BRANCHES.index(cfg.forced)
    first = None if cfg.first_frame is None else BRANCHES.index(cfg.first_frame)
    current = None if state.t == 0 else int(state.prev_choice[0])
    t = state.t
    f, allowed, e_ref = router_inputs(state, frame, modality, patch, module.cfg.change_level)
    logits = module.router(f)[0]
    if bias is not None:
        logits = logits - bias
    p = masked_softmax(logits, cfg.temperature, allowed[0])
    if forced is not None:
        c = forced if bool(allowed[0, forced]) else (FULL if first is None else first)
    elif t == 0 and first is not None:
        c = first
    else:
        c = hysteresis_choice(p, current, cfg.hysteresis, allowed[0])
    advance(state, frame, torch.tensor([c]), e_ref)
    return RouteStep(c, p, f[0], (time.perf_counter() - t0) * 1e3)


@torch.no_grad()
def route_clip(module: ANCModule, frames: torch.Tensor, modality: str, cfg: ANCConfig = ANCConfig(),
               rel_costs: torch.Tensor | None = None, patch: int = 8) -> Route:
    """Route frames (T, C, H, W) of one clip: features, π and decisions per frame (no encoder work).

    >>> from workbench.models.registry import create_model
    >>> module = ANCModule.for_model(create_model("tinyvlm-debug"))
    >>> r = route_clip(module, torch.rand(4, 3, 112, 112), "rgb")
    >>> r.choices.shape, r.probs.shape, bool(r.choices[0] != 0)
    ((4,), (4, 4), True)
    """
    state = RouterState.start(1)
    bias = None if (cfg.cost_bias == 0 or rel_costs is None) else cfg.cost_bias * rel_costs
    steps = [route_frame(module, state, frames[t: t + 1], modality, cfg, bias, patch) for t in range(frames.shape[0])]
    return Route(np.array([s.choice for s in steps], dtype=np.int64), torch.stack([s.probs for s in steps]).cpu().numpy(),
                 torch.stack([s.features for s in steps]).cpu().numpy(), np.array([s.ms for s in steps]))


# ---- the method ----------------------------------------------------------------------------------------------

class ANC:
    """The ANC method (pipeline plug-in): `visual_tokens(model, frames, modality, clip, count)`.

    Branch costs are measured once per (model, modality) with FlopCounterMode (`costs`).
    """

    name = "anc"

    def __init__(self, module: ANCModule, cfg: ANCConfig = ANCConfig()):
        self.module = module
        self.cfg = cfg
        self._costs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def config(self) -> dict:
        return {**asdict(self.cfg), "module": asdict(self.module.cfg)}

    def with_config(self, **changes) -> "ANC":
        """The same module (and measured costs) under other knobs, e.g. `anc.with_config(hysteresis=0)`."""
        other = ANC(self.module, replace(self.cfg, **changes))
        other._costs = self._costs
        return other

    @torch.no_grad()
    def costs(self, model: TinyVLM, modality: str) -> dict[str, int]:
        """FLOPs per frame of every branch and of the router, measured with FlopCounterMode on one frame."""
        per_model = self._costs.setdefault(model, {})
        if modality not in per_model:
            c = {"rgb": 3, "events": 2}[modality]
            frame = torch.zeros(1, c, model.cfg.image_size, model.cfg.image_size)
            prev = torch.zeros(1, model.cfg.num_patches, model.cfg.enc_dim)
            out = {"skip": 0}
            for name in BRANCHES[1:]:
                out[name] = count_flops(run_branch, model, self.module, name, frame, modality, prev)[1]
            out["router"] = count_flops(self.module.router, torch.zeros(1, self.module.cfg.n_features))[1]
            per_model[modality] = out
        return per_model[modality]

    def analytic_costs(self, model: TinyVLM, modality: str) -> dict[str, int]:
        return analytic_branch_flops(model.cfg, self.module.cfg, modality)

    def route(self, model: TinyVLM, frames: torch.Tensor, modality: str) -> Route:
        """Route one clip's frames (T, C, H, W) or (1, T, C, H, W) without encoding anything."""
        frames = frames[0] if frames.ndim == 5 else frames
        rel = relative_costs(self.costs(model, modality)) if self.cfg.cost_bias else None
        return route_clip(self.module, frames, modality, self.cfg, rel, model.cfg.patch_size)

    def logit_bias(self, model: TinyVLM, modality: str) -> torch.Tensor | None:
        """(K,) offsets `route_frame` subtracts from the router's logits (cost_bias · c_k / c_full), or None."""
        return self.cfg.cost_bias * relative_costs(self.costs(model, modality)) if self.cfg.cost_bias else None

    @torch.no_grad()
    def visual_tokens(self, model: TinyVLM, frames: torch.Tensor, modality: str, clip: Clip | None = None,
                      count: bool = False) -> tuple[VisualTokens, FrameStats]:
        """frames (1, T, C, H, W) → dense-layout VisualTokens (N per frame) + per-frame accounting."""
        if frames.shape[0] != 1:
            raise ValueError(f"ANC routes one clip at a time (batch 1), got batch {frames.shape[0]}")
        self.module.check_compatible(model)
        x = frames[0]  # (T, C, H, W)
        t_len, n = x.shape[0], model.cfg.num_patches
        costs = self.costs(model, modality)
        route = self.route(model, x, modality)
        choices = route.choices
        flops = np.zeros(t_len)
        ms = route.router_ms.copy()
        enc = None
        for k, name in enumerate(BRANCHES):
            if k == SKIP or not (choices == k).any():
                continue
            idx = np.flatnonzero(choices == k)
            sub = x if len(idx) == t_len else x[torch.from_numpy(idx)]  # (F_k, C, H, W)
            t0 = time.perf_counter()
            if count:
                (out, _), fl = count_flops(run_branch, model, self.module, name, sub, modality)
            else:
                out, _ = run_branch(model, self.module, name, sub, modality)
                fl = costs[name] * len(idx)
            ms[idx] += (time.perf_counter() - t0) * 1e3 / len(idx)
            flops[idx] = fl / len(idx)
            if len(idx) == t_len:
                enc = out
            else:
                if enc is None:
                    enc = out.new_empty(t_len, *out.shape[1:])
                enc[torch.from_numpy(idx)] = out
        for t in np.flatnonzero(choices == SKIP):  # frame 0 is never a skip, so t − 1 is always filled
            enc[t] = enc[t - 1]
        flops += costs["router"]  # measured once per model (tiny: a few kFLOPs)
        computed = np.where(choices == SKIP, 0, n)
        stats = FrameStats(computed, np.full(t_len, n), flops, ms)
        rec = active_recorder()
        if rec is not None:
            self._trace(rec, route, flops, ms)
        return VisualTokens.dense(enc[None]), stats  # (1, T, N, D)

    @staticmethod
    def _trace(rec, route: Route, flops: np.ndarray, ms: np.ndarray) -> None:
        t_len, k = route.probs.shape
        rec.log_grid("router_feature", route.features, site="anc.router")
        rec.log("route_prob", route.probs.ravel(), site="anc.router",
                frame=np.repeat(np.arange(t_len), k), target=np.tile(np.arange(k), t_len))
        frames = np.arange(t_len)
        rec.log("route_choice", route.choices.astype(np.float64), site="anc.router", frame=frames,
                target=route.choices)
        rec.log("flops", flops, site="anc", frame=frames, target=route.choices)
        rec.log("latency_ms", route.router_ms, site="anc.router", frame=frames)
        rec.log("latency_ms", ms - route.router_ms, site="anc.branch", frame=frames, target=route.choices)


def shipped_path(model: TinyVLM) -> Path:
    """Where `apply` looks for the model's ANC weights: data/weights/anc-<model name>.safetensors."""
    return weights_dir() / f"anc-{model.cfg.name}.safetensors"


def apply(model: TinyVLM, cfg: ANCConfig = ANCConfig(), module: ANCModule | None = None) -> TinyVLM:
    """Attach ANC to `model` and return the model (like `pipeline.attach`; the method is `model.compression`).
    Safe to call twice (the new one replaces the old); `pipeline.detach` undoes it.

    module=None loads `cfg.weights` or the shipped `anc-<model name>.safetensors` (CheckpointError if absent).
    """
    if module is None:
        module = load_anc(cfg.weights or shipped_path(model))
    module.check_compatible(model)
    return attach(model, ANC(module, cfg))
