"""One cell of a sweep, start to finish, in whatever process runs it (a local pool worker or a Ray task).

`run_cell(cell)` makes the clip (a ShapesWorld seed: caption + every QA pair; a gesture seed: caption + the
gesture head's class), rebuilds the method from the cell's resolved config, and measures:

- one counted run (`pipeline.describe(count_flops=True)`): the caption, the visual tokens reaching the decoder
  (and, for decoder-side methods, the paper's mean over sublayers and what the last layer sees), encoder FLOPs
  by FlopCounterMode beside the analytic count (METHODS.md §7), prefill FLOPs both ways, and the tokens entering
  every decoder sublayer;
- the answers to the clip's questions (the encoder side once, then each question through the decoder side);
- latency: the method and dense alternated `repeats` times in this process, the median of each (end to end:
  encoder, prefill, greedy caption), so both see the same machine state.

It returns one flat row (`ROW_SCHEMA`, plain values, the same whichever executor ran it) and, when the cell
asks for it, the run's trace (the table and its run metadata; the driver writes it). Models are loaded once per process.

    >>> from workbench.models.registry import create_model
    >>> from workbench.sweep.cells import SweepSpec, plan_cells
    >>> cell = plan_cells(SweepSpec(("pool",), (49.0,), range(0, 1), frames=8, model="tinyvlm-debug",
    ...                             repeats=1), create_model("tinyvlm-debug"))[-1]
    >>> row, trace = run_cell(cell)
    >>> row["method"], row["tokens_per_frame"], trace is None
    ('pool', 49.0, True)
"""
from __future__ import annotations

import json
import statistics
import time
from functools import lru_cache

import numpy as np
import polars as pl
import torch

from workbench.eval.flops import encoder_flops
from workbench.eval.qa import answers_match
from workbench.sweep.cells import Cell

MAX_ANSWER_TOKENS = 12
TIMING = ("latency_ms", "dense_latency_ms", "latency_ratio", "encode_ms", "prefill_ms", "decode_ms")
ROW_SCHEMA = {
    "cell_id": pl.String, "method": pl.String, "budget": pl.Float64, "knobs": pl.String, "config": pl.String,
    "clip": pl.String, "task": pl.String, "seed": pl.Int64, "frames": pl.Int64, "model": pl.String,
    "motion_level": pl.String,
    "tokens_per_frame": pl.Float64,  # headline: decoder input per frame, × keep for decoder-side methods
    "decoder_input_per_frame": pl.Float64, "last_layer_per_frame": pl.Float64, "decoder_keep": pl.Float64,
    "encoder_tokens_per_frame": pl.Float64, "decoder_sublayer_tokens": pl.String,
    "encoder_flops": pl.Float64, "encoder_flops_analytic": pl.Float64,
    "prefill_flops": pl.Float64, "prefill_flops_analytic": pl.Float64,
    "latency_ms": pl.Float64, "dense_latency_ms": pl.Float64, "latency_ratio": pl.Float64,
    "encode_ms": pl.Float64, "prefill_ms": pl.Float64, "decode_ms": pl.Float64,
    "caption": pl.String, "references": pl.String,
    "qa_n": pl.Int64, "qa_correct": pl.Int64, "qa": pl.String,
    "gesture": pl.String, "gesture_label": pl.String, "gesture_correct": pl.Boolean,
}


@lru_cache(maxsize=4)
def _model(name: str):
    from workbench.models.registry import create_model
    return create_model(name).eval()


def cell_clip(cell: Cell):
    """The cell's input clip (deterministic from its seed)."""
    if cell.task == "gesture":
        from workbench.data.gestures import make_gesture_clip
        return make_gesture_clip(cell.seed, n_frames=cell.frames)
    from workbench.data.shapesworld import make_clip
    return make_clip(cell.seed, cell.frames)


def cell_method(cell: Cell, model):
    from workbench.methods.budget import at_budget, method_from_config
    if cell.method == "anc":
        return at_budget("anc", None, model)
    return method_from_config(cell.method, json.loads(cell.config))


def _encoder_analytic(model, encoder, stats, modality: str) -> float | None:
    """Analytic encoder FLOPs where the method states them (the baselines), or the formula for dense / STTF."""
    own = getattr(stats, "encoder_flops_analytic", None)
    if own is not None:
        return float(np.sum(own))
    c = model.cfg
    n, t = c.num_patches, len(stats.tokens_computed)
    stem = model.encoder.stems[modality].in_features if hasattr(model.encoder, "stems") else 0
    if encoder.name == "dense":
        return float(encoder_flops(n, t, c.enc_dim, c.enc_depth, c.enc_mlp_ratio, stem))
    if encoder.name == "sttf":
        from workbench.methods.sttf import frame_flops
        computed = stats.tokens_computed
        return float(frame_flops(model, computed, computed == n, encoder.cfg.source, modality).sum())
    return None


def _answers(model, clip, method) -> list[list[str]]:
    from workbench.pipeline import model_frames, split_method
    enc, dec = split_method(method)
    with torch.no_grad():
        vt, _ = enc.visual_tokens(model, model_frames(model, clip), clip.modality, clip)
        out = []
        for q, a in clip.qa:
            g = model.generate(vt, q, max_new_tokens=MAX_ANSWER_TOKENS, pruner=dec, gesture=False)
            out.append([q, a, g.texts[0]])
    return out


def _latency(model, clip, method, repeats: int) -> tuple[float | None, float | None, dict]:
    """(method median ms, dense median ms, median timings of the method's parts), dense and method alternated."""
    from workbench.pipeline import Dense, describe
    if repeats <= 0:
        return None, None, {}
    ours, dense, parts = [], [], {"encode_ms": [], "prefill_ms": [], "decode_ms": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        describe(model, clip, Dense())
        dense.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        d = describe(model, clip, method)
        ours.append((time.perf_counter() - t0) * 1e3)
        for k in parts:
            parts[k].append(d.timings_ms[k])
    return statistics.median(ours), statistics.median(dense), {k: statistics.median(v) for k, v in parts.items()}


def run_cell(cell: Cell) -> tuple[dict, tuple | None]:
    """(row, (trace DataFrame, run metadata) or None) of one cell; see the module docstring."""
    from workbench.pipeline import describe, split_method
    torch.set_num_threads(1)
    model = _model(cell.model)
    clip = cell_clip(cell)
    method = cell_method(cell, model)
    encoder, decoder = split_method(method)
    d = describe(model, clip, method, count_flops=True, trace=cell.traces, seed=cell.seed)
    t = clip.num_frames
    ds = d.decoder
    keep = d.decoder_keep if decoder is not None else 1.0
    qa = _answers(model, clip, method) if cell.task == "captions" and clip.qa else []
    lat, dense_lat, parts = _latency(model, clip, method, cell.repeats)
    gesture_label = None
    if cell.task == "gesture":
        gesture_label = model.cfg.gesture_classes[clip.label] if clip.label is not None else None
    row = {
        **{k: getattr(cell, k) for k in ("method", "budget", "knobs", "config", "clip", "frames", "model")},
        "cell_id": cell.id, "task": cell.task, "seed": cell.seed,
        "motion_level": str(clip.meta.get("motion_level", "")),
        "tokens_per_frame": d.tokens_per_frame * keep, "decoder_input_per_frame": d.tokens_per_frame,
        "last_layer_per_frame": d.last_layer_tokens_per_frame, "decoder_keep": keep,
        "encoder_tokens_per_frame": float(np.mean(d.stats.tokens_computed)),
        "decoder_sublayer_tokens": json.dumps([float(v) for v in ds.sublayer[0].tolist()]),
        "encoder_flops": float(d.stats.encoder_flops.sum()),
        "encoder_flops_analytic": _encoder_analytic(model, encoder, d.stats, clip.modality),
        "prefill_flops": float(ds.flops), "prefill_flops_analytic": float(ds.analytic_flops),
        "latency_ms": lat, "dense_latency_ms": dense_lat,
        "latency_ratio": None if lat is None else lat / dense_lat, **{k: parts.get(k) for k in TIMING[3:]},
        "caption": d.caption, "references": json.dumps(list(clip.captions or [])),
        "qa_n": len(qa), "qa_correct": sum(answers_match(p, a) for _, a, p in qa), "qa": json.dumps(qa),
        "gesture": d.gesture, "gesture_label": gesture_label,
        "gesture_correct": None if gesture_label is None else d.gesture == gesture_label,
    }
    assert t == cell.frames
    trace = None
    if cell.traces and d.trace is not None:
        trace = (d.trace, {**d.run, "cell": cell.to_dict()})
    return row, trace


def row_frame(rows: list[dict]) -> pl.DataFrame:
    """Rows → a DataFrame with exactly `ROW_SCHEMA` (the same types whatever the values)."""
    return pl.DataFrame(rows, schema=ROW_SCHEMA)
