"""What a decoder-side method (SparseVLM, FastV, random) did, from its trace: figures for the app and notebooks.

    token_fates(trace, layer)            → per decoder-input visual token: kept / pruned / recycled (into which
                                           token) as it leaves decoder layer `layer` (−1: the decoder's input)
    decoder_decisions(trace, layer)      → those fates on the frame × patch grid, as trace rows `patch_overlay` reads
    decoder_overlay(frame, trace, t, layer, view)  → the frame with kept / pruned / recycled patches (clusters outlined)
    layer_tokens(trace, dense_trace)     → visual tokens entering every decoder sublayer, dense vs pruned
    prompt_raters(trace, words)          → the prompt's relevance per token, SparseVLM's raters highlighted
    kept_per_frame(trace, layer, t)      → visual tokens still present per frame after `layer`

The trace rows used (`pipeline.describe(..., trace=True)` with a decoder-side method): site "decoder.visual"
(kinds patch, t_start, t_end, size per decoder-input token), site "<method>.prune" (per point: depth,
decision and score per token present, target = the recycled token it went into), site "decoder" (visual_in /
visual_mlp / visual_out per layer, keep_fraction, visual_last), site "sparsevlm.raters" (relevance, rater).

    >>> import polars as pl
    >>> from workbench.trace.schema import TRACE_SCHEMA, DECISIONS
    >>> rows = [("decoder.visual", -1, k, t, float(v)) for t in range(2) for k, v in (("patch", t), ("t_start", 0), ("t_end", 0))]
    >>> rows += [("x.prune", 0, "depth", -1, 0.5), ("x.prune", 0, "decision", 0, DECISIONS["kept"]),
    ...          ("x.prune", 0, "decision", 1, DECISIONS["pruned"])]
    >>> df = pl.DataFrame([dict(run_id="r", sample_id="s", frame=-1, layer=l, site=s, token=t, kind=k, value=v,
    ...                         target=None) for s, l, k, t, v in rows], schema=TRACE_SCHEMA)
    >>> token_fates(df, 0)["status"].to_list(), token_fates(df, -1)["status"].to_list()
    (['kept', 'pruned'], ['kept', 'kept'])
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl

from workbench.trace.schema import DECISIONS, TRACE_SCHEMA
from workbench.viz.overlay import patch_overlay
from workbench.viz.style import (COMPRESSED_COLOR, DECISION_COLORS, DENSE_COLOR, add_frame_marker, base_layout,
                                 message_figure)

KEPT, PRUNED, RECYCLED = DECISIONS["kept"], DECISIONS["pruned"], DECISIONS["recycled"]
VIEWS = ("decision", "score")


def prune_site(trace: pl.DataFrame) -> str | None:
    sites = sorted({s for s in trace["site"].unique().to_list() if s.endswith(".prune")})
    return sites[0] if sites else None


def token_map(trace: pl.DataFrame) -> pl.DataFrame:
    """(token, patch, t_start, t_end, size) of the decoder-input visual tokens."""
    rows = trace.filter(pl.col("site") == "decoder.visual")
    if rows.height == 0:
        return pl.DataFrame(schema={"token": pl.Int32, "patch": pl.Int64, "t_start": pl.Int64, "t_end": pl.Int64})
    wide = rows.pivot(on="kind", index="token", values="value", aggregate_function="first").sort("token")
    return wide.with_columns(pl.col("patch", "t_start", "t_end").cast(pl.Int64))


def points(trace: pl.DataFrame, site: str | None = None) -> list[tuple[int, float]]:
    """(scoring layer, depth) of each pruning point, in order."""
    site = site or prune_site(trace)
    if site is None:
        return []
    r = trace.filter((pl.col("site") == site) & (pl.col("kind") == "depth")).sort("value")
    return list(zip(r["layer"].to_list(), r["value"].to_list()))


def token_fates(trace: pl.DataFrame, layer: int, site: str | None = None) -> pl.DataFrame:
    """Fate of every decoder-input token as it leaves decoder layer `layer` (points at depth ≤ layer + 1 applied):
    columns token, status ('kept' | 'pruned' | 'recycled'), into (the recycled token it is part of, or −1),
    depth (where it was pruned or recycled; NaN if kept), score (its score at the last point applied)."""
    tokens = token_map(trace)["token"].to_list()
    site = site or prune_site(trace)
    state = {t: ("kept", -1, float("nan"), float("nan")) for t in tokens}
    holder = {t: t for t in tokens}  # token → the id that currently carries it
    if site is None:
        return _fates_frame(state)
    for lay, depth in points(trace, site):
        if depth > layer + 1:
            break
        at = trace.filter((pl.col("site") == site) & (pl.col("layer") == lay))
        dec = at.filter(pl.col("kind") == "decision")
        code = dict(zip(dec["token"].to_list(), dec["value"].to_list()))
        into = dict(zip(dec["token"].to_list(), dec["target"].fill_null(-1).to_list()))
        sc = at.filter(pl.col("kind") == "score")
        score = dict(zip(sc["token"].to_list(), sc["value"].to_list()))
        for t in tokens:
            status, tgt, gone, _ = state[t]
            if status == "pruned":
                continue
            h = holder[t]
            c = code.get(h)
            s = score.get(h, float("nan"))
            if c == PRUNED:
                state[t] = ("pruned", -1, depth, s)
            elif c == RECYCLED:
                holder[t] = into[h]
                state[t] = ("recycled", into[h], depth if status == "kept" else gone, s)
            else:
                state[t] = (status, tgt, gone, s)
    return _fates_frame(state)


def _fates_frame(state: dict) -> pl.DataFrame:
    return pl.DataFrame({"token": list(state), "status": [v[0] for v in state.values()],
                         "into": [int(v[1]) for v in state.values()], "depth": [v[2] for v in state.values()],
                         "score": [v[3] for v in state.values()]},
                        schema={"token": pl.Int32, "status": pl.Utf8, "into": pl.Int64, "depth": pl.Float64,
                                "score": pl.Float64})


def decoder_decisions(trace: pl.DataFrame, layer: int, n_frames: int | None = None) -> pl.DataFrame:
    """Trace rows (site "decoder.layer<L>") placing every token's fate on each frame of its run × its patch:
    kind "decision" (kept 4 / pruned 3 / recycled 5, target = the recycled token) and kind "change_score"
    (the method's score, so the overlay's score view shows it)."""
    tm = token_map(trace)
    if tm.height == 0:
        return pl.DataFrame(schema=TRACE_SCHEMA)
    fates = token_fates(trace, layer)
    j = tm.join(fates, on="token")
    t_max = int(j["t_end"].max()) + 1 if n_frames is None else n_frames
    frames = [list(range(a, min(b, t_max - 1) + 1)) for a, b in zip(j["t_start"].to_list(), j["t_end"].to_list())]
    j = j.with_columns(pl.Series("frame", frames)).explode("frame")
    code = {"kept": KEPT, "pruned": PRUNED, "recycled": RECYCLED}
    site = f"decoder.layer{layer}"
    base = dict(run_id=trace["run_id"][0] if trace.height else "", sample_id=trace["sample_id"][0] if trace.height else "")
    dec = pl.DataFrame({"run_id": base["run_id"], "sample_id": base["sample_id"], "frame": j["frame"],
                        "layer": layer, "site": site, "token": j["patch"], "kind": "decision",
                        "value": j["status"].replace_strict(code, return_dtype=pl.Float64),
                        "target": j["into"].map_elements(lambda x: None if x < 0 else x, return_dtype=pl.Int64)},
                       schema_overrides=TRACE_SCHEMA)
    sc = dec.with_columns(pl.Series("value", j["score"].to_numpy()), pl.lit("change_score").alias("kind"),
                          pl.lit(None, pl.Int32).alias("target"))
    return pl.concat([dec.select(list(TRACE_SCHEMA)).cast(TRACE_SCHEMA),
                      sc.select(list(TRACE_SCHEMA)).cast(TRACE_SCHEMA)])


def decoder_overlay(frame: np.ndarray, trace: pl.DataFrame, frame_index: int, layer: int,
                    view: str = "decision", height: int = 520) -> go.Figure:
    """The frame with each patch's fate after decoder layer `layer` (kept / pruned / recycled, recycled clusters
    outlined) or, with view="score", the method's score of its token at the last point applied."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, not {view!r}")
    if prune_site(trace) is None:
        return message_figure("no decoder-side pruning in this run: choose SparseVLM, FastV or random", "decoder")
    rows = decoder_decisions(trace, layer)
    at = rows.filter((pl.col("frame") == frame_index) & (pl.col("kind") == "decision"))
    counts = {n: int((at["value"] == c).sum()) for n, c in (("kept", KEPT), ("pruned", PRUNED), ("recycled", RECYCLED))}
    where = "decoder input" if layer < 0 else f"leaving layer {layer}"
    title = (f"frame {frame_index} · {where} · " + " · ".join(f"{v} {k}" for k, v in counts.items() if v)
             + f" ({prune_site(trace).split('.')[0]})")
    return patch_overlay(frame, rows, frame_index, view="decision" if view == "decision" else "change_score",
                         site=f"decoder.layer{layer}", title=title, height=height)


def layer_tokens(trace: pl.DataFrame, dense_trace: pl.DataFrame | None = None, height: int = 300) -> go.Figure:
    """Visual tokens entering each decoder sublayer (attention, MLP), dense vs the method, with the paper's count
    (keep fraction) and what the last layer sees in the title."""
    def series(df):
        if df is None:
            return None
        d = df.filter((pl.col("site") == "decoder") & pl.col("kind").is_in(["visual_in", "visual_mlp"])).sort("layer")
        if d.height == 0:
            return None
        att = d.filter(pl.col("kind") == "visual_in")["value"].to_list()
        mlp = d.filter(pl.col("kind") == "visual_mlp")["value"].to_list()
        return [v for pair in zip(att, mlp) for v in pair]
    ours = series(trace)
    if ours is None:
        return message_figure("no per-layer token counts in this run (dense runs without a decoder-side method "
                              "keep every token in every layer)", "visual tokens per decoder layer", height)
    labels = [f"L{i // 2} {'attn' if i % 2 == 0 else 'mlp'}" for i in range(len(ours))]
    fig = go.Figure()
    dense = series(dense_trace) or [ours[0]] * len(ours)
    fig.add_trace(go.Bar(x=labels, y=dense, name="dense", marker_color=DENSE_COLOR))
    fig.add_trace(go.Bar(x=labels, y=ours, name="pruned", marker_color=COMPRESSED_COLOR))
    kf = trace.filter((pl.col("site") == "decoder") & (pl.col("kind") == "keep_fraction"))["value"]
    last = trace.filter((pl.col("site") == "decoder") & (pl.col("kind") == "visual_last"))["value"]
    title = "visual tokens per decoder sublayer"
    if kf.len():
        title += f" · kept {kf[0]:.1%} (mean) · last layer {int(last[0])}"
    fig.update_layout(**base_layout(title, height), barmode="group", yaxis_title="visual tokens")
    return fig


def prompt_raters(trace: pl.DataFrame, words: list[str] | None = None, height: int = 260) -> go.Figure:
    """The prompt's tokens with SparseVLM's relevance (bars) and raters (highlighted, above the mean line)."""
    r = trace.filter(pl.col("site") == "sparsevlm.raters")
    if r.height == 0:
        return message_figure("raters are SparseVLM's: this run has none (FastV rates by the last prompt token, "
                              "random by nothing)", "prompt raters", height)
    rel = r.filter(pl.col("kind") == "relevance").sort("token")
    rat = r.filter(pl.col("kind") == "rater").sort("token")["value"].to_numpy() > 0
    vals = rel["value"].to_numpy()
    labels = list(words) if words and len(words) == len(vals) else [f"t{i}" for i in range(len(vals))]
    labels = [f"{w} ({i})" for i, w in enumerate(labels)]  # unique bar labels for repeated words
    colors = [DECISION_COLORS["kept"] if x else DENSE_COLOR for x in rat]
    fig = go.Figure(go.Bar(x=labels, y=vals, marker_color=colors, name="relevance",
                           hovertemplate="%{x}: relevance %{y:.3f}<extra></extra>"))
    fig.add_hline(y=float(vals.mean()), line_dash="dot", annotation_text="mean (raters above)")
    fig.update_layout(**base_layout(f"prompt raters: {int(rat.sum())} of {len(vals)} tokens rate the visual tokens",
                                    height), yaxis_title="relevance to the image")
    return fig


def kept_per_frame(trace: pl.DataFrame, layer: int, frame_index: int | None = None, n_frames: int | None = None,
                   height: int = 260) -> go.Figure:
    """Decoder-input visual tokens of each frame still present (kept or recycled) after layer `layer`."""
    rows = decoder_decisions(trace, layer, n_frames)
    if rows.height == 0:
        return message_figure("no decoder-side pruning in this run", "tokens per frame in the decoder", height)
    dec = rows.filter(pl.col("kind") == "decision")
    per = (dec.group_by("frame").agg((pl.col("value") == KEPT).sum().alias("kept"),
                                     (pl.col("value") == RECYCLED).sum().alias("recycled"), pl.len().alias("all"))
              .sort("frame"))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=per["frame"], y=per["all"], name="entering the decoder", line=dict(color=DENSE_COLOR)))
    fig.add_trace(go.Scatter(x=per["frame"], y=per["kept"], name="kept", line=dict(color=DECISION_COLORS["kept"])))
    fig.add_trace(go.Scatter(x=per["frame"], y=per["recycled"], name="merged into recycled tokens",
                             line=dict(color=DECISION_COLORS["recycled"], dash="dot")))
    where = "the decoder's input" if layer < 0 else f"layer {layer}"
    fig.update_layout(**base_layout(f"patches per frame still in the sequence after {where}", height),
                      xaxis_title="frame", yaxis_title="patches")
    return add_frame_marker(fig, frame_index)
