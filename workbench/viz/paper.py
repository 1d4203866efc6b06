"""The edge-VLM paper's headline numbers (METHODS.md §1–3) beside ours, and readers for the benchmark results.

`PAPER_HEADLINE` holds the paper's claims; `headline_table(ours, sources, dense)` puts our value (None = not
measured), our dense baseline on the same clips and where our value came from next to each; `headline_figure`
draws that table. `ours_from_benchmarks` and
`anc_tradeoff_from_benchmark` read the JSON files `benchmarks/bench_sttf.py` / `bench_anc.py` write (any
missing key gives None / an empty table instead of an error, so a notebook can fall back to a small run).

Our numbers are on ShapesWorld and the synthetic gesture analog, not on COCO / the real DVS128 Gesture:
compare trends and ratios to dense, not absolute values.

    >>> df = headline_table({"sttf_tokens_per_frame": 30.5}, {"sttf_tokens_per_frame": "demo"})
    >>> df.filter(pl.col("key") == "sttf_tokens_per_frame").select("paper", "ours", "ours_source").row(0)
    (31.0, 30.5, 'demo')
    >>> headline_figure(df).data[0].type
    'table'
"""
from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go
import polars as pl

__all__ = ["PAPER_HEADLINE", "headline_table", "headline_figure", "ours_from_benchmarks",
           "anc_tradeoff_from_benchmark"]

# (key, metric, paper value, note on the paper's setting) — METHODS.md
PAPER_HEADLINE: list[tuple[str, str, float, str]] = [
    ("sttf_tokens_per_frame", "STTF visual tokens per frame (of 196)", 31.0, "DVS128 Gesture / video, avg per frame"),
    ("sttf_token_reduction_pct", "STTF token reduction vs dense (%)", 84.0, "196 → 31"),
    ("sttf_gesture_acc_pct", "STTF gesture accuracy (%)", 95.6, "real DVS128 Gesture, 11 classes"),
    ("sttf_cider", "TinyGPT-STTF CIDEr (×100)", 131.2, "COCO captions"),
    ("sttf_bleu4", "TinyGPT-STTF BLEU-4", 0.38, "COCO captions"),
    ("sttf_meteor", "TinyGPT-STTF METEOR", 0.31, "COCO captions"),
    ("sttf_rouge_l", "TinyGPT-STTF ROUGE-L", 0.56, "COCO captions"),
    ("anc_cider", "TinyGPT-ANC CIDEr (×100)", 128.5, "COCO captions"),
    ("anc_flops_saved_low_motion_pct", "ANC FLOPs saved, low-motion scenes (%)", 90.0, "“up to”"),
    ("sttf_latency_speedup", "STTF latency speedup vs dense (×)", 13.0, "“up to”, edge SoCs"),
]


def headline_table(ours: Mapping[str, float | None], sources: Mapping[str, str] | None = None,
                   dense: Mapping[str, float | None] | None = None) -> pl.DataFrame:
    """One row per paper claim: key, metric, paper, ours (null when not measured), dense (our dense baseline
    for the same measure on the same clips, when given: the ratio to it is what transfers between datasets),
    ours_source, paper_setting. Keys of `ours` / `dense` that the paper has no claim for raise (a typo would otherwise
    vanish silently)."""
    known = {k for k, *_ in PAPER_HEADLINE}
    unknown = sorted((set(ours) | set(dense or {})) - known)
    if unknown:
        raise ValueError(f"no paper claim for {unknown}; known keys: {sorted(known)}")
    sources, dense = sources or {}, dense or {}
    rows = []
    for key, metric, paper, setting in PAPER_HEADLINE:
        v, d = ours.get(key), dense.get(key)
        rows.append({"key": key, "metric": metric, "paper": paper, "ours": None if v is None else float(v),
                     "dense": None if d is None else float(d),
                     "ours_source": sources.get(key, "this notebook" if v is not None else "not measured"),
                     "paper_setting": setting})
    return pl.DataFrame(rows, schema={"key": pl.Utf8, "metric": pl.Utf8, "paper": pl.Float64, "ours": pl.Float64,
                                      "dense": pl.Float64, "ours_source": pl.Utf8, "paper_setting": pl.Utf8})


def _fmt(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if abs(v) < 1 else f"{v:.1f}"


def headline_figure(df: pl.DataFrame, title: str = "Paper headline vs this workbench") -> go.Figure:
    """The `headline_table` as a plotly table (metric, paper, ours, our dense baseline, where ours comes from)."""
    for c in ("metric", "paper", "ours", "ours_source"):
        if c not in df.columns:
            raise ValueError(f"headline_figure needs a {c!r} column (columns: {df.columns})")
    dense = df["dense"].to_list() if "dense" in df.columns else [None] * df.height
    cols = [df["metric"].to_list(), [_fmt(v) for v in df["paper"].to_list()],
            [_fmt(v) for v in df["ours"].to_list()], [_fmt(v) for v in dense], df["ours_source"].to_list()]
    fig = go.Figure(go.Table(header={"values": ["metric", "paper", "ours", "ours, dense", "ours: from"],
                                     "align": "left"},
                             cells={"values": cols, "align": "left"}, columnwidth=[3, 1, 1, 1, 3]))
    fig.update_layout(title=title, height=140 + 50 * (df.height + 1))  # cells wrap to two lines
    return fig


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


def _pick_sttf_row(rows: list) -> dict | None:
    """The paper's setting: the token budget ρ = 31/196 with pixel scores on RGB and event rates on events,
    stage-2 weights when benchmarked, else base."""
    cands = [r for r in rows if isinstance(r, Mapping) and str(r.get("setting", "")).startswith("ρ=")
             and "pixels/events" in str(r.get("setting", ""))]
    for weights in ("stage2", "base"):
        for r in cands:
            if r.get("weights") == weights:
                return r
    return cands[0] if cands else None


def ours_from_benchmarks(sttf: Mapping | None = None, anc: Mapping | None = None) -> tuple[dict, dict, dict]:
    """(values, sources, dense) for `headline_table` from the parsed JSON of benchmarks/results/sttf-<model>.json
    and anc-<model>.json (either may be None). Only what the files hold is filled in; `dense` is the dense
    baseline of the same benchmark run (same clips, same weights).

        >>> ours_from_benchmarks(None, {"rows": [{"clips": "low", "flops_saved_pct": 92.0}]})[::2]
        ({'anc_flops_saved_low_motion_pct': 92.0}, {'anc_flops_saved_low_motion_pct': 0.0})
    """
    vals: dict = {}
    src: dict = {}
    dense: dict = {}
    rows = [r for r in (_get(sttf, "rows") or []) if isinstance(r, Mapping)] if sttf else []
    row = _pick_sttf_row(rows)
    if row is not None:
        tag = f"bench_sttf: {row.get('setting')} ({row.get('weights')})"
        base = next((r for r in rows if str(r.get("setting", "")).startswith("dense")
                     and r.get("weights") == row.get("weights")), {})
        tok = row.get("tok_shapes")
        if tok is not None:
            vals["sttf_tokens_per_frame"] = float(tok)
            vals["sttf_token_reduction_pct"] = 100.0 * (1 - float(tok) / 196.0)
            dense["sttf_tokens_per_frame"], dense["sttf_token_reduction_pct"] = float(base.get("tok_shapes", 196.0)), 0.0
        for key, name, scale in (("sttf_gesture_acc_pct", "gesture_acc", 100.0), ("sttf_cider", "cider", 100.0),
                                 ("sttf_bleu4", "bleu4", 1.0)):
            if row.get(name) is not None:
                vals[key] = scale * float(row[name])
                if base.get(name) is not None:
                    dense[key] = scale * float(base[name])
        walls = [row.get(k) for k in ("wall_stream", "wall_clip") if row.get(k) is not None]
        if walls:
            vals["sttf_latency_speedup"], dense["sttf_latency_speedup"] = float(max(walls)), 1.0
        src.update({k: tag for k in vals})
    if anc:
        cider = _get(anc, "meta", "quality_overall", "anc", "cider")
        if cider is not None:
            vals["anc_cider"], src["anc_cider"] = float(cider), "bench_anc (CIDEr ×100)"
            base = _get(anc, "meta", "quality_overall", "dense", "cider")
            if base is not None:
                dense["anc_cider"] = float(base)
        for r in _get(anc, "rows") or []:
            if isinstance(r, Mapping) and r.get("clips") == "low" and r.get("flops_saved_pct") is not None:
                vals["anc_flops_saved_low_motion_pct"] = float(r["flops_saved_pct"])
                src["anc_flops_saved_low_motion_pct"] = "bench_anc (low-motion clips)"
                dense["anc_flops_saved_low_motion_pct"] = 0.0
    return vals, src, dense


def anc_tradeoff_from_benchmark(anc: Mapping | None) -> pl.DataFrame:
    """Accuracy vs FLOPs points from bench_anc's JSON: for each motion level, dense (FLOPs ratio 1) and ANC
    (its measured ratio) with CIDEr ×100; for the gesture clips, accuracy %. Columns level, method,
    flops_ratio, accuracy, metric (empty when the file has none of it).

        >>> anc_tradeoff_from_benchmark({"rows": [{"clips": "low", "flops_ratio": 0.1, "dense_cider": 90.0,
        ...                                        "anc_cider": 88.0}]}).rows()
        [('low', 'dense', 1.0, 90.0, 'CIDEr ×100'), ('low', 'anc', 0.1, 88.0, 'CIDEr ×100')]
    """
    rows = []
    for r in _get(anc, "rows") or []:
        if not isinstance(r, Mapping) or r.get("flops_ratio") is None:
            continue
        level = str(r.get("clips"))
        for method, d_key, a_key, metric in (("cider", "dense_cider", "anc_cider", "CIDEr ×100"),
                                             ("acc", "dense_acc", "anc_acc", "gesture accuracy %")):
            if r.get(d_key) is not None and r.get(a_key) is not None:
                rows.append({"level": level, "method": "dense", "flops_ratio": 1.0, "accuracy": float(r[d_key]),
                             "metric": metric})
                rows.append({"level": level, "method": "anc", "flops_ratio": float(r["flops_ratio"]),
                             "accuracy": float(r[a_key]), "metric": metric})
    return pl.DataFrame(rows, schema={"level": pl.Utf8, "method": pl.Utf8, "flops_ratio": pl.Float64,
                                      "accuracy": pl.Float64, "metric": pl.Utf8})
