"""STTF — Sparse Temporal Token Fusion (METHODS.md §1), with real compute savings and a per-patch trace.

Per frame, in order: a change score per patch (pixels vs reference, the clip's event rate, or the patch
embedding vs reference), a gate (threshold τ, top-k, or a token budget ρ through a calibrated τ), keyframes
(frame 0, every K-th frame, scene cuts) encoded densely, partial encoding of the recomputed patches against
cached keys/values (`ops/partial.py`), and temporal fusion for the decoder: one token per run of a reused
patch, with the run length as its size (`ops/fusion.fuse_runs`).

Knobs are fields of the frozen `STTFConfig`; sweep with `dataclasses.replace`. Per-clip state (gate
references, ages, encoder caches) lives in an `STTFState` created per clip, never in globals.

Exactness: with τ = 0 (threshold policy) every patch of every frame is recomputed and every run has size 1.
A frame whose patches are all recomputed is encoded with exactly the module calls of the dense encoder, one
frame at a time; the dense baseline encodes the T frames as one batch. On PyTorch's CPU kernels the encoder's
per-frame result does not depend on the batch size, so the visual tokens, logits and caption are bit-identical
to `describe(model, clip)` dense (asserted with torch.equal in tests/test_sttf.py; should a backend ever break
batch invariance, that test is the one that fails). The "clip" schedule (`STTFConfig.schedule`) does not need
batch invariance: a clip whose every patch is recomputed goes through the dense encoder as one batch, exactly
like the baseline. With τ > 0 the approximations are those of partial encoding
(reused tokens do not see updated neighbours; recomputed tokens attend to stale keys/values of reused tokens)
plus the fusion itself (a run's token is the encoder output at its first frame). The embedding score needs the
stem on all N patches of every frame; that work is timed and counted.

    >>> from workbench.models.registry import create_model
    >>> from workbench.data.shapesworld import make_clip
    >>> from workbench.pipeline import describe
    >>> model = apply(create_model("tinyvlm-debug"), STTFConfig(source="pixels", tau=0.05))
    >>> d = describe(model, make_clip(0))
    >>> d.method, d.tokens_per_frame < 196
    ('sttf', True)
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from workbench.data.clip import Clip
from workbench.eval.flops import block_flops, count_flops, encoder_flops
from workbench.methods.ops.fusion import fuse_runs, run_token_index
from workbench.methods.ops.gates import GateRule, GateState, GateStep, gate_step, patch_pixels, run_gate
from workbench.methods.ops.partial import (EncoderCache, embed_patches, encode_chunk, encode_clip, encode_full,
                                           encode_partial)
from workbench.models.encoder import VisionEncoder
from workbench.models.protocol import VLM
from workbench.models.visual_tokens import VisualTokens
from workbench.pipeline import FrameStats, attach
from workbench.trace import active_recorder
from workbench.trace.schema import DECISIONS

SOURCES = ("pixels", "events", "embedding")
POLICIES = ("threshold", "topk", "budget")
SCHEDULES = ("stream", "clip")
SCORE_KIND = {"pixels": "l1", "embedding": "rel_l2", "events": None}


@dataclass(frozen=True)
class STTFConfig:
    """STTF knobs.

    source: change score — "pixels" (mean |x − x_ref| per patch), "events" (the clip's events per pixel in
        the patch during the frame; event clips only), "embedding" (‖e − e_ref‖ / (‖e_ref‖ + ε) after the stem).
    policy: "threshold" (recompute where score ≥ tau), "topk" (k patches per non-key frame), "budget"
        (threshold at a tau calibrated for mean recompute rate rho — build it with `budget_config`).
    keyframe_every: K, dense frames at t % K == 0 (None: only frame 0 and scene cuts).
    scene_cut: a frame with more than this fraction of patches at score ≥ tau is dense (None = off).
    fuse: temporal fusion for the decoder (False: the decoder gets all T·N per-frame tokens, reused ones copied).
    schedule: "stream" — frame by frame as frames arrive (per-frame FLOPs and time measured); "clip" — the same
        computation layer by layer over the whole clip (`ops.partial.encode_clip`: one matmul per layer over all
        recomputed tokens; attention in two padded batches), faster on CPU when the clip is at hand; its
        per-frame FLOPs / ms are the measured clip totals split in proportion to each frame's analytic FLOPs.
    chunk: frames per encoder call in the stream schedule — 1: each frame is encoded as it arrives; c > 1: frames
        are gated as they arrive and encoded c at a time, layer-major against the carried state
        (`ops.partial.encode_chunk`: the same computation as frame by frame, c frames' recomputed tokens in one
        matmul per layer), a latency of up to c − 1 frames for fewer, larger kernel calls; per-frame FLOPs / ms
        are each chunk's totals split like the clip schedule's.
    """

    source: str = "pixels"
    policy: str = "threshold"
    tau: float = 0.05
    k: int = 31
    rho: float | None = None
    keyframe_every: int | None = None
    scene_cut: float | None = 0.5
    fuse: bool = True
    schedule: str = "stream"
    chunk: int = 1

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"STTF source must be one of {SOURCES}, not {self.source!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"STTF policy must be one of {POLICIES}, not {self.policy!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"STTF schedule must be one of {SCHEDULES}, not {self.schedule!r}")
        if self.policy == "budget" and (self.rho is None or not 0 < self.rho <= 1):
            raise ValueError("the budget policy needs rho in (0, 1] and a calibrated tau: use budget_config(...)")
        if isinstance(self.chunk, bool) or not isinstance(self.chunk, int) or not 1 <= self.chunk <= 256:
            raise ValueError(f"STTF chunk must be an int in [1, 256] frames, not {self.chunk!r}")
        self.rule()  # validates tau, k, keyframe_every

    def rule(self) -> GateRule:
        return GateRule("topk" if self.policy == "topk" else "threshold", float(self.tau), int(self.k),
                        self.keyframe_every, self.scene_cut)


@dataclass
class STTFState:
    """Per-clip state: the gate's references and ages, and the encoder's per-layer caches."""

    gate: GateState = field(default_factory=GateState)
    cache: EncoderCache | None = None
    pending: list = field(default_factory=list)  # a stream's frames (and rates) waiting for their chunk

    def clone(self) -> "STTFState":
        return STTFState(self.gate.clone(), None if self.cache is None else self.cache.clone(), list(self.pending))


@dataclass
class EncodeResult:
    """The encoder side of one clip (batch 1)."""

    enc: torch.Tensor  # (1, T, N, D) encoder output per frame (reused patches hold their cached output)
    mask: torch.Tensor  # (1, T, N) bool, recomputed
    score: torch.Tensor  # (1, T, N) change score
    ref_age: torch.Tensor  # (1, T, N) long, frames since the patch was last recomputed (0 = now)
    key: torch.Tensor  # (1, T) bool, dense frames
    cut: torch.Tensor  # (1, T) bool, dense because of a scene cut
    flops: np.ndarray  # (T,) FlopCounterMode FLOPs of each frame's encoder work (0 when not counted)
    ms: np.ndarray  # (T,) wall time of each frame's gate + encoder work


@dataclass
class STTFRun(EncodeResult):
    vt: VisualTokens | None = None
    stats: FrameStats | None = None
    token_index: torch.Tensor | None = None  # (T, N) decoder token each patch-frame went into
    drift: torch.Tensor | None = None  # (T, N) 1 − cos(STTF token, dense token), debug only

    @property
    def recompute_rate(self) -> float:
        return float(self.mask.float().mean())

    def reuse_rate(self, exclude_keyframes: bool = True) -> float:
        """Fraction of patch-frames reused (by default over non-key frames only)."""
        m = self.mask[0][~self.key[0]] if exclude_keyframes else self.mask[0]
        return float((~m).float().mean()) if m.numel() else 0.0


def frame_flops(model: VLM, computed, key, source: str = "pixels", modality: str = "rgb") -> np.ndarray:
    """Analytic encoder FLOPs per frame (METHODS.md §7) for `computed` tokens (T,) and dense frames `key` (T,):
    stem on the recomputed patches (all N for the embedding source) + blocks with R queries over N keys.

        >>> from workbench.models.registry import create_model
        >>> m = create_model("tinyvlm-debug")
        >>> f = frame_flops(m, [196, 10], [True, False])
        >>> int(f[0]) == encoder_flops(196, 1, 32, 1, 4.0, 3 * 8 * 8), bool(f[1] < f[0] / 10)
        (True, True)
    """
    c = model.cfg
    n, d, pdim = c.num_patches, c.enc_dim, model.encoder.stems[modality].in_features
    out = []
    for r, k in zip(np.asarray(computed).tolist(), np.asarray(key).tolist()):
        if k or r == n:
            out.append(encoder_flops(n, 1, d, c.enc_depth, c.enc_mlp_ratio, pdim))
            continue
        stem = 2 * (n if source == "embedding" else r) * pdim * d
        out.append(stem + (c.enc_depth * block_flops(int(r), n, d, int(d * c.enc_mlp_ratio)) if r else 0))
    return np.asarray(out, dtype=np.float64)


def chunk_flops(model: VLM, steps: list[GateStep], source: str, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """(c,) analytic encoder FLOPs of each frame of a chunk and (c,) its share of the chunk's (how a chunk's
    measured cost is split)."""
    fl = frame_flops(model, [int(g.mask.sum()) for g in steps], [bool(g.key[0]) for g in steps], source, modality)
    return fl, fl / fl.sum() if fl.sum() > 0 else np.full(len(steps), 1 / len(steps))


def event_rates(clip: Clip | None, t: int, n: int) -> torch.Tensor:
    """(1, T, N) events per pixel per patch and frame from the clip, or a clear ValueError."""
    rate = None if clip is None else clip.patch_event_rate
    if rate is None:
        what = "no clip was given" if clip is None else f"{clip.sample_id} ({clip.modality}) has no patch_event_rate"
        raise ValueError(f"STTF source 'events' needs an event clip's patch_event_rate, but {what}; "
                         "use source='pixels' or 'embedding' for frame input")
    r = torch.as_tensor(np.asarray(rate, np.float32)).reshape(1, rate.shape[0], -1)  # (T, g, g) → (1, T, N)
    if r.shape[1:] != (t, n):
        raise ValueError(f"{clip.sample_id}: patch_event_rate {tuple(rate.shape)} does not match "
                         f"{t} frames × {n} patches")
    return r


@dataclass(frozen=True)
class STTF:
    """The STTF method plug-in (see `workbench.pipeline`): `visual_tokens(...)`, or `run(...)` for everything."""

    cfg: STTFConfig = field(default_factory=STTFConfig)
    name: str = "sttf"

    def config(self) -> dict:
        return asdict(self.cfg)

    # ---- one frame ---------------------------------------------------------------------------------------
    def frame_step(self, model: VLM, state: STTFState, frame: torch.Tensor, modality: str,
                   rate: torch.Tensor | None, rule: GateRule) -> tuple[GateStep, torch.Tensor]:
        """Gate + encode one frame (1, C, H, W); updates `state`. Returns the gate step and the output (1, N, D).

        The unit of both schedules' streaming order: `encode` calls it per frame of a clip, and
        `workbench.stream` per frame of a stream whose `STTFState` lives as long as the stream.
        """
        enc, src = model.encoder, self.cfg.source
        emb = feat = None
        if src == "pixels":
            feat = patch_pixels(frame[:, None], enc.patch_size)[:, 0]  # (1, 1, N, C·p·p) → (1, N, C·p·p)
        elif src == "embedding":
            emb = feat = embed_patches(enc, frame, modality)  # (1, N, D): the stem on all patches
        g = gate_step(state.gate, rule, feat, rate, SCORE_KIND[src] or "l1")
        idx = g.mask[0].nonzero().squeeze(1)  # (R,)
        if state.cache is None or bool(g.key[0]) or idx.numel() == g.mask.shape[1]:
            x = emb if emb is not None else embed_patches(enc, frame, modality)
            out, state.cache = encode_full(enc, x, modality)  # dense frame: the dense encoder's exact calls
            return g, out
        if emb is not None:
            x = emb[:, idx]
        elif feat is not None:  # the gate's patch pixels are the stem's input: no second patchify of the frame
            x = enc.embed_at(feat[:, idx], idx, modality) if hasattr(enc, "embed_at") else \
                enc.stems[modality](feat[:, idx]) + enc.pos_embed[:, idx]  # (1, R, C·p·p) → (1, R, D)
        else:
            x = embed_patches(enc, frame, modality, idx)
        return g, encode_partial(enc, state.cache, x, idx, modality)

    def chunk_step(self, model: VLM, state: STTFState, frames: torch.Tensor, modality: str,
                   rates: torch.Tensor | None, rule: GateRule) -> tuple[list[GateStep], torch.Tensor]:
        """Gate c frames (c, C, H, W) in order, then encode them at once (`encode_chunk`) against the state's
        cache; updates `state`. Returns the gate steps and the outputs (c, N, D)."""
        enc, src = model.encoder, self.cfg.source
        steps, embs = [], []
        pixels = patch_pixels(frames[None], enc.patch_size)[0] if src == "pixels" else None  # (c, N, C·p·p), once
        for f in range(frames.shape[0]):
            frame, feat = frames[f:f + 1], None
            if src == "pixels":
                feat = pixels[f:f + 1]  # (1, N, C·p·p)
            elif src == "embedding":
                feat = embed_patches(enc, frame, modality)  # (1, N, D)
                embs.append(feat[0])
            steps.append(gate_step(state.gate, rule, feat, None if rates is None else rates[f:f + 1],
                                   SCORE_KIND[src] or "l1"))
        mask = torch.cat([g.mask for g in steps])  # (c, N)
        out, state.cache = encode_chunk(enc, state.cache, frames, modality, mask,
                                        torch.stack(embs) if embs else None, pixels)
        return steps, out

    # ---- a clip --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, model: VLM, frames: torch.Tensor, modality: str, clip: Clip | None = None,
               count: bool = False) -> EncodeResult:
        """Frames (1, T, C, H, W) → per-frame encoder outputs, gate decisions and per-frame cost.

        count=True also measures each frame's FLOPs with FlopCounterMode on a copy of the state (the timed
        run is never under the counter). With schedule="clip" the whole clip is counted and timed at once and
        split over frames in proportion to their analytic FLOPs (`frame_flops`).
        """
        if frames.shape[0] != 1:
            raise ValueError(f"STTF encodes one clip at a time (batch 1), got batch {frames.shape[0]}")
        t, n = frames.shape[1], model.cfg.num_patches
        if t > model.cfg.max_frames:
            raise ValueError(f"{t} frames exceed the model's max_frames={model.cfg.max_frames}")
        rates = event_rates(clip, t, n) if self.cfg.source == "events" else None
        if (self.cfg.schedule == "clip" or self.cfg.chunk > 1) and not isinstance(model.encoder, VisionEncoder):
            raise ValueError("STTF's layer-major schedules (schedule='clip', chunk > 1) run on TinyVLM's encoder "
                             "only; use schedule='stream' with chunk=1 on this vision tower")
        if self.cfg.schedule == "clip":
            return self._encode_clip(model, frames, modality, rates, count)
        if self.cfg.chunk > 1:
            return self._encode_chunked(model, frames, modality, rates, count)
        state, rule = STTFState(), self.cfg.rule()
        steps, outs = [], []
        flops, ms = np.zeros(t), np.zeros(t)
        with torch.inference_mode():  # less dispatch overhead per small op; results are stacked outside
            for f in range(t):
                frame = frames[:, f]  # (1, C, H, W)
                rate = None if rates is None else rates[:, f]  # (1, N)
                if count:
                    flops[f] = count_flops(self.frame_step, model, state.clone(), frame, modality, rate, rule)[1]
                start = time.perf_counter()
                g, out = self.frame_step(model, state, frame, modality, rate, rule)
                ms[f] = (time.perf_counter() - start) * 1e3
                steps.append(g)
                outs.append(out)
        st = lambda name: torch.stack([getattr(s, name) for s in steps], 1)  # noqa: E731  (1, T, ...)
        return EncodeResult(torch.stack(outs, 1), st("mask"), st("score"), st("age"), st("key"), st("cut"), flops, ms)

    def _encode_chunked(self, model, frames, modality, rates, count) -> EncodeResult:
        state, rule, c = STTFState(), self.cfg.rule(), self.cfg.chunk
        t = frames.shape[1]
        steps, outs = [], []
        flops, ms = np.zeros(t), np.zeros(t)
        with torch.inference_mode():
            for s0 in range(0, t, c):
                fr, rt = frames[0, s0:s0 + c], None if rates is None else rates[0, s0:s0 + c]
                total = count_flops(self.chunk_step, model, state.clone(), fr, modality, rt, rule)[1] if count else 0
                start = time.perf_counter()
                gs, out = self.chunk_step(model, state, fr, modality, rt, rule)
                elapsed = (time.perf_counter() - start) * 1e3
                _, share = chunk_flops(model, gs, self.cfg.source, modality)
                flops[s0:s0 + len(gs)], ms[s0:s0 + len(gs)] = total * share, elapsed * share
                steps += gs
                outs.append(out)
        st = lambda name: torch.cat([getattr(s, name) for s in steps])[None]  # noqa: E731  (1, T, ...)
        return EncodeResult(torch.cat(outs)[None].clone(), st("mask"), st("score"), st("age"), st("key"), st("cut"),
                            flops, ms)

    def _clip_work(self, model: VLM, frames: torch.Tensor, modality: str, rates: torch.Tensor | None):
        """Gate every frame, then `encode_clip`: (GateResult, encoder output (1, T, N, D))."""
        enc, src = model.encoder, self.cfg.source
        emb = feats = None
        if src == "pixels":
            feats = patch_pixels(frames, enc.patch_size)  # (1, T, N, C·p·p)
        elif src == "embedding":
            emb = embed_patches(enc, frames[0], modality)  # (T, N, D)
            feats = emb[None]
        g = run_gate(self.cfg.rule(), feats, rates, SCORE_KIND[src] or "l1")
        out, _, _ = encode_clip(enc, frames[0], modality, g.mask[0], emb)
        return g, out[None]

    def _encode_clip(self, model, frames, modality, rates, count) -> EncodeResult:
        total = 0
        with torch.inference_mode():
            if count:
                total = count_flops(self._clip_work, model, frames, modality, rates)[1]
            start = time.perf_counter()
            g, out = self._clip_work(model, frames, modality, rates)
            total_ms = (time.perf_counter() - start) * 1e3
        share = frame_flops(model, g.mask[0].sum(1), g.key[0], self.cfg.source, modality)  # analytic, (T,)
        share = share / share.sum()
        enc = out.clone()  # a normal tensor outside inference mode
        return EncodeResult(enc, g.mask.clone(), g.score.clone(), g.ref_age.clone(), g.key.clone(), g.cut.clone(),
                            total * share, total_ms * share)

    @torch.no_grad()
    def run(self, model: VLM, frames: torch.Tensor, modality: str, clip: Clip | None = None,
            count: bool = False, debug: bool = False) -> STTFRun:
        """`encode` + temporal fusion + per-frame stats (+ drift against dense when debug or a debug recorder).

        Logs the per-frame × patch trace when a recorder is active (zero work otherwise).
        """
        e = self.encode(model, frames, modality, clip, count)
        n = model.cfg.num_patches
        mask = e.mask
        if self.cfg.fuse:
            vt, tok = fuse_runs(e.enc, mask), run_token_index(mask)[0]
            to_dec = mask[0].sum(1).cpu().numpy()
        else:
            t = mask.shape[1]
            vt, tok = VisualTokens.dense(e.enc), torch.arange(t * n).reshape(t, n)
            to_dec = np.full(t, n)
        stats = FrameStats(mask[0].sum(1).cpu().numpy(), to_dec, e.flops, e.ms)
        rec = active_recorder()
        drift = None
        if debug or (rec is not None and rec.debug):  # outside the timed / counted work
            dense = model.encode(frames, modality)  # (1, T, N, D)
            drift = 1 - F.cosine_similarity(e.enc[0], dense[0], dim=-1)  # (T, N)
        if rec is not None:
            self._log(rec, e, tok, drift)
        return STTFRun(**vars(e), vt=vt, stats=stats, token_index=tok, drift=drift)

    def visual_tokens(self, model: VLM, frames: torch.Tensor, modality: str, clip: Clip | None = None,
                      count: bool = False) -> tuple[VisualTokens, FrameStats]:
        r = self.run(model, frames, modality, clip, count)
        return r.vt, r.stats

    def _log(self, rec, e: EncodeResult, tok: torch.Tensor, drift: torch.Tensor | None) -> None:
        gate, mask = "sttf.gate", e.mask[0]
        rec.log_grid("change_score", e.score[0], site=gate)
        rec.log_grid("decision", torch.where(mask, DECISIONS["recomputed"], DECISIONS["reused"]), site=gate)
        rec.log_grid("ref_age", e.ref_age[0], site=gate)
        fused = DECISIONS["fused"] if self.cfg.fuse else DECISIONS["reused"]
        rec.log_grid("decision", torch.where(mask, DECISIONS["recomputed"], fused), site="sttf.fusion", target=tok)
        rec.log_frames("keyframe", e.key[0], site=gate)
        rec.log_frames("scene_cut", e.cut[0], site=gate)
        if drift is not None:
            rec.log_grid("drift", drift, site="sttf.encoder")


def apply(model: VLM, cfg: STTFConfig = STTFConfig()) -> VLM:
    """Attach STTF(cfg) as the model's compression (safe to call again; `pipeline.detach` undoes it).

        >>> from workbench.models.registry import create_model
        >>> apply(create_model("tinyvlm-debug"), STTFConfig(tau=0.1)).compression.cfg.tau
        0.1
    """
    return attach(model, STTF(cfg))
