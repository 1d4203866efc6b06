"""The router timeline of an ANC run: which branch ran at each frame, how sure the router was, and why.

    router_timeline(trace, frame_index=None, fps=None, title=None) -> go.Figure

Three rows sharing the frame axis:
1. branch per frame (`route_choice`, a step line over skip / light / medium / full), with the switch count
   (and switches per second when `fps` is given) in the title;
2. the branch probabilities π as a stacked area (`route_prob`, one row per frame × branch, target = branch);
3. motion energy: the router's own inputs — the mean per-patch energy against the previous frame and against
   the reference frame (`router_feature` rows `prev_mean`, `ref_mean`, log-squashed as the router sees them).

A run without a router (dense, STTF) gets one row instead, titled "router timeline: no router in this run"
with a one-line note under the title (not a subplot title, which used to collide with it): the mean STTF change
score per frame when the trace has one — so the activity of any run can be read on the same frame axis.
`frame_index` draws the scrubber's frame as a dashed line.

    >>> import numpy as np, polars as pl
    >>> from workbench.trace.schema import TRACE_SCHEMA
    >>> t, k = 3, 4
    >>> probs = np.array([[0, 0, 0, 1], [0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1]])
    >>> df = pl.concat([
    ...     pl.DataFrame({"run_id": "r", "sample_id": "s", "frame": np.repeat(np.arange(t), k), "layer": -1,
    ...         "site": "anc.router", "token": -1, "kind": "route_prob", "value": probs.ravel(),
    ...         "target": np.tile(np.arange(k), t)}, schema=TRACE_SCHEMA),
    ...     pl.DataFrame({"run_id": "r", "sample_id": "s", "frame": np.arange(t), "layer": -1, "site": "anc.router",
    ...         "token": -1, "kind": "route_choice", "value": [3.0, 0.0, 2.0], "target": [3, 0, 2]},
    ...         schema=TRACE_SCHEMA)])
    >>> fig = router_timeline(df)
    >>> fig.data[0].y.tolist(), fig.layout.title.text
    ([3.0, 0.0, 2.0], 'router: 2 switches in 3 frames · full 1 · skip 1 · medium 1')
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from workbench.viz.style import add_frame_marker, base_layout, frame_series

__all__ = ["router_timeline", "route_table", "BRANCH_NAMES", "BRANCH_COLORS"]

# the order of workbench.methods.anc_modules.BRANCHES (tests check they agree); kept here so figures need no torch
BRANCH_NAMES: tuple[str, ...] = ("skip", "light", "medium", "full")
BRANCH_COLORS = {"skip": "#1f77b4", "light": "#2ca02c", "medium": "#ff7f0e", "full": "#d62728"}
NO_ROUTER_HINT = "activity: mean change score per frame · choose ANC or STTF+ANC to see a router"
_ENERGY = {"prev_mean": "energy vs previous frame", "ref_mean": "energy vs reference frame"}


def route_table(trace: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(choices (T,) int, probs (T, K)) of an ANC trace; empty arrays when the run had no router."""
    ch = trace.filter((pl.col("kind") == "route_choice") & (pl.col("token") == -1)).sort("frame")
    pr = trace.filter(pl.col("kind") == "route_prob")
    if ch.height == 0:
        return np.zeros(0, np.int64), np.zeros((0, len(BRANCH_NAMES)))
    t = int(ch["frame"].max()) + 1
    k = max(len(BRANCH_NAMES), int(pr["target"].max()) + 1 if pr.height else 0)
    probs = np.zeros((t, k))
    if pr.height:
        probs[pr["frame"].to_numpy(), pr["target"].to_numpy()] = pr["value"].to_numpy()
    choices = np.zeros(t, np.int64)
    choices[ch["frame"].to_numpy()] = ch["value"].to_numpy().astype(np.int64)
    return choices, probs


def _energy(trace: pl.DataFrame) -> dict[str, np.ndarray]:
    rows = trace.filter(pl.col("kind") == "router_feature")
    if rows.height == 0:
        return {}
    from workbench.methods.ops.routing import FEATURE_NAMES
    out = {}
    for name, label in _ENERGY.items():
        r = rows.filter(pl.col("token") == FEATURE_NAMES.index(name)).sort("frame")
        if r.height:
            out[label] = r["value"].to_numpy()
    return out


def _mean_change_score(trace: pl.DataFrame) -> np.ndarray:
    rows = trace.filter((pl.col("kind") == "change_score") & (pl.col("token") >= 0))
    if rows.height == 0:
        return np.zeros(0)
    m = rows.group_by("frame").agg(pl.col("value").mean()).sort("frame")
    return m["value"].to_numpy()


def _n_frames(trace: pl.DataFrame) -> int:
    rows = trace.filter(pl.col("frame") >= 0)
    return int(rows["frame"].max()) + 1 if rows.height else 0


def _add_activity(fig: go.Figure, trace: pl.DataFrame, row: int) -> None:
    """Motion energy (ANC's router inputs), else the mean STTF change score, else a note — on `row`."""
    kw = {"row": row, "col": 1} if row > 1 else {}
    energy = _energy(trace)
    if energy:
        for label, v in energy.items():
            fig.add_trace(go.Scatter(x=np.arange(len(v)), y=v, mode="lines+markers", name=label), **kw)
        fig.update_yaxes(title_text="log energy", **kw)
        return
    cs = _mean_change_score(trace)
    if len(cs):
        fig.add_trace(go.Scatter(x=np.arange(len(cs)), y=cs, mode="lines+markers", name="mean change score"), **kw)
        fig.update_yaxes(title_text="change score", **kw)
        return
    axis = "" if row == 1 else str(row)
    fig.add_annotation(text="dense run: no change scores" if len(frame_series(trace, "tokens_computed"))
                       else "no activity signal in this run", showarrow=False, xref=f"x{axis} domain",
                       yref=f"y{axis} domain", x=0.5, y=0.5, font=dict(color="#777"))


def router_timeline(trace: pl.DataFrame, frame_index: int | None = None, fps: float | None = None,
                    title: str | None = None, height: int = 520) -> go.Figure:
    """Branch per frame, stacked branch probabilities and motion energy (see the module docstring)."""
    choices, probs = route_table(trace)
    n = len(choices) or _n_frames(trace)
    if not len(choices):  # no router: one row of activity, so the view still follows the clip
        fig = go.Figure()
        _add_activity(fig, trace, 1)
        if n:
            fig.update_xaxes(range=[-0.5, n - 0.5])
        fig.update_xaxes(title_text="frame", dtick=1 if 0 < n <= 32 else None)
        layout = base_layout(title or "router timeline: no router in this run", height)
        layout["margin"] = {**layout["margin"], "t": 78}  # room for the title and, below it, what is shown
        fig.update_layout(**layout, showlegend=False)
        fig.add_annotation(text=NO_ROUTER_HINT, xref="paper", yref="paper", x=0, y=1.02, xanchor="left",
                           yanchor="bottom", showarrow=False, font=dict(size=11, color="#555"), align="left")
        return add_frame_marker(fig, frame_index)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.28, 0.4, 0.32],
                        subplot_titles=("branch per frame", "branch probabilities π", "motion energy"))
    names = list(BRANCH_NAMES) + [f"branch {i}" for i in range(len(BRANCH_NAMES), probs.shape[1])]
    frames = np.arange(len(choices))
    fig.add_trace(go.Scatter(x=frames, y=choices.astype(float), mode="lines+markers", line_shape="hv",
                             name="branch", text=[names[c] for c in choices], hovertemplate="frame %{x}: %{text}",
                             marker=dict(size=9, color=[BRANCH_COLORS.get(names[c], "#444") for c in choices]),
                             line=dict(color="#444"), showlegend=False), row=1, col=1)
    for k, name in enumerate(names):
        fig.add_trace(go.Scatter(x=frames, y=probs[:, k], stackgroup="pi", name=name, mode="lines",
                                 line=dict(width=0.5, color=BRANCH_COLORS.get(name)),
                                 hovertemplate=f"{name}: %{{y:.2f}}<extra></extra>"), row=2, col=1)
    switches = int((np.diff(choices) != 0).sum())
    rate = f" ({switches / (len(choices) / fps):.2f}/s)" if fps else ""
    used = " · ".join(f"{names[c]} {int((choices == c).sum())}" for c in dict.fromkeys(choices.tolist()))
    auto = f"router: {switches} switches in {len(choices)} frames{rate} · {used}"
    fig.update_yaxes(tickvals=list(range(len(names))), ticktext=names, range=[-0.5, len(names) - 0.5], row=1, col=1)
    fig.update_yaxes(range=[0, 1.0001], title_text="π", row=2, col=1)
    _add_activity(fig, trace, 3)
    fig.update_xaxes(range=[-0.5, n - 0.5])
    fig.update_xaxes(title_text="frame", dtick=1 if n <= 32 else None, row=3, col=1)
    fig.update_layout(**base_layout(title or auto, height))
    return add_frame_marker(fig, frame_index, rows=3)
