"""Callbacks of the dashboard's "compare" tab: one clip, one budget, every method — plain functions, no gradio.

`analyse_compare` runs the input under every chosen method set to the same budget (`methods/budget.at_budget`:
B visual tokens per frame reaching the decoder; decoder-side: the paper's mean over layers) — each once traced
(its decisions and FLOPs) and once timed beside a dense run (interleaved, so both see the same machine) — and
answers the question, or captions the clip when there is none. `compare_views` draws the frame-grid panels at
one frame, the cost bars and the Pareto plot of the last sweep on disk; `outputs_markdown` the table of outputs.

    >>> a = analyse_compare(None, "slow motion", 49, ("tome", "fastv"), "", "tinyvlm-debug", 8)
    >>> [r["method"] for r in a.rows], sorted(vars(compare_views(a, 3)))
    (['dense', 'tome', 'fastv'], ['costs', 'pareto', 'tokens'])
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import plotly.graph_objects as go
import polars as pl

from workbench.data.clip import Clip
from workbench.errors import InputError
from workbench.eval.qa import answers_match
from workbench.methods.budget import BUDGET_METHODS, at_budget
from workbench.models.tokenizer import normalise_text
from workbench.pipeline import Dense, Description, describe
from workbench.ui.callbacks import get_model, load_input
from workbench.ui.inputs import FRAME_CHOICES
from workbench.viz.compare import compare_panels, cost_bars, method_grid
from workbench.viz.pareto import pareto_figure
from workbench.viz.style import message_figure

COMPARE_METHODS = ("sttf", "eventful", "tome", "visionzip", "random", "pool", "fastv", "sparsevlm", "random-prune")
SWEEP_DIR = Path("data/generated/sweep")  # where `workbench sweep` writes by default


@dataclass
class CompareAnalysis:
    clip: Clip
    budget: float
    question: str  # "" = captions
    truth: str | None
    runs: dict[str, Description] = field(default_factory=dict)  # method → traced run
    rows: list[dict] = field(default_factory=list)  # method, tokens, FLOPs, latency, output
    sweep_dir: Path = SWEEP_DIR

    @property
    def num_frames(self) -> int:
        return self.clip.num_frames


@dataclass
class CompareViews:
    tokens: go.Figure
    costs: go.Figure
    pareto: go.Figure


def _noop(*_a, **_k):
    return None


def analyse_compare(upload: str | None, sample: str | None, budget: float, methods, question: str = "",
                    model_name: str = "tinyvlm-shapes", n_frames: int = 16, progress=None,
                    sweep_dir: str | Path = SWEEP_DIR) -> CompareAnalysis:
    """Every method of `methods` (dense always) on the input at `budget` tokens per frame; InputError on bad
    knobs before any work."""
    progress = progress or _noop
    if int(n_frames) not in FRAME_CHOICES:
        raise InputError("frames", f"choose {' or '.join(map(str, FRAME_CHOICES))} frames, not {n_frames}")
    methods = [m for m in (methods or []) if m != "dense"]
    bad = [m for m in methods if m not in BUDGET_METHODS]
    if bad or not methods:
        raise InputError("methods", f"pick at least one method among {', '.join(COMPARE_METHODS)}"
                         + (f" (unknown: {', '.join(bad)})" if bad else ""))
    model = get_model(model_name)
    if not 1 <= float(budget) <= model.cfg.num_patches:
        raise InputError("budget", f"the budget must be 1–{model.cfg.num_patches} tokens per frame, not {budget}")
    built = {"dense": Dense()}
    for m in methods:
        built[m] = at_budget(m, float(budget), model, frames=int(n_frames))  # InputError on impossible knobs
    progress(0.05, desc="reading the input")
    clip = load_input(upload, sample, int(n_frames))
    q = (question or "").strip()
    prompt = q or None
    truth = next((a for qq, a in clip.qa if normalise_text(qq) == normalise_text(q)), None) if q else None
    a = CompareAnalysis(clip, float(budget), q, truth, sweep_dir=Path(sweep_dir))
    for i, (name, method) in enumerate(built.items()):
        progress(0.1 + 0.85 * i / len(built), desc=f"{name}")
        d = describe(model, clip, method, prompt=prompt, trace=True)
        t0 = time.perf_counter()
        describe(model, clip, Dense(), prompt=prompt)
        dense_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        describe(model, clip, method, prompt=prompt)
        ms = (time.perf_counter() - t0) * 1e3
        keep = d.decoder_keep if getattr(method, "site", None) == "decoder" else 1.0
        a.runs[name] = d
        a.rows.append({"method": name, "tokens_per_frame": d.tokens_per_frame * keep,
                       "last_layer_per_frame": d.last_layer_tokens_per_frame,
                       "encoder_flops": float(d.stats.encoder_flops.sum()), "prefill_flops": float(d.decoder.flops),
                       "latency_ms": ms, "dense_latency_ms": dense_ms, "output": d.caption,
                       "correct": None if truth is None else answers_match(d.caption, truth)})
    progress(1.0, desc="done")
    return a


def compare_views(a: CompareAnalysis, frame: int = 0) -> CompareViews:
    """The frame-grid panels at `frame`, the cost bars, the Pareto plot of the last sweep."""
    t = max(0, min(int(frame or 0), a.num_frames - 1))
    grids = {name: method_grid(d.trace, t) for name, d in a.runs.items()}
    panels = compare_panels(a.clip.frames[t], grids)
    panels.update_layout(title=dict(text=f"frame {t} · budget {a.budget:g} tokens per frame (decoder side: what its "
                                         "last layer keeps)"))
    return CompareViews(panels, cost_bars(pl.DataFrame(a.rows)), last_sweep_figure(a.sweep_dir))


def last_sweep_figure(sweep_dir: str | Path = SWEEP_DIR, y: str = "cider", x: str = "flops_ratio") -> go.Figure:
    """The Pareto plot of the sweep last written to `sweep_dir`, or a message saying how to make one."""
    p = Path(sweep_dir) / "summary.parquet"
    if not p.is_file():
        return message_figure(f"no sweep in {sweep_dir} yet: run `workbench sweep --methods … --budget …`",
                              "Pareto plot of the last sweep")
    s = pl.read_parquet(p)
    if s[y].null_count() == s.height:
        y = "qa_accuracy" if s["qa_accuracy"].null_count() < s.height else "gesture_accuracy"
    return pareto_figure(s, y, x, title=f"last sweep ({sweep_dir}): {y} vs {x}")


def outputs_markdown(a: CompareAnalysis) -> str:
    """The methods' captions or answers beside their tokens, FLOPs and latency ratios to dense."""
    dense = a.rows[0]
    d_flops = dense["encoder_flops"] + dense["prefill_flops"]
    what = f"**question** {a.question}" + (f" · **truth** {a.truth}" if a.truth else "") if a.question else \
        "**captions** (no question given)"
    lines = [what, "", "| method | tokens / frame | last layer | FLOPs × dense | latency × dense | output |",
             "|---|---|---|---|---|---|"]
    for r in a.rows:
        mark = "" if r["correct"] is None else (" ✓" if r["correct"] else " ✗")
        flops = (r["encoder_flops"] + r["prefill_flops"]) / d_flops if d_flops else float("nan")
        lines.append(f"| {r['method']} | {r['tokens_per_frame']:.1f} | {r['last_layer_per_frame']:.1f} | {flops:.3f} | "
                     f"{r['latency_ms'] / r['dense_latency_ms']:.2f} | {r['output'] or '∅'}{mark} |")
    lines.append("")
    lines.append("Tokens per frame reaching the decoder (decoder-side methods: the SparseVLM paper's mean over "
                 "decoder sublayers; *last layer*: what its last layer sees). A method that cannot hit the budget "
                 "shows what it hit. Latency: one timed run of each method right after one of dense (end to end).")
    return "\n".join(lines)
