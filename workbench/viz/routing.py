"""ANC router figures: the router's input features per frame, decisions of several configurations side by
side, FLOPs by motion level and routing stability (switches per second).

Pure functions of polars tables → plotly Figures. `router_features_heatmap` reads the long-format trace
(kind `router_feature`, one row per frame × feature, the feature index in `token`); the others take small
tidy tables a notebook builds from `ANC.route` results.

    >>> import polars as pl
    >>> df = pl.DataFrame({"frame": [0, 1, 0, 1], "choice": [3, 0, 3, 3], "setting": ["h=0", "h=0", "h=0.1", "h=0.1"]})
    >>> fig = decision_steps(df, branches=("skip", "light", "medium", "full"))
    >>> [t.name for t in fig.data], list(fig.layout.yaxis.ticktext)
    (['h=0 (1 switches)', 'h=0.1 (0 switches)'], ['skip', 'light', 'medium', 'full'])
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import polars as pl

from workbench.viz.sweeps import require_columns

__all__ = ["router_features_heatmap", "decision_steps", "flops_by_motion", "switch_rates"]

LEVEL_ORDER = ("static", "low", "high")


def router_features_heatmap(trace: pl.DataFrame, names: Sequence[str] | None = None, site: str = "anc.router",
                            title: str = "Router input features per frame") -> go.Figure:
    """Frame × feature heatmap of the `router_feature` rows of a trace (`names[i]` labels feature i)."""
    require_columns(trace, ["kind", "site", "frame", "token", "value"], "router_features_heatmap")
    f = trace.filter((pl.col("kind") == "router_feature") & (pl.col("site") == site))
    if f.height == 0:
        raise ValueError(f"the trace has no router_feature rows at site {site!r} (was it an ANC run with trace=True?)")
    frames = sorted(f["frame"].unique().to_list())
    n_feat = int(f["token"].max()) + 1
    z = np.full((n_feat, len(frames)), np.nan)
    col = {fr: i for i, fr in enumerate(frames)}
    for fr, tok, v in f.select("frame", "token", "value").iter_rows():
        z[tok, col[fr]] = v
    labels = list(names) if names is not None else [f"feature {i}" for i in range(n_feat)]
    if len(labels) != n_feat:
        raise ValueError(f"{len(labels)} feature names for {n_feat} features")
    fig = go.Figure(go.Heatmap(z=z.tolist(), x=frames, y=labels, colorscale="Viridis", colorbar={"title": "value"},
                               hovertemplate="frame %{x}<br>%{y}: %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="frame", template="plotly_white", height=160 + 24 * n_feat,
                      yaxis={"dtick": 1})  # every feature named
    return fig


def decision_steps(df: pl.DataFrame, branches: Sequence[str], x: str = "frame", choice: str = "choice",
                   group: str | None = "setting", title: str = "Branch chosen per frame") -> go.Figure:
    """One step line per `group` (e.g. hysteresis on / off) of the branch index per frame, y labelled with
    the branch names; the legend counts each line's switches (frames whose branch differs from the previous)."""
    require_columns(df, [x, choice, group], "decision_steps")
    fig = go.Figure()
    groups = [(None, df)] if group is None else [
        (str(g), df.filter(pl.col(group) == g)) for g in df[group].unique(maintain_order=True).to_list()]
    for k, (name, part) in enumerate(groups):
        part = part.sort(x)
        c = part[choice].to_numpy()
        switches = int((c[1:] != c[:-1]).sum()) if len(c) > 1 else 0
        offset = 0.06 * (k - (len(groups) - 1) / 2)  # keep overlapping lines apart
        fig.add_trace(go.Scatter(x=part[x].to_list(), y=(c + offset).tolist(), mode="lines+markers",
                                 line_shape="hv", name=f"{name or choice} ({switches} switches)",
                                 customdata=[branches[int(v)] for v in c],
                                 hovertemplate="frame %{x}: %{customdata}<extra>%{fullData.name}</extra>"))
    fig.update_layout(title=title, xaxis_title=x, template="plotly_white",
                      yaxis={"tickvals": list(range(len(branches))), "ticktext": list(branches),
                             "range": [-0.5, len(branches) - 0.5], "title": "branch"})
    return fig


def _levels(values: list) -> list:
    known = [lv for lv in LEVEL_ORDER if lv in values]
    return known + [v for v in values if v not in known]


def flops_by_motion(df: pl.DataFrame, x: str = "motion_level", y: str = "flops_ratio", group: str | None = None,
                    title: str = "Encoder FLOPs vs motion level") -> go.Figure:
    """Per-clip FLOPs (by default the ratio to dense) by motion level: a box with every clip as a point, one
    box per `group` (e.g. a cost bias) at each level; the dense level (1.0) dotted when y is a ratio."""
    require_columns(df, [x, y, group], "flops_by_motion")
    order = _levels(df[x].unique(maintain_order=True).to_list())
    fig = go.Figure()
    groups = [(None, df)] if group is None else [
        (str(g), df.filter(pl.col(group) == g)) for g in df[group].unique(maintain_order=True).to_list()]
    for name, part in groups:
        fig.add_trace(go.Box(x=part[x].to_list(), y=part[y].to_list(), name=name or y, boxpoints="all",
                             jitter=0.3, pointpos=0, boxmean=True))
    if y == "flops_ratio":
        fig.add_hline(y=1.0, line_dash="dot", annotation_text="dense", annotation_position="top left")
    fig.update_layout(title=title, xaxis={"title": x, "categoryorder": "array", "categoryarray": order},
                      yaxis_title="encoder FLOPs / dense" if y == "flops_ratio" else y, template="plotly_white",
                      boxmode="group" if group else "overlay")
    return fig


def switch_rates(df: pl.DataFrame, x: str = "motion_level", y: str = "switches_per_s", group: str = "setting",
                 title: str = "Routing stability: branch switches per second") -> go.Figure:
    """Grouped bars of the mean of `y` per `x` (motion level) for each `group` (e.g. hysteresis on / off);
    hover shows the number of clips averaged."""
    require_columns(df, [x, y, group], "switch_rates")
    order = _levels(df[x].unique(maintain_order=True).to_list())
    g = df.group_by(group, x, maintain_order=True).agg(pl.col(y).mean().alias("mean"), pl.len().alias("n"))
    fig = go.Figure()
    for name in g[group].unique(maintain_order=True).to_list():
        part = g.filter(pl.col(group) == name)
        fig.add_trace(go.Bar(x=part[x].to_list(), y=part["mean"].to_list(), name=str(name),
                             customdata=part["n"].to_list(),
                             hovertemplate="%{x}: %{y:.2f}/s (mean of %{customdata} clips)<extra>%{fullData.name}</extra>"))
    fig.update_layout(title=title, barmode="group", yaxis_title="switches per second", template="plotly_white",
                      xaxis={"title": x, "categoryorder": "array", "categoryarray": order})
    return fig
