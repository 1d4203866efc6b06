"""STTF + ANC combined mode (issue 4): ANC picks the branch per frame, STTF decides which tokens inside it
are recomputed.

Per clip: the router routes every frame first (it needs no encoder output, `ANC.route`). Then, frame by
frame:

- skip frame: every token is the previous frame's (0 tokens computed). The STTF gate does not advance its
  references (nothing was recomputed) but every reference ages by one frame.
- light / medium / full frame: the STTF gate scores the patches against their references and picks the
  changed ones; only those go through the chosen branch (`anc.run_branch(token_index=…)`: the stem, the branch's
  blocks with the selected queries attending over cached keys/values of the others, its adapter, the
  encoder's output norm). A frame is encoded densely *within its branch* at frame 0, on STTF keyframes and
  scene cuts, whenever the branch has no cached keys/values yet, and (`dense_on_switch`, default on) when the
  branch differs from the previous computed frame's branch — so tokens of one branch are never mixed with
  keys/values from another inside one frame.
- the decoder gets STTF's temporal fusion (one token per run of a reused patch) when `STTFConfig.fuse`.

One key/value cache of full depth is shared by all branches: medium and full run the same first blocks, so
their cached keys/values for those blocks are the same computation. Approximations, on top of partial
encoding's own (see `sttf.py`): a reused token keeps the output of the branch that last computed it.

With the full branch forced and τ = 0 (threshold) every token of every frame is recomputed by the dense
encoder, which is exactly the dense model (tests/test_combined.py).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from workbench.data.clip import Clip
from workbench.eval.flops import count_flops
from workbench.methods.anc import ANC
from workbench.methods.anc_modules import BRANCHES, SKIP, BranchCache, run_branch
from workbench.methods.ops.fusion import fuse_runs, run_token_index
from workbench.methods.ops.gates import GateState, gate_step, patch_pixels
from workbench.methods.sttf import SCORE_KIND, STTFConfig, event_rates
from workbench.models.tinyvlm import TinyVLM
from workbench.models.visual_tokens import VisualTokens
from workbench.pipeline import FrameStats, attach
from workbench.trace import active_recorder
from workbench.trace.schema import DECISIONS


@dataclass
class CombinedState:
    """Per-clip (or per-stream) state of STTF+ANC: the STTF gate, the shared key/value cache, the previous
    frame's tokens and the branch of the last computed frame."""

    gate: GateState
    cache: BranchCache
    prev: torch.Tensor | None = None  # (1, N, D)
    last_branch: str | None = None

    @classmethod
    def start(cls, model: TinyVLM) -> "CombinedState":
        return cls(GateState(), BranchCache.empty(len(model.encoder.blocks)))


@dataclass
class CombinedStep:
    """One frame of STTF+ANC: its tokens and what the gate did (mask = recomputed patches)."""

    out: torch.Tensor  # (1, N, D)
    mask: torch.Tensor  # (N,) bool
    score: torch.Tensor  # (N,)
    age: torch.Tensor  # (N,) long
    key: bool  # encoded densely within its branch
    flops: float
    ms: float  # wall time of the gate and the branch work (FLOP counting excluded)


@dataclass
class STTFANC:
    """The combined method plug-in (`visual_tokens(...)` like every method; see `workbench.pipeline`)."""

    anc: ANC
    sttf: STTFConfig = field(default_factory=STTFConfig)
    dense_on_switch: bool = True
    name: str = "sttf+anc"

    def config(self) -> dict:
        return {"sttf": asdict(self.sttf), "anc": self.anc.config(), "dense_on_switch": self.dense_on_switch}

    def _frame(self, model: TinyVLM, name: str, frame: torch.Tensor, modality: str, prev: torch.Tensor | None,
               idx: torch.Tensor | None, cache: BranchCache) -> torch.Tensor:
        """One frame (1, C, H, W) through branch `name`: all tokens (idx None) or only `idx` → (1, N, D)."""
        if idx is not None and idx.numel() == 0:  # nothing changed: the frame is the previous one, no work
            return prev
        out, _ = run_branch(model, self.anc.module, name, frame, modality, prev, idx, cache)
        return out

    def check(self, model: TinyVLM) -> None:
        if self.sttf.source == "embedding":
            raise ValueError("STTF+ANC gates on pixels or events (the embedding score would run the full stem)")
        self.anc.module.check_compatible(model)

    def frame_step(self, model: TinyVLM, st: CombinedState, frame: torch.Tensor, choice: int, modality: str,
                   feat: torch.Tensor | None, rate: torch.Tensor | None, costs: dict, count: bool = False) -> CombinedStep:
        """Frame (1, C, H, W) routed to branch `choice`: gate, encode the changed tokens within the branch, update
        `st`. feat: (1, N, F) patch pixels (pixel source) or None; rate: (1, N) event rates (event source)."""
        n = model.cfg.num_patches
        start = time.perf_counter()
        if choice == SKIP:
            st.gate.age = st.gate.age + 1
            st.gate.frame += 1
            return CombinedStep(st.prev, torch.zeros(n, dtype=torch.bool), torch.zeros(n), st.gate.age[0].clone(),
                                False, 0.0, (time.perf_counter() - start) * 1e3)
        g = gate_step(st.gate, self.sttf.rule(), feat, rate, SCORE_KIND[self.sttf.source] or "l1")
        name = BRANCHES[choice]
        dense = (st.prev is None or bool(g.key[0]) or bool(g.mask[0].all())
                 or (self.dense_on_switch and name != st.last_branch))
        if dense:
            g.mask[:] = True
            st.gate.ref = feat.clone() if feat is not None else st.gate.ref
            st.gate.age = torch.zeros_like(g.age)
        idx = None if dense else g.mask[0].nonzero().squeeze(1)
        gate_ms = (time.perf_counter() - start) * 1e3
        if count:  # on a snapshot, outside the timed work
            snapshot = BranchCache(list(st.cache.k), list(st.cache.v))  # run_branch rebinds, never mutates
            _, flops = count_flops(self._frame, model, name, frame, modality, st.prev, idx, snapshot)
        else:
            flops = costs[name] * (1.0 if idx is None else idx.numel() / n)
        start = time.perf_counter()
        st.prev = self._frame(model, name, frame, modality, st.prev, idx, st.cache)
        st.last_branch = name
        ms = gate_ms + (time.perf_counter() - start) * 1e3
        return CombinedStep(st.prev, g.mask[0], g.score[0], st.gate.age[0].clone(), dense, float(flops), ms)

    @torch.no_grad()
    def visual_tokens(self, model: TinyVLM, frames: torch.Tensor, modality: str, clip: Clip | None = None,
                      count: bool = False) -> tuple[VisualTokens, FrameStats]:
        """frames (1, T, C, H, W) → decoder tokens + per-frame accounting (FLOPs measured when `count`)."""
        if frames.shape[0] != 1:
            raise ValueError(f"STTF+ANC encodes one clip at a time (batch 1), got batch {frames.shape[0]}")
        self.check(model)
        x = frames[0]  # (T, C, H, W)
        t_len, n = x.shape[0], model.cfg.num_patches
        costs = self.anc.costs(model, modality)
        route = self.anc.route(model, x, modality)
        rates = event_rates(clip, t_len, n) if self.sttf.source == "events" else None
        feats = patch_pixels(frames, model.cfg.patch_size)[0] if self.sttf.source == "pixels" else None  # (T, N, F)
        st = CombinedState.start(model)
        steps = []
        flops, ms = np.zeros(t_len), route.router_ms.copy()
        for t in range(t_len):
            s = self.frame_step(model, st, x[t: t + 1], int(route.choices[t]), modality,
                                None if feats is None else feats[t: t + 1], None if rates is None else rates[:, t],
                                costs, count)
            ms[t] += s.ms
            flops[t] = s.flops
            steps.append(s)
        flops += costs["router"]
        enc = torch.stack([s.out[0] for s in steps])[None]  # (1, T, N, D)
        mask = torch.stack([s.mask for s in steps])[None]  # (1, T, N)
        if self.sttf.fuse:
            vt, tok = fuse_runs(enc, mask), run_token_index(mask)[0]
            to_dec = mask[0].sum(1).cpu().numpy()
        else:
            vt, tok = VisualTokens.dense(enc), torch.arange(t_len * n).reshape(t_len, n)
            to_dec = np.full(t_len, n)
        stats = FrameStats(mask[0].sum(1).cpu().numpy(), to_dec, flops, ms)
        rec = active_recorder()
        if rec is not None:
            ANC._trace(rec, route, flops, ms)
            gate_site = "sttf.gate"
            rec.log_grid("change_score", torch.stack([s.score for s in steps]), site=gate_site)
            rec.log_grid("decision", torch.where(mask[0], DECISIONS["recomputed"], DECISIONS["reused"]),
                         site=gate_site)
            rec.log_grid("ref_age", torch.stack([s.age for s in steps]), site=gate_site)
            rec.log_frames("keyframe", np.array([s.key for s in steps], dtype=np.float64), site=gate_site)
            fused = DECISIONS["fused"] if self.sttf.fuse else DECISIONS["reused"]
            rec.log_grid("decision", torch.where(mask[0], DECISIONS["recomputed"], fused), site="sttf.fusion",
                         target=tok)
        return vt, stats


def apply(model: TinyVLM, sttf: STTFConfig = STTFConfig(), anc: ANC | None = None, **anc_cfg) -> TinyVLM:
    """Attach STTF+ANC (the shipped ANC module when `anc` is None; `anc_cfg` → ANCConfig fields)."""
    if anc is None:
        from workbench.methods.anc import ANCConfig, load_anc, shipped_path
        anc = ANC(load_anc(shipped_path(model)), ANCConfig(**anc_cfg))
    return attach(model, STTFANC(anc, sttf))
