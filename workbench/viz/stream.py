"""Stream-long figures: what a method did on every frame of a whole stream, and where the windows fell.

    stream_timeline(frames, windows, frame_index=None, n_patches=196, title=None) -> go.Figure

`frames`: one row per frame of a stream run — `frame`, `start_s`, `tokens_computed`, `keyframe`, `branch`
(−1 without a router) — the frame-level part of the run's trace pivoted wide (`workbench.stream.trace`).
`windows`: one row per window — `start_s`, `end_s`, `tokens_per_frame` (to the decoder), `caption`.
Rows sharing the time axis (seconds of media):
1. tokens computed per frame (the encoder's work; dense = N), keyframes marked, and each window's visual
   tokens per frame entering the decoder as a step line;
2. recompute rate per frame (tokens computed ÷ N) with its running mean over one window;
3. the router's branch per frame (ANC / STTF+ANC only).
Window edges are drawn (up to 80 of them); hovering a window's step shows its caption. `frame_index` draws the
scrubber's frame.

    >>> import polars as pl
    >>> f = pl.DataFrame({"frame": [0, 1, 2, 3], "start_s": [0.0, 0.5, 1.0, 1.5], "tokens_computed": [196, 10, 0, 5],
    ...                   "keyframe": [True, False, False, False], "branch": [-1] * 4})
    >>> w = pl.DataFrame({"start_s": [0.0, 1.0], "end_s": [1.0, 2.0], "tokens_per_frame": [103.0, 98.0],
    ...                   "caption": ["a", "b"]})
    >>> fig = stream_timeline(f, w, frame_index=2)
    >>> len(fig.data), fig.layout.title.text
    (4, 'stream: 4 frames · 2 windows · 52.8 tokens computed per frame (27 % of dense)')
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from workbench.viz.style import COMPRESSED_COLOR, DENSE_COLOR, base_layout
from workbench.viz.timeline import BRANCH_COLORS, BRANCH_NAMES

__all__ = ["stream_timeline", "MAX_EDGES"]

MAX_EDGES = 80


def _window_steps(windows: pl.DataFrame) -> tuple[list, list, list]:
    """x, y, hover text of a step line: each window's tokens per frame held from its start to its end."""
    xs, ys, texts = [], [], []
    for w in windows.iter_rows(named=True):
        xs += [w["start_s"], w["end_s"], None]
        ys += [w["tokens_per_frame"]] * 2 + [None]
        texts += [w["caption"]] * 2 + [None]
    return xs, ys, texts


def stream_timeline(frames: pl.DataFrame, windows: pl.DataFrame, frame_index: int | None = None,
                    n_patches: int = 196, title: str | None = None, height: int = 560) -> go.Figure:
    """Tokens computed, recompute rate and router branch per frame over a whole stream (module docstring)."""
    routed = frames.height > 0 and int(frames["branch"].max()) >= 0
    rows = 3 if routed else 2
    titles = ("tokens per frame: computed by the encoder (bars) · to the decoder per window (steps)",
              "recompute rate", "router branch")[:rows]
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.08, subplot_titles=titles,
                        row_heights=[0.5, 0.25, 0.25][:rows] if routed else [0.62, 0.38])
    t = frames["start_s"].to_numpy().astype(float)
    comp = frames["tokens_computed"].to_numpy().astype(float)
    fig.add_trace(go.Bar(x=t, y=comp, name="tokens computed", marker_color=COMPRESSED_COLOR, marker_line_width=0,
                         customdata=frames["frame"].to_numpy(), hovertemplate="frame %{customdata}: %{y:.0f}"),
                  row=1, col=1)
    key = frames["keyframe"].to_numpy().astype(bool)
    if key.any():
        fig.add_trace(go.Scatter(x=t[key], y=comp[key], mode="markers", name="dense frame",
                                 marker=dict(symbol="triangle-down", size=8, color="#333")), row=1, col=1)
    xs, ys, texts = _window_steps(windows)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="to the decoder (per window)", text=texts,
                             line=dict(color="#1f77b4", width=2), hovertemplate="%{y:.1f} tokens/frame: %{text}"),
                  row=1, col=1)
    fig.add_hline(y=n_patches, line=dict(color=DENSE_COLOR, dash="dot"), row=1, col=1)
    rate = comp / n_patches
    w = max(1, int(round(len(rate) / max(windows.height, 1))))
    run = np.convolve(rate, np.ones(w) / w, mode="full")[: len(rate)] if len(rate) else rate
    fig.add_trace(go.Scatter(x=t, y=run, mode="lines", name=f"recompute rate (running mean, {w} frames)",
                             line=dict(color=COMPRESSED_COLOR)), row=2, col=1)
    fig.update_yaxes(range=[0, 1.02], title_text="rate", row=2, col=1)
    fig.update_yaxes(title_text="tokens", row=1, col=1)
    if routed:
        b = frames["branch"].to_numpy().astype(int)
        fig.add_trace(go.Scatter(x=t, y=b, mode="markers", name="branch", showlegend=False,
                                 text=[BRANCH_NAMES[i] for i in b], hovertemplate="%{x:.2f} s: %{text}",
                                 marker=dict(size=5, color=[BRANCH_COLORS.get(BRANCH_NAMES[i], "#444") for i in b])),
                      row=3, col=1)
        fig.update_yaxes(tickvals=list(range(len(BRANCH_NAMES))), ticktext=list(BRANCH_NAMES),
                         range=[-0.5, len(BRANCH_NAMES) - 0.5], row=3, col=1)
    if windows.height <= MAX_EDGES:
        for s in windows["start_s"].to_list()[1:]:
            for r in range(1, rows + 1):
                fig.add_vline(x=s, line=dict(color="#bbb", width=1), row=r, col=1)
    if frame_index is not None and 0 <= frame_index < frames.height:
        for r in range(1, rows + 1):
            fig.add_vline(x=float(t[frame_index]), line=dict(color="#333", width=1, dash="dash"), row=r, col=1)
    fig.update_xaxes(title_text="time in the stream (s)", row=rows, col=1)
    mean = float(comp.mean()) if len(comp) else 0.0
    auto = (f"stream: {frames.height} frames · {windows.height} windows · {mean:.1f} tokens computed per frame "
            f"({100 * mean / n_patches:.0f} % of dense)")
    layout = base_layout(title or auto, height)
    layout["margin"] = {**layout["margin"], "t": 90}
    layout["legend"] = dict(orientation="h", yanchor="top", y=-0.12, xanchor="left", x=0.0)
    fig.update_layout(**layout, bargap=0)
    return fig
