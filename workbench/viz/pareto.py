"""Pareto views of a sweep: quality (CIDEr, QA accuracy, gesture accuracy) against cost (FLOPs, latency, tokens),
one line per method over its budgets, the dense point as a star, the non-dominated settings joined by a dashed
frontier. Pure functions of the sweep summary (`workbench.sweep.results.summarise`: one row per method, budget
and knobs) → plotly Figures, built on `viz.sweeps`' trade-off curves.

    >>> import polars as pl
    >>> s = pl.DataFrame({"method": ["dense", "tome", "tome", "pool"], "budget": [None, 31.0, 16.0, 31.0],
    ...                   "knobs": ["{}"] * 4, "flops_ratio": [1.0, 0.5, 0.3, 0.9], "cider": [1.2, 1.0, 0.7, 0.6]})
    >>> pareto_front(s, "flops_ratio", "cider").to_list()
    [True, True, True, False]
    >>> fig = pareto_figure(s, "cider", "flops_ratio")
    >>> [t.name for t in fig.data]
    ['tome', 'pool', 'dense', 'Pareto frontier']
"""
from __future__ import annotations

import json

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from workbench.viz.style import base_layout, message_figure
from workbench.viz.sweeps import accuracy_vs_flops, require_columns

COSTS = {"flops_ratio": "FLOPs / dense (encoder + prefill)", "encoder_flops_ratio": "encoder FLOPs / dense",
         "prefill_flops_ratio": "prefill FLOPs / dense", "latency_ratio": "latency / dense (interleaved, median)",
         "tokens_per_frame": "visual tokens per frame (to the decoder)"}
QUALITY = {"cider": "CIDEr", "qa_accuracy": "QA accuracy (exact match)", "gesture_accuracy": "gesture accuracy"}


def pareto_front(df: pl.DataFrame, x: str, y: str) -> pl.Series:
    """Bool per row: no other row has x ≤ and y ≥ with one of them strict (lower cost, higher quality).
    Rows with a missing x or y are never on the front."""
    xs, ys = df[x].to_list(), df[y].to_list()
    out = []
    for i, (a, b) in enumerate(zip(xs, ys)):
        if a is None or b is None:
            out.append(False)
            continue
        out.append(not any(j != i and c is not None and d is not None and c <= a and d >= b and (c < a or d > b)
                           for j, (c, d) in enumerate(zip(xs, ys))))
    return pl.Series("pareto", out)


def _label(row: dict) -> str:
    knobs = json.loads(row.get("knobs") or "{}")
    b = row.get("budget")
    text = "" if b is None else f"{b:g}"
    if knobs:
        text += " " + ",".join(f"{k}={v}" for k, v in knobs.items())
    return text.strip()


def pareto_figure(summary: pl.DataFrame, y: str = "cider", x: str = "flops_ratio", title: str | None = None,
                  height: int = 420) -> go.Figure:
    """One quality-vs-cost panel: a line per method (and knob setting) over budgets, labelled by budget; the
    dense point as a star; the Pareto frontier dashed."""
    require_columns(summary, ["method", "budget", "knobs", x, y], "pareto_figure")
    df = summary.filter(pl.col(x).is_not_null() & pl.col(y).is_not_null())
    if df.height == 0:
        return message_figure(f"no {QUALITY.get(y, y)} in this sweep", title or "", height)
    df = df.with_columns(pl.Series("label", [_label(r) for r in df.iter_rows(named=True)]),
                         pl.Series("setting", [r["method"] + ("" if r["knobs"] in ("{}", None) else " " + r["knobs"])
                                               for r in df.iter_rows(named=True)]))
    dense = df.filter(pl.col("method") == "dense")
    rest = df.filter(pl.col("method") != "dense")
    d = (float(dense[x][0]), float(dense[y][0])) if dense.height else None
    fig = accuracy_vs_flops(rest, x=x, y=y, label="label", group="setting", dense=d, x_title=COSTS.get(x, x),
                            y_title=QUALITY.get(y, y),
                            title=title or f"{QUALITY.get(y, y)} vs {COSTS.get(x, x)}")
    for tr in fig.data:  # the text labels are the budgets: "31" rather than "label=31"
        if tr.text is not None:
            tr.text = [t.replace("label=", "") for t in tr.text]
    front = df.filter(pareto_front(df, x, y)).sort(x)
    fig.add_trace(go.Scatter(x=front[x].to_list(), y=front[y].to_list(), mode="lines", name="Pareto frontier",
                             line=dict(dash="dash", color="#444", width=1), hoverinfo="skip"))
    fig.update_layout(height=height)
    return fig


def pareto_grid(summary: pl.DataFrame, costs=("flops_ratio", "latency_ratio", "tokens_per_frame"),
                quality=("cider", "qa_accuracy", "gesture_accuracy"), height: int = 300) -> go.Figure:
    """Every quality (rows) against every cost (columns) in one figure; the dense point a star in each panel.

        >>> s = pl.DataFrame({"method": ["dense", "tome"], "budget": [None, 31.0], "knobs": ["{}", "{}"],
        ...                   "flops_ratio": [1.0, 0.4], "cider": [1.0, 0.8]})
        >>> len(pareto_grid(s, costs=("flops_ratio",), quality=("cider",)).data)
        3
    """
    quality = [q for q in quality if q in summary.columns and summary[q].null_count() < summary.height]
    costs = [c for c in costs if c in summary.columns]
    if not quality or not costs:
        return message_figure("this sweep has no quality metric to plot", "", height)
    fig = make_subplots(rows=len(quality), cols=len(costs), shared_xaxes="columns", vertical_spacing=0.08,
                        horizontal_spacing=0.06)
    seen = set()
    for i, q in enumerate(quality, 1):
        for j, c in enumerate(costs, 1):
            for tr in pareto_figure(summary, q, c).data:
                tr.showlegend = tr.name not in seen
                seen.add(tr.name)
                tr.legendgroup = tr.name
                fig.add_trace(tr, row=i, col=j)
            if i == len(quality):
                fig.update_xaxes(title_text=COSTS.get(c, c), row=i, col=j)
            if j == 1:
                fig.update_yaxes(title_text=QUALITY.get(q, q), row=i, col=j)
    fig.update_layout(**base_layout("Quality vs cost at matched budgets (dense ★, Pareto frontier dashed)",
                                    height * len(quality)))
    return fig
