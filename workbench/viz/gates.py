"""STTF gate figures: change-score trajectories against τ, recomputed tokens per frame, the distribution of
change scores, and the drift of reused tokens by reference age.

Pure functions of polars tables → plotly Figures (never shown here). `drift_by_age` and `score_histogram`
read the long-format trace (`workbench.trace.schema`); the others take small tidy tables a notebook builds.

    >>> import polars as pl
    >>> df = pl.DataFrame({"frame": [0, 1, 2, 0, 1, 2], "score": [0.0, 0.03, 0.06, 0.0, 0.03, 0.03],
    ...                    "label": ["reference"] * 3 + ["previous frame"] * 3,
    ...                    "fired": [True, False, True, True, False, False]})
    >>> fig = score_trajectories(df, tau=0.05)
    >>> [t.name for t in fig.data]
    ['reference', 'reference fires', 'previous frame', 'previous frame fires']
"""
from __future__ import annotations

import plotly.graph_objects as go
import polars as pl

from workbench.viz.sweeps import require_columns

__all__ = ["score_trajectories", "recompute_per_frame", "score_histogram", "drift_by_age"]


def _groups(df: pl.DataFrame, group: str | None) -> list[tuple[str | None, pl.DataFrame]]:
    if group is None:
        return [(None, df)]
    return [(str(g), df.filter(pl.col(group) == g)) for g in df[group].unique(maintain_order=True).to_list()]


def score_trajectories(df: pl.DataFrame, tau: float | None = None, x: str = "frame", y: str = "score",
                       group: str | None = "label", fired: str | None = "fired",
                       title: str = "Change score per frame") -> go.Figure:
    """One line per `group` of a change score over frames; where the boolean column `fired` is true (the gate
    recomputes) a marker; τ as a dashed horizontal line. Missing `fired` column → no markers."""
    fired = fired if fired is not None and fired in df.columns else None
    require_columns(df, [x, y, group], "score_trajectories")
    fig = go.Figure()
    for name, part in _groups(df, group):
        part = part.sort(x)
        fig.add_trace(go.Scatter(x=part[x].to_list(), y=part[y].to_list(), mode="lines+markers",
                                 name=name or y, legendgroup=name))
        if fired is not None:
            hit = part.filter(pl.col(fired))
            fig.add_trace(go.Scatter(x=hit[x].to_list(), y=hit[y].to_list(), mode="markers",
                                     name=f"{name or y} fires", legendgroup=name,
                                     marker={"symbol": "x", "size": 12, "line": {"width": 2}}))
    if tau is not None:
        fig.add_hline(y=tau, line_dash="dash", annotation_text=f"τ = {tau:g}", annotation_position="top left")
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, template="plotly_white")
    return fig


def recompute_per_frame(df: pl.DataFrame, x: str = "frame", y: str = "recomputed", group: str | None = "label",
                        total: int | None = None, title: str = "Recomputed tokens per frame") -> go.Figure:
    """Per-frame counts (e.g. `FrameStats.tokens_computed`) as one step line per `group` (a policy, a τ);
    `total` (N = 196) draws the dense level."""
    require_columns(df, [x, y, group], "recompute_per_frame")
    fig = go.Figure()
    for name, part in _groups(df, group):
        part = part.sort(x)
        mean = float(part[y].mean()) if part.height else float("nan")
        fig.add_trace(go.Scatter(x=part[x].to_list(), y=part[y].to_list(), mode="lines+markers",
                                 line_shape="hv", name=f"{name or y} (mean {mean:.1f})"))
    if total is not None:
        fig.add_hline(y=total, line_dash="dot", annotation_text=f"dense = {total}", annotation_position="bottom right")
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, template="plotly_white")
    return fig


def score_histogram(trace: pl.DataFrame, taus: list[float] | None = None, site: str = "sttf.gate",
                    skip_first: bool = True, nbins: int = 60, log_x: bool = True,
                    title: str = "Distribution of change scores") -> go.Figure:
    """Histogram of the trace's `change_score` rows at `site` (frame 0, which has no reference, left out by
    default), with each τ of `taus` as a vertical line labelled with the fraction of scores ≥ τ.
    log_x histograms log10(score) over the positive scores (zeros are counted in the title)."""
    require_columns(trace, ["kind", "site", "frame", "value"], "score_histogram")
    s = trace.filter((pl.col("kind") == "change_score") & (pl.col("site") == site))
    if skip_first:
        s = s.filter(pl.col("frame") > 0)
    if s.height == 0:
        raise ValueError(f"the trace has no change_score rows at site {site!r}")
    v = s["value"]
    zeros = int((v <= 0).sum())
    if log_x:
        shown = v.filter(v > 0).log10()
        x_title = "log10(change score)"
    else:
        shown, x_title = v, "change score"
    fig = go.Figure(go.Histogram(x=shown.to_list(), nbinsx=nbins, name="scores"))
    for k, tau in enumerate(t for t in (taus or []) if t > 0 or not log_x):
        frac = float((v >= tau).mean())
        pos = float(pl.Series([tau]).log10()[0]) if log_x else tau
        fig.add_vline(x=pos, line_dash="dash")
        fig.add_annotation(x=pos, y=1 - 0.07 * k, yref="paper", xanchor="left", showarrow=False,  # staggered
                           text=f" τ={tau:g}: {100 * frac:.0f}% recompute", bgcolor="rgba(255,255,255,0.8)")
    fig.update_layout(title=f"{title} ({v.len()} patch-frames, {zeros} exactly 0)", xaxis_title=x_title,
                      yaxis_title="patch-frames", template="plotly_white", showlegend=False)
    return fig


def drift_by_age(trace: pl.DataFrame, title: str = "Drift of reused tokens by reference age") -> go.Figure:
    """Mean drift (1 − cos(STTF token, dense token), kind `drift`, recorded in debug mode) per reference age
    (kind `ref_age`: frames since the patch was last recomputed), with the number of patch-frames on hover.
    Age 0 = recomputed this frame (its drift comes only from stale keys/values of reused neighbours)."""
    require_columns(trace, ["kind", "frame", "token", "value"], "drift_by_age")
    drift = trace.filter(pl.col("kind") == "drift").select("frame", "token", pl.col("value").alias("drift"))
    if drift.height == 0:
        raise ValueError("the trace has no drift rows: record it in debug mode (tracing(..., debug=True) or "
                         "STTF.run(..., debug=True))")
    age = trace.filter(pl.col("kind") == "ref_age").select("frame", "token", pl.col("value").alias("age"))
    g = (drift.join(age, on=["frame", "token"]).group_by("age")
         .agg(pl.col("drift").mean().alias("mean"), pl.col("drift").max().alias("max"), pl.len().alias("n"))
         .sort("age"))
    fig = go.Figure()
    fig.add_trace(go.Bar(x=g["age"].to_list(), y=g["mean"].to_list(), name="mean drift",
                         customdata=g.select("n", "max").rows(),
                         hovertemplate="age %{x}<br>mean drift %{y:.4f}<br>max %{customdata[1]:.4f}"
                                       "<br>%{customdata[0]} patch-frames<extra></extra>"))
    fig.add_trace(go.Scatter(x=g["age"].to_list(), y=g["max"].to_list(), mode="markers", name="max drift"))
    fig.update_layout(title=title, xaxis_title="reference age (frames since recompute)",
                      yaxis_title="1 − cos(reused, dense)", template="plotly_white")
    return fig
