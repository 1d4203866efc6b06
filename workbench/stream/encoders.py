"""Per-frame encoders for streams: each method's frame step with its state carried for the whole stream.

`frame_encoder(method, model, modality)` → an encoder with `start()` (a fresh per-stream state) and
`step(state, frame)` → `FrameOut` (the frame's N encoder tokens, which patches were computed, the branch, the
analytic FLOPs, the time). `push(state, frame)` → the FrameOuts ready after this frame (the runner's call):
one per frame, except STTF with `chunk` c > 1, which gates each frame as it arrives and encodes c at a time
(`STTF.chunk_step`); `flush(state)` encodes what waits (the runner calls it before a window is captioned). The state objects are the methods' own (`STTFState`, `RouterState`,
`CombinedState`), created once per stream and never reset at window edges: a window's tokens are built from
what the stream carried (`workbench.stream.window`), so nothing is re-encoded because a window started.

- dense: every frame through the dense encoder (batch 1; on CPU bit-identical to the batched clip encoder).
- STTF: `STTF.frame_step` (gate + partial encoding against the stream's caches).
- ANC: `anc.route_frame` (router state carried) then the chosen branch; skip reuses the previous frame's tokens.
- STTF+ANC: `route_frame`, then `STTFANC.frame_step` within the branch.

    >>> import torch
    >>> from workbench.models.registry import create_model
    >>> from workbench.methods.sttf import STTF, STTFConfig
    >>> model = create_model("tinyvlm-debug")
    >>> enc = frame_encoder(STTF(STTFConfig(tau=0.1)), model, "rgb")
    >>> st = enc.start()
    >>> outs = [enc.step(st, torch.zeros(3, 112, 112)) for _ in range(2)]
    >>> [int(o.computed.sum()) for o in outs], outs[1].tokens.shape
    ([196, 0], torch.Size([196, 32]))
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from workbench.errors import InputError
from workbench.eval.flops import encoder_flops
from workbench.methods.anc import ANC, RouterState, route_frame
from workbench.methods.anc_modules import BRANCHES, SKIP, run_branch
from workbench.methods.combined import STTFANC, CombinedState
from workbench.methods.ops.gates import patch_pixels
from workbench.methods.sttf import STTF, STTFState, chunk_flops, frame_flops
from workbench.models.tinyvlm import TinyVLM
from workbench.pipeline import Dense


@dataclass
class FrameOut:
    tokens: torch.Tensor  # (N, D) encoder output of the frame (reused patches hold their cached output)
    computed: torch.Tensor  # (N,) bool, patches that went through the encoder at this frame
    key: bool  # encoded densely (first frame, keyframe, scene cut, branch switch)
    branch: int = -1  # ANC branch index (−1: no router)
    flops: float = 0.0  # analytic encoder FLOPs of this frame
    ms: float = 0.0  # wall time of this frame's method work (gate, router, encoder)


@dataclass
class _Encoder:
    model: TinyVLM
    modality: str
    fuse: bool = False  # the decoder gets one token per run of a reused patch (STTF fusion)

    def start(self):
        return None

    def push(self, state, frame: torch.Tensor, rate: torch.Tensor | None = None) -> list[FrameOut]:
        return [self.step(state, frame, rate)]

    def flush(self, state) -> list[FrameOut]:
        return []

    def _frame(self, frame: torch.Tensor) -> torch.Tensor:
        return frame[None] if frame.ndim == 3 else frame  # (C, H, W) → (1, C, H, W)

    def _dense_flops(self) -> float:
        c = self.model.cfg
        pdim = self.model.encoder.stems[self.modality].in_features
        return float(encoder_flops(c.num_patches, 1, c.enc_dim, c.enc_depth, c.enc_mlp_ratio, pdim))


class DenseEncoder(_Encoder):
    def step(self, state, frame: torch.Tensor, rate: torch.Tensor | None = None) -> FrameOut:
        t0 = time.perf_counter()
        out = self.model.encoder(self._frame(frame), self.modality)  # (1, N, D)
        n = out.shape[1]
        return FrameOut(out[0], torch.ones(n, dtype=torch.bool), True, -1, self._dense_flops(),
                        (time.perf_counter() - t0) * 1e3)


@dataclass
class STTFEncoder(_Encoder):
    method: STTF = field(default_factory=STTF)

    def start(self) -> STTFState:
        return STTFState()

    def _check(self, rate) -> None:
        if self.method.cfg.source == "events" and rate is None:
            raise InputError("sttf", "source 'events' needs an event stream (its per-patch event rates); "
                                     "use source='pixels' or 'embedding' for video")

    def push(self, state: STTFState, frame: torch.Tensor, rate: torch.Tensor | None = None) -> list[FrameOut]:
        if self.method.cfg.chunk == 1:
            return super().push(state, frame, rate)
        self._check(rate)
        state.pending.append((self._frame(frame)[0], None if rate is None else rate.reshape(-1)))
        return self.flush(state) if len(state.pending) >= self.method.cfg.chunk else []

    def flush(self, state: STTFState) -> list[FrameOut]:
        """Encode the frames waiting for their chunk (all at once) → their FrameOuts, in order."""
        if not state.pending:
            return []
        cfg = self.method.cfg
        frames = torch.stack([f for f, _ in state.pending])  # (c, C, H, W)
        rates = None if state.pending[0][1] is None else torch.stack([r for _, r in state.pending])  # (c, N)
        state.pending = []
        t0 = time.perf_counter()
        steps, out = self.method.chunk_step(self.model, state, frames, self.modality, rates, cfg.rule())
        ms = (time.perf_counter() - t0) * 1e3
        fl, share = chunk_flops(self.model, steps, cfg.source, self.modality)
        return [FrameOut(out[i], g.mask[0], bool(g.key[0]), -1, float(fl[i]), float(ms * share[i]))
                for i, g in enumerate(steps)]

    def step(self, state: STTFState, frame: torch.Tensor, rate: torch.Tensor | None = None) -> FrameOut:
        cfg = self.method.cfg
        self._check(rate)
        t0 = time.perf_counter()
        g, out = self.method.frame_step(self.model, state, self._frame(frame), self.modality,
                                        None if rate is None else rate.reshape(1, -1), cfg.rule())
        ms = (time.perf_counter() - t0) * 1e3
        mask = g.mask[0]
        fl = frame_flops(self.model, [int(mask.sum())], [bool(g.key[0])], cfg.source, self.modality)[0]
        return FrameOut(out[0], mask, bool(g.key[0]), -1, float(fl), ms)


@dataclass
class RoutedState:
    router: RouterState
    prev: torch.Tensor | None = None  # (1, N, D) tokens of the previous frame
    inner: CombinedState | None = None  # STTF+ANC only


@dataclass
class ANCEncoder(_Encoder):
    method: ANC | STTFANC | None = None

    @property
    def anc(self) -> ANC:
        return self.method.anc if isinstance(self.method, STTFANC) else self.method

    def start(self) -> RoutedState:
        inner = CombinedState.start(self.model) if isinstance(self.method, STTFANC) else None
        return RoutedState(RouterState.start(1), None, inner)

    def step(self, state: RoutedState, frame: torch.Tensor, rate: torch.Tensor | None = None) -> FrameOut:
        anc, model = self.anc, self.model
        x = self._frame(frame)
        costs = anc.costs(model, self.modality)
        r = route_frame(anc.module, state.router, x, self.modality, anc.cfg, anc.logit_bias(model, self.modality),
                        model.cfg.patch_size)
        n = model.cfg.num_patches
        if isinstance(self.method, STTFANC):
            src = self.method.sttf.source
            if src == "events" and rate is None:
                raise InputError("sttf+anc", "source 'events' needs an event stream; use source='pixels' for video")
            feat = patch_pixels(x[:, None], model.cfg.patch_size)[:, 0] if src == "pixels" else None  # (1, N, F)
            s = self.method.frame_step(model, state.inner, x, r.choice, self.modality, feat,
                                       None if rate is None else rate.reshape(1, -1), costs)
            state.prev = s.out
            return FrameOut(s.out[0], s.mask, s.key, r.choice, s.flops + costs["router"], r.ms + s.ms)
        t0 = time.perf_counter()
        if r.choice == SKIP:
            out, computed = state.prev, torch.zeros(n, dtype=torch.bool)
        else:
            out, _ = run_branch(model, anc.module, BRANCHES[r.choice], x, self.modality)
            computed = torch.ones(n, dtype=torch.bool)
        state.prev = out
        ms = r.ms + (time.perf_counter() - t0) * 1e3
        return FrameOut(out[0], computed, r.choice != SKIP, r.choice, float(costs[BRANCHES[r.choice]] + costs["router"]),
                        ms)


def frame_encoder(method, model: TinyVLM, modality: str):
    """The per-frame encoder of `method` (Dense, STTF, ANC or STTF+ANC); InputError for a method that has no
    streaming mode."""
    method = method or Dense()
    if isinstance(method, Dense):
        return DenseEncoder(model, modality)
    if isinstance(method, STTF):
        return STTFEncoder(model, modality, method.cfg.fuse, method)
    if isinstance(method, STTFANC):
        method.check(model)
        return ANCEncoder(model, modality, method.sttf.fuse, method)
    if isinstance(method, ANC):
        method.module.check_compatible(model)
        return ANCEncoder(model, modality, False, method)
    raise InputError("method", f"{getattr(method, 'name', type(method).__name__)} has no streaming mode yet "
                               "(streams run dense, sttf, anc and sttf+anc)")


def as_tensor(pixels: np.ndarray) -> torch.Tensor:
    """A stream frame's pixels (C, H, W) as a float32 tensor (no copy when already contiguous float32)."""
    return torch.from_numpy(np.ascontiguousarray(pixels, np.float32))
