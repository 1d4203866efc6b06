"""Callbacks of the dashboard's "question" tab (decoder-side pruning): plain functions, no gradio imports.

`analyse_prune` answers one question about one input dense and under a decoder-side method (SparseVLM, FastV,
random, or STTF + one of them), both traced, reusing the session's decoded input and earlier runs;
`prune_views` draws the linked figures at one frame and one decoder layer; `answer_markdown` the answers.

    >>> from workbench.ui.session import SessionCache
    >>> a = analyse_prune(None, "slow motion", PruneSpec("sparsevlm", "what color is the background", keep=0.6),
    ...                   SessionCache(), "tinyvlm-debug", 8)
    >>> a.result.method, round(a.result.decoder_keep, 2), sorted(vars(prune_views(a, 2, 0)))
    ('sparsevlm', 0.6, ['layers', 'overlay', 'per_frame', 'raters'])
"""
from __future__ import annotations

from dataclasses import dataclass, field

import plotly.graph_objects as go

from workbench.data.clip import Clip
from workbench.errors import InputError
from workbench.eval.qa import answers_match
from workbench.methods.build import MethodKnobs, build_method
from workbench.models.tokenizer import normalise_text
from workbench.pipeline import Dense, Description, describe
from workbench.ui.callbacks import get_model, load_input
from workbench.ui.inputs import FRAME_CHOICES, file_digest, input_key
from workbench.ui.session import SessionCache
from workbench.viz.decoder import decoder_overlay, kept_per_frame, layer_tokens, prompt_raters

PRUNE_METHODS = {"SparseVLM": "sparsevlm", "FastV": "fastv", "random (same depths)": "random-prune",
                 "STTF + SparseVLM": "sttf+sparsevlm", "STTF + FastV": "sttf+fastv"}
SETTINGS = "settings"


@dataclass(frozen=True)
class PruneSpec:
    """The tab's knobs: method name, the question, keep (the paper's count), SparseVLM's rule and recycling,
    FastV's depth K, STTF's τ (for the stacked modes) and optional per-depth token counts (replace keep)."""

    method: str = "sparsevlm"
    question: str = ""
    keep: float = 0.22
    rule: str = "fixed"
    recycle: bool = True
    K: float = 0.5
    tau: float = 0.05
    counts: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.method not in PRUNE_METHODS.values():
            raise InputError(SETTINGS, f"method must be one of {', '.join(PRUNE_METHODS)}, not {self.method!r}")
        if not normalise_text(self.question):
            raise InputError("question", "type a question (e.g. 'what color is the star'): the decoder-side methods "
                                         "keep the visual tokens the question needs")
        if not 0 < self.keep <= 1:
            raise InputError(SETTINGS, f"keep must be a fraction in (0, 1], not {self.keep}")
        if self.tau < 0:
            raise InputError(SETTINGS, f"STTF threshold τ must be ≥ 0, not {self.tau}")

    @classmethod
    def from_ui(cls, label: str, question: str, keep: float, rule: str, recycle: bool, K: float, tau: float,
                counts: str = "") -> "PruneSpec":
        """From the tab's widgets (method label, counts as '300, 150, 80' or empty)."""
        method = PRUNE_METHODS.get(label, str(label).strip().lower())
        text = (counts or "").replace(" ", "")
        try:
            parsed = tuple(int(x) for x in text.split(",") if x) or None
        except ValueError:
            raise InputError(SETTINGS, f"token counts must be whole numbers separated by commas, not {counts!r}") from None
        return cls(method, str(question or ""), float(keep), rule, bool(recycle), float(K), float(tau), parsed)

    def knobs(self) -> MethodKnobs:
        return MethodKnobs(tau=self.tau, keep=None if self.counts else self.keep, rule=self.rule,
                           counts=self.counts, recycle=self.recycle, K=self.K)

    def relevant(self) -> tuple:
        """The cache key of a run: every knob that changes it (the question included)."""
        return ("prune", self.method, normalise_text(self.question), self.keep, self.rule, self.recycle, self.K,
                self.tau if self.method.startswith("sttf") else None, self.counts)

    def label(self) -> str:
        name = next(k for k, v in PRUNE_METHODS.items() if v == self.method)
        budget = f"counts {', '.join(map(str, self.counts))}" if self.counts else f"keep {self.keep:.0%}"
        extra = {"sparsevlm": f"{self.rule} rule{'' if self.recycle else ', no recycling'}", "fastv": f"K = {self.K:g}"}
        part = next((v for k, v in extra.items() if self.method.endswith(k)), "")
        sttf = f"τ = {self.tau:g}" if self.method.startswith("sttf") else ""
        return f"{name} ({'; '.join(x for x in (budget, part, sttf) if x)})"


@dataclass
class PruneAnalysis:
    key: str
    clip: Clip
    model_name: str
    spec: PruneSpec
    dense: Description
    result: Description
    words: list[str] = field(default_factory=list)  # the prompt's tokens as the decoder sees them
    truth: str | None = None  # the clip's answer when the question is one of its QA pairs

    @property
    def num_frames(self) -> int:
        return self.clip.num_frames


@dataclass
class PruneViews:
    overlay: go.Figure
    layers: go.Figure
    raters: go.Figure
    per_frame: go.Figure


def _noop(*_a, **_k):
    return None


def analyse_prune(upload: str | None, sample: str | None, spec: PruneSpec, cache: SessionCache,
                  model_name: str = "tinyvlm-shapes", n_frames: int = 16, progress=None) -> PruneAnalysis:
    """Answer `spec.question` about the input dense and under `spec` (both traced); InputError on bad input or
    knobs (nothing is computed for impossible knobs: the method is built and checked first)."""
    progress = progress or _noop
    if int(n_frames) not in FRAME_CHOICES:
        raise InputError("frames", f"choose {' or '.join(map(str, FRAME_CHOICES))} frames, not {n_frames}")
    if upload:
        key = input_key(cache.digest(upload, file_digest), None, int(n_frames))
    elif sample:
        key = input_key(None, sample, int(n_frames))
    else:
        raise InputError("input", "upload a video or an event file, or pick a sample")
    model = get_model(model_name)
    method = build_method(spec.method, model, spec.knobs())  # raises before any work if the knobs cannot run
    progress(0.05, desc="reading the input")
    clip = cache.clip(key, lambda: load_input(upload, sample, int(n_frames)))
    q = spec.question
    progress(0.3, desc="dense answer")
    dense = cache.method_result(key, model_name, RunKey(("dense-answer", normalise_text(q))),
                                lambda: describe(model, clip, Dense(), prompt=q, trace=True))
    progress(0.6, desc=f"answering under {spec.label()}")
    result = cache.method_result(key, model_name, spec, lambda: describe(model, clip, method, prompt=q, trace=True))
    tok = model.tokenizer
    words = model.prompt_words(q) if hasattr(model, "prompt_words") else [tok.vocab[i] for i in tok.prompt_ids(q)]
    truth = next((a for qq, a in clip.qa if normalise_text(qq) == normalise_text(q)), None)
    progress(1.0, desc="done")
    return PruneAnalysis(key, clip, model_name, spec, dense, result, words, truth)


@dataclass(frozen=True)
class RunKey:
    """A session-cache key for a run that is not described by a spec (the dense answer to one question)."""

    parts: tuple

    def relevant(self) -> tuple:
        return self.parts


def prune_views(a: PruneAnalysis, frame: int = 0, layer: int = 0, view: str = "decision") -> PruneViews:
    """The tab's linked figures at one frame and one decoder layer (−1 = the decoder's input)."""
    t = max(0, min(int(frame or 0), a.num_frames - 1))
    model = get_model(a.model_name)
    depth = len(model.decoder.blocks)
    lay = max(-1, min(int(layer), depth - 1))
    trace = a.result.trace
    step = getattr(model.cfg, "frames_per_step", 1)  # Hugging Face models: Qwen2-VL's tokens span frame pairs
    ft, nt = t // step, -(-a.num_frames // step)
    return PruneViews(decoder_overlay(a.clip.frames[t], trace, ft, lay, view), layer_tokens(trace, a.dense.trace),
                      prompt_raters(trace, a.words), kept_per_frame(trace, lay, ft, nt))


def answer_markdown(a: PruneAnalysis) -> str:
    """Dense vs pruned answer (and the truth, when the question is the clip's), with the cost beside them."""
    d, r = a.dense, a.result
    def mark(ans):
        return "" if a.truth is None else (" ✓" if answers_match(ans, a.truth) else " ✗")
    lines = [f"**question** {a.spec.question}"]
    if a.truth is not None:
        lines.append(f"**truth** {a.truth}")
    lines.append(f"**dense** {d.caption or '∅'}{mark(d.caption)} · **{a.spec.label()}** {r.caption or '∅'}{mark(r.caption)}")
    df, rf = d.decoder.flops, r.decoder.flops
    ratio = f"{rf / df:.3f}" if df else "–"
    lines.append(f"**visual tokens** {d.tokens_to_decoder} enter the decoder · kept {r.decoder_keep:.1%} (mean over "
                 f"decoder sublayers, the SparseVLM paper's count) · the last layer sees "
                 f"{r.last_layer_tokens_per_frame * a.num_frames:.0f} · prefill FLOPs × {ratio} of dense · prefill "
                 f"{r.timings_ms['prefill_ms']:.0f} ms (dense {d.timings_ms['prefill_ms']:.0f} ms; both traced, "
                 "so counted and slower than untraced)")
    if a.clip.meta.get("note"):
        lines.append(f"_{a.clip.meta['note']}_")
    return "\n\n".join(lines)
