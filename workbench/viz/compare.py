"""One clip, one budget, every method: what each did to the frame's patches, side by side, and what it cost.

    method_grid(trace, frame, decoder_layer)  → the (g, g) DecisionGrid of one method's trace at one frame:
                                                the encoder side's own decisions (ToMe / pooling: fused into a
                                                shared token, outlined; VisionZip: kept / recycled into a
                                                contextual token; random: kept / pruned; STTF, Eventful:
                                                recomputed / fused over time), or for a decoder-side method what
                                                is left as the given decoder layer ends (default: the last)
    compare_panels(frame, grids)              → one panel per method: the frame, the decision colours, the
                                                merged / recycled groups outlined
    cost_bars(rows)                           → encoder + prefill FLOPs (stacked) and latency per method,
                                                dense first, each with its ratio to dense

Pure functions of traces and DataFrames (`pipeline.describe(..., trace=True)`, the sweep's rows) → Figures.

    >>> import numpy as np, polars as pl
    >>> from workbench.trace.schema import TRACE_SCHEMA
    >>> g = method_grid(pl.DataFrame(schema=TRACE_SCHEMA), 0)  # a dense run logs no decisions
    >>> g.source, compare_panels(np.zeros((3, 16, 16), np.float32), {"dense": g}).layout.annotations[0].text
    ('dense', 'dense · 196 kept')
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from workbench.trace.schema import DECISIONS
from workbench.viz.overlay import DecisionGrid, _edges, _fused_keys, decision_grid
from workbench.viz.style import (COMPRESSED_COLOR, DECISION_COLORS, DECISION_NAMES, DENSE_COLOR, base_layout,
                                 image_data_uri, message_figure, to_rgb_image)

FUSED, RECYCLED = DECISIONS["fused"], DECISIONS["recycled"]


def method_grid(trace: pl.DataFrame, frame_index: int, decoder_layer: int | None = None,
                grid: int = 14) -> DecisionGrid:
    """The decision grid of one method's run at `frame_index` (see the module docstring)."""
    from workbench.viz.decoder import decoder_decisions, prune_site
    if trace.height and prune_site(trace) is not None:  # a decoder-side method: what a decoder layer keeps
        if decoder_layer is None:
            layers = trace.filter(pl.col("site") == "decoder")["layer"]
            decoder_layer = int(layers.max()) if layers.len() and layers.max() is not None and layers.max() >= 0 else 0
        rows = decoder_decisions(trace, decoder_layer)
        return decision_grid(rows, frame_index, grid)
    enc = trace.filter((pl.col("kind") == "decision") & (pl.col("token") >= 0))
    if enc.height == 0:
        dense = DecisionGrid(np.full((grid, grid), DECISIONS["kept"]), np.full((grid, grid), -1), None, None, "dense")
        return dense
    return decision_grid(trace, frame_index, grid)


def _summary(dg: DecisionGrid) -> str:
    parts = [f"{int((dg.codes == c).sum())} {DECISION_NAMES[c]}" for c in sorted(set(np.unique(dg.codes).tolist()))]
    groups = dg.targets[(dg.codes == FUSED) | (dg.codes == RECYCLED)]
    if groups.size and (groups >= 0).any():
        parts.append(f"→ {len(np.unique(groups[groups >= 0]))} merged tokens")
    return " · ".join(parts)


def compare_panels(frame: np.ndarray, grids: dict[str, DecisionGrid], cols: int = 4, panel: int = 230) -> go.Figure:
    """The frame once per method with that method's decision colours and merged groups outlined."""
    if not grids:
        return message_figure("no method to show", "")
    img = to_rgb_image(frame)
    h, w = img.shape[:2]
    uri, scale = image_data_uri(img, min_side=224)
    names = list(grids)
    cols = min(cols, len(names))
    rows = math.ceil(len(names) / cols)
    titles = [f"{n} · {_summary(grids[n])}" for n in names]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.02, vertical_spacing=0.08)
    colorscale = [[i / 5, DECISION_COLORS.get(DECISION_NAMES.get(i, ""), "#000")] for i in range(6)]
    shown = set()
    for k, name in enumerate(names):
        r, c = k // cols + 1, k % cols + 1
        dg = grids[name]
        g = dg.codes.shape[0]
        p = w / g
        centres = (np.arange(g) + 0.5) * p
        fig.add_trace(go.Image(source=uri, x0=0, y0=0, dx=1 / scale, dy=1 / scale, hoverinfo="skip"), row=r, col=c)
        hover = [[f"{name}: patch {i * g + j} · {DECISION_NAMES.get(int(dg.codes[i, j]), '?')}"
                  + (f" → token {int(dg.targets[i, j])}" if dg.targets[i, j] >= 0 else "") for j in range(g)]
                 for i in range(g)]
        fig.add_trace(go.Heatmap(z=dg.codes, x=centres, y=centres, zmin=0, zmax=5, colorscale=colorscale,
                                 opacity=0.45, showscale=False, text=hover, hovertemplate="%{text}<extra></extra>"),
                      row=r, col=c)
        draw = (dg.codes == FUSED) | (dg.codes == RECYCLED)
        if draw.any():
            ox, oy = _edges(_fused_keys(dg.codes, dg.targets), draw, p)
            fig.add_trace(go.Scatter(x=ox, y=oy, mode="lines", line=dict(color="#fff", width=1.5), hoverinfo="skip",
                                     showlegend=False), row=r, col=c)
        for code in np.unique(dg.codes).tolist():  # one legend entry per decision
            nm = DECISION_NAMES.get(code, str(code))
            if nm not in shown:
                shown.add(nm)
                fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=nm,
                                         marker=dict(symbol="square", size=11, color=DECISION_COLORS.get(nm))),
                              row=r, col=c)
        fig.update_xaxes(range=[0, w], visible=False, row=r, col=c)
        fig.update_yaxes(range=[h, 0], visible=False, scaleanchor=f"x{k + 1}" if k else "x", row=r, col=c)
    fig.update_annotations(font_size=11)
    fig.update_layout(**base_layout("", panel * rows + 60))
    return fig


def cost_bars(rows: pl.DataFrame, height: int = 320) -> go.Figure:
    """rows: one per method with `method`, `encoder_flops`, `prefill_flops`, `latency_ms` (dense among them)
    → stacked FLOPs bars and latency bars, each labelled with its ratio to dense.

        >>> df = pl.DataFrame({"method": ["dense", "tome"], "encoder_flops": [10.0, 4.0],
        ...                    "prefill_flops": [5.0, 2.0], "latency_ms": [100.0, 50.0]})
        >>> [t.name for t in cost_bars(df).data]
        ['encoder FLOPs', 'prefill FLOPs', 'latency']
    """
    need = ["method", "encoder_flops", "prefill_flops", "latency_ms"]
    missing = [c for c in need if c not in rows.columns]
    if missing or rows.height == 0:
        return message_figure(f"no costs to show (missing {missing})" if missing else "no costs to show", "", height)
    rows = rows.sort(pl.col("method") != "dense", maintain_order=True)
    dense = rows.filter(pl.col("method") == "dense")
    total = (rows["encoder_flops"] + rows["prefill_flops"]).to_list()
    d_total = float(dense["encoder_flops"][0] + dense["prefill_flops"][0]) if dense.height else None
    d_lat = float(dense["latency_ms"][0]) if dense.height and dense["latency_ms"][0] is not None else None
    names = rows["method"].to_list()
    fig = make_subplots(rows=1, cols=2, subplot_titles=("FLOPs (encoder + prefill)", "latency, end to end (ms)"))
    fig.add_trace(go.Bar(x=names, y=rows["encoder_flops"].to_list(), name="encoder FLOPs", marker_color=DENSE_COLOR),
                  row=1, col=1)
    fig.add_trace(go.Bar(x=names, y=rows["prefill_flops"].to_list(), name="prefill FLOPs",
                         marker_color=COMPRESSED_COLOR, text=[f"×{t / d_total:.2f}" if d_total else "" for t in total],
                         textposition="outside"), row=1, col=1)
    lat = rows["latency_ms"].to_list()
    fig.add_trace(go.Bar(x=names, y=lat, name="latency", marker_color="#1f77b4",
                         text=[f"×{v / d_lat:.2f}" if d_lat and v is not None else "" for v in lat],
                         textposition="outside"), row=1, col=2)
    fig.update_layout(barmode="stack", **base_layout("Cost per method (ratios to dense)", height))
    return fig
