"""The summary table of a run against its dense baseline: one row per measure, dense | compressed | ratio.

    summary_table(dense_trace, trace, fps=None) -> pl.DataFrame[metric: str, dense: f64, compressed: f64,
                                                                 ratio: f64]

Rows come from the per-frame totals the pipeline logs (tokens to the decoder, tokens computed, encoder FLOPs
and milliseconds, decode milliseconds) and, when the run logged them, from the method's own rows: STTF's
recompute rate, keyframes, scene cuts and mean reference age; ANC's branch switches (per second with `fps`)
and how often each branch ran. A measure a run does not have is null; ratio = compressed / dense where both
exist and dense ≠ 0. Times are wall-clock on this machine, measured once: read them as rough.

    >>> import numpy as np, polars as pl
    >>> from workbench.trace.schema import TRACE_SCHEMA
    >>> def totals(site, values):
    ...     return pl.DataFrame({"run_id": site, "sample_id": "s", "frame": np.arange(len(values)), "layer": -1,
    ...         "site": site, "token": -1, "kind": "tokens_to_decoder", "value": values, "target": None},
    ...         schema=TRACE_SCHEMA)
    >>> t = summary_table(totals("dense", [196.0, 196.0]), totals("sttf", [196.0, 0.0]))
    >>> t.row(0)
    ('visual tokens to the decoder per frame', 196.0, 98.0, 0.5)
"""
from __future__ import annotations

import numpy as np
import polars as pl

from workbench.trace.schema import DECISIONS
from workbench.viz.style import frame_series
from workbench.viz.timeline import BRANCH_NAMES, route_table

__all__ = ["summary_table"]

SCHEMA = {"metric": pl.Utf8, "dense": pl.Float64, "compressed": pl.Float64, "ratio": pl.Float64}


def _mean(v: np.ndarray) -> float | None:
    return float(v.mean()) if len(v) else None


def _sum(v: np.ndarray) -> float | None:
    return float(v.sum()) if len(v) else None


def _scalar(trace: pl.DataFrame | None, kind: str) -> float | None:
    if trace is None:
        return None
    r = trace.filter((pl.col("kind") == kind) & (pl.col("frame") == -1))
    return float(r["value"].sum()) if r.height else None


def _method_rows(trace: pl.DataFrame, fps: float | None) -> list[tuple[str, float | None]]:
    rows: list[tuple[str, float | None]] = []
    gate = trace.filter((pl.col("site") == "sttf.gate") & (pl.col("token") >= 0))
    dec = gate.filter(pl.col("kind") == "decision")
    if dec.height:
        rows.append(("STTF recompute rate (patch-frames)", float((dec["value"] == DECISIONS["recomputed"]).mean())))
        age = gate.filter(pl.col("kind") == "ref_age")
        if age.height:
            rows.append(("STTF mean reference age (frames)", float(age["value"].mean())))
        for kind, label in (("keyframe", "STTF keyframes"), ("scene_cut", "STTF scene cuts")):
            v = frame_series(trace, kind, site="sttf.gate")
            if len(v):
                rows.append((label, float(v.sum())))
    choices, _ = route_table(trace)
    if len(choices):
        switches = float((np.diff(choices) != 0).sum())
        rows.append(("ANC branch switches", switches))
        if fps:
            rows.append(("ANC switches per second", switches / (len(choices) / fps)))
        for k, name in enumerate(BRANCH_NAMES):
            rows.append((f"ANC frames on {name}", float((choices == k).sum())))
    return rows


def summary_table(dense_trace: pl.DataFrame | None, trace: pl.DataFrame, fps: float | None = None) -> pl.DataFrame:
    """Dense vs compressed measures of one input (see the module docstring)."""
    measures = [
        ("visual tokens to the decoder per frame", "tokens_to_decoder", _mean, 1.0),
        ("tokens computed by the encoder per frame", "tokens_computed", _mean, 1.0),
        ("encoder MFLOPs per frame", "encoder_flops", _mean, 1e6),
        ("encoder MFLOPs, whole clip", "encoder_flops", _sum, 1e6),
        ("encoder time, whole clip (ms)", "latency_ms", _sum, 1.0),
    ]
    out: list[tuple[str, float | None, float | None]] = []
    for label, kind, agg, scale in measures:
        d = agg(frame_series(dense_trace, kind)) if dense_trace is not None else None
        c = agg(frame_series(trace, kind))
        out.append((label, None if d is None else d / scale, None if c is None else c / scale))
    out.append(("decoder time (ms)", _scalar(dense_trace, "decode_ms"), _scalar(trace, "decode_ms")))
    out += [(label, None, v) for label, v in _method_rows(trace, fps)]
    ratio = [c / d if (c is not None and d not in (None, 0)) else None for _, d, c in out]
    return pl.DataFrame({"metric": [r[0] for r in out], "dense": [r[1] for r in out],
                         "compressed": [r[2] for r in out], "ratio": ratio}, schema=SCHEMA)
