"""Clip → visual tokens (dense or a method) → caption + gesture, with per-frame accounting and an optional trace.

This is the one inference path shared by the CLI, the app, the evaluation and the benchmarks. Methods plug in
at two sites:

- encoder side: an object with `name`, `config()` and
  `visual_tokens(model, frames, modality, clip, count) -> (VisualTokens, FrameStats)` (Dense, STTF, ANC, …);
- decoder side: an object with `name`, `config()`, `site == "decoder"` and `plan(depth)` (SparseVLM, FastV,
  random; `models/decoder_protocol.py`), applied inside the decoder at prefill.

Composition is the pipeline's job: `Stack(STTF(...), SparseVLM(...))` runs one after the other; a decoder-side
method alone runs on dense visual tokens. Pass a method to `describe(..., method=m)`, or attach it once with
`attach(model, m)` (what a method's `apply(model, cfg)` does; safe to call twice, `detach(model)` undoes it).

    >>> from workbench.models.registry import create_model
    >>> from workbench.data.shapesworld import make_clip
    >>> d = describe(create_model("tinyvlm-debug"), make_clip(0))
    >>> d.tokens_per_frame, d.method
    (196.0, 'dense')
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import torch

from workbench.data.clip import Clip
from workbench.eval.flops import count_flops
from workbench.models.decoding import DecoderStats
from workbench.models.tinyvlm import TinyVLM
from workbench.models.visual_tokens import VisualTokens
from workbench.trace import active_recorder, tracing


@dataclass
class FrameStats:
    """Per-frame accounting (METHODS.md §7). Arrays of length T."""

    tokens_computed: np.ndarray  # tokens that went through the encoder blocks at this frame
    tokens_to_decoder: np.ndarray  # visual tokens entering the decoder whose run starts at this frame
    encoder_flops: np.ndarray  # FlopCounterMode on the actual run (0 when not counted)
    encoder_ms: np.ndarray  # wall time of the encoder work attributed to this frame


@dataclass(frozen=True)
class Dense:
    """The baseline: every token of every frame through every layer."""

    name: str = "dense"

    def config(self) -> dict:
        return {}

    def visual_tokens(self, model: TinyVLM, frames: torch.Tensor, modality: str, clip: Clip | None = None,
                      count: bool = False) -> tuple[VisualTokens, FrameStats]:
        t = frames.shape[1]
        start = time.perf_counter()
        enc = model.encode(frames, modality)
        ms = (time.perf_counter() - start) * 1e3
        flops = count_flops(model.encode, frames, modality)[1] if count else 0
        n = model.cfg.num_patches
        stats = FrameStats(np.full(t, n), np.full(t, n), np.full(t, flops / t), np.full(t, ms / t))
        return VisualTokens.dense(enc), stats


@dataclass(frozen=True)
class Stack:
    """An encoder-side method followed by a decoder-side one, e.g. Stack(STTF(...), SparseVLM(...)): STTF removes
    what did not change over time, SparseVLM what the question does not need."""

    encoder: object
    decoder: object

    def __post_init__(self):
        if getattr(self.encoder, "site", "encoder") != "encoder" or getattr(self.decoder, "site", None) != "decoder":
            raise ValueError("Stack(encoder-side method, decoder-side method)")

    @property
    def name(self) -> str:
        return f"{self.encoder.name}+{self.decoder.name}"

    def config(self) -> dict:
        return {"encoder": {"name": self.encoder.name, **self.encoder.config()},
                "decoder": {"name": self.decoder.name, **self.decoder.config()}}


def split_method(method) -> tuple[object, object | None]:
    """(encoder-side method, decoder-side method or None) of a method, a Stack, or a decoder-side method alone."""
    if isinstance(method, Stack):
        return method.encoder, method.decoder
    if getattr(method, "site", "encoder") == "decoder":
        return Dense(), method
    return method, None


def attach(model: TinyVLM, method) -> TinyVLM:
    """Make `method` the model's default compression (replaces any previous one). Returns the model.

    Stored outside nn.Module's registry, so a method holding its own modules (a router) never leaks into
    the base model's state_dict or checkpoints.
    """
    object.__setattr__(model, "compression", method)
    return model


def detach(model: TinyVLM) -> TinyVLM:
    """Back to dense."""
    object.__setattr__(model, "compression", None)
    return model


def active_method(model: TinyVLM, method=None):
    """The explicit method, else the attached one, else Dense."""
    return method or getattr(model, "compression", None) or Dense()


@dataclass
class Description:
    caption: str
    gesture: str | None
    gesture_probs: dict[str, float] | None
    method: str
    tokens_to_decoder: int
    tokens_per_frame: float
    stats: FrameStats
    timings_ms: dict[str, float]
    run_id: str
    trace: pl.DataFrame | None = None
    run: dict = field(default_factory=dict)
    decoder: DecoderStats | None = None  # visual tokens per decoder sublayer, prefill FLOPs and time

    @property
    def decoder_keep(self) -> float:
        """The paper's count: mean over decoder sublayers of visual tokens entering them ÷ those entering it."""
        return float(self.decoder.keep_fraction[0]) if self.decoder is not None else 1.0

    @property
    def last_layer_tokens_per_frame(self) -> float:
        """Visual tokens the decoder's last layer sees, per frame."""
        n = float(self.decoder.last_layer[0]) if self.decoder is not None else float(self.tokens_to_decoder)
        return n / max(len(self.stats.tokens_computed), 1)


def run_id_for(model: TinyVLM, method, clip: Clip, seed: int = 0) -> str:
    """Stable id of (model config, method config, input, seed)."""
    h = hashlib.sha256()
    h.update(model.cfg.to_json().encode())
    h.update(json.dumps({"method": method.name, **method.config()}, sort_keys=True, default=str).encode())
    h.update(clip.sample_id.encode())
    h.update(np.ascontiguousarray(clip.frames).tobytes()[:1 << 20])
    h.update(str(seed).encode())
    return h.hexdigest()[:12]


@torch.no_grad()
def describe(model: TinyVLM, clip: Clip, method=None, prompt: str | None = None, trace: bool = False,
             count_flops: bool = False, max_new_tokens: int = 48, seed: int = 0) -> Description:
    """Caption (and gesture, for event clips) of one clip under `method` (default dense).

    trace=True records the method's per-frame × token log plus per-frame totals into `Description.trace`
    (and implies FLOP counting). Tracing never changes the outputs.
    """
    method = active_method(model, method)
    model.eval()
    torch.manual_seed(seed)
    rid = run_id_for(model, method, clip, seed)
    if trace:
        with tracing(rid, clip.sample_id) as rec:
            d = _describe(model, clip, method, prompt, True, max_new_tokens, rid)
        d.trace = rec.to_polars()
        return d
    return _describe(model, clip, method, prompt, count_flops, max_new_tokens, rid)


def model_frames(model, clip: Clip) -> torch.Tensor:
    """The clip's frames as the model's encoder takes them: (1, T, C, H, W) for TinyVLM; a Hugging Face model
    (`models/hf`) resizes to its tower's size and may group frames (Qwen2-VL: pairs) → (1, T', C', H', W')."""
    if hasattr(model, "input_frames"):
        return model.input_frames(clip)
    return torch.from_numpy(np.ascontiguousarray(clip.frames))[None]


def _describe(model, clip, method, prompt, count, max_new_tokens, rid) -> Description:
    frames = model_frames(model, clip)
    encoder, decoder = split_method(method)
    vt, stats = encoder.visual_tokens(model, frames, clip.modality, clip, count=count)
    t0 = time.perf_counter()
    gen = model.generate(vt, prompt, max_new_tokens=max_new_tokens, pruner=decoder, count=count,
                         gesture=clip.modality == "events")
    decode_ms = (time.perf_counter() - t0) * 1e3
    gesture = probs = None
    if clip.modality == "events" and gen.gesture_logits is not None:
        p = gen.gesture_logits[0].softmax(-1)
        probs = {c: float(v) for c, v in zip(model.cfg.gesture_classes, p)}
        gesture = model.cfg.gesture_classes[int(p.argmax())]
    n_frames = clip.num_frames
    lm = getattr(gen, "visual_tokens", None)  # HF models: visual tokens that entered the LM (≠ the tower's)
    total = int(vt.counts()[0]) if lm is None else int(lm)
    if getattr(gen, "visual_tokens_per_step", None) is not None:  # … and per tower frame
        stats.tokens_to_decoder = gen.visual_tokens_per_step
    rec = active_recorder()
    if rec is not None:
        site = method.name
        rec.log_frames("tokens_computed", stats.tokens_computed, site=site)
        rec.log_frames("tokens_to_decoder", stats.tokens_to_decoder, site=site)
        rec.log_frames("encoder_flops", stats.encoder_flops, site=site)
        rec.log_frames("latency_ms", stats.encoder_ms, site=site)
        rec.log("decode_ms", decode_ms, site="decoder")
        ds = gen.decoder
        rec.log("prefill_flops", ds.flops, site="decoder")
        rec.log("prefill_flops_analytic", ds.analytic_flops, site="decoder")
        rec.log("latency_ms", ds.ms, site="decoder.prefill")
        if decoder is not None:  # where each decoder visual token comes from (for the per-frame overlays)
            tok = np.arange(vt.num_tokens)
            logged = (("patch", vt.patch[0]), ("t_start", vt.t_start[0]), ("t_end", vt.t_end[0]), ("size", vt.size[0]))
            if getattr(gen, "lm_token_map", None) is not None:  # HF: the LM's tokens on its own grid (patch, frame)
                patch, frame = gen.lm_token_map
                tok = np.arange(len(patch))
                logged = (("patch", patch), ("t_start", frame), ("t_end", frame), ("size", torch.ones(len(patch))))
            for kind, values in logged:
                rec.log(kind, values, site="decoder.visual", token=tok)
    run = {"run_id": rid, "sample_id": clip.sample_id, "model": model.cfg.name, "method": method.name,
           "method_config": method.config(), "modality": clip.modality, "num_frames": n_frames,
           "prompt": prompt or model.cfg.caption_prompt, "caption": gen.texts[0], "gesture": gesture,
           "torch": torch.__version__}
    if decoder is not None:
        run["decoder_keep"] = float(gen.decoder.keep_fraction[0])
    timings = {"encode_ms": float(stats.encoder_ms.sum()), "decode_ms": decode_ms, "prefill_ms": gen.decoder.ms}
    return Description(gen.texts[0], gesture, probs, method.name, total, total / n_frames, stats, timings, rid, None,
                       run, gen.decoder)
