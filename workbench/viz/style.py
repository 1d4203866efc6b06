"""Shared pieces of the dashboard figures: decision colours, frame images, trace look-ups, frame markers.

Everything here is pure (arrays / DataFrames in, arrays / figures out) and is used by `overlay.py`,
`timeline.py`, `costs.py` and `events_view.py`.

    >>> import numpy as np, polars as pl
    >>> to_rgb_image(np.zeros((2, 8, 8), np.float32)).shape  # an event frame (OFF, ON) → (H, W, 3) uint8
    (8, 8, 3)
    >>> df = pl.DataFrame({"frame": [1, 0], "token": [-1, -1], "kind": ["tokens_to_decoder"] * 2,
    ...                    "site": ["sttf"] * 2, "value": [30.0, 196.0]})
    >>> frame_series(df, "tokens_to_decoder").tolist()
    [196.0, 30.0]
"""
from __future__ import annotations

import base64
import io

import numpy as np
import plotly.graph_objects as go
import polars as pl
from PIL import Image

from workbench.trace.schema import DECISIONS

__all__ = ["DECISION_COLORS", "DECISION_NAMES", "to_rgb_image", "image_data_uri", "frame_series", "pick_site",
           "message_figure", "add_frame_marker", "base_layout"]

DECISION_NAMES: dict[int, str] = {v: k for k, v in DECISIONS.items()}
DECISION_COLORS: dict[str, str] = {
    "recomputed": "#d62728", "reused": "#1f77b4", "fused": "#2ca02c",
    "pruned": "#7f7f7f", "kept": "#ff7f0e", "recycled": "#9467bd",
}
DENSE_COLOR, COMPRESSED_COLOR, SAVING_COLOR = "#9e9e9e", "#d62728", "#2ca02c"


def to_rgb_image(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 of a frame given as (H, W, 3) uint8 / float in [0, 1], (3, H, W) RGB floats or
    (2, H, W) event floats (channel 0 OFF → blue, channel 1 ON → red, as `viz.frames.frame_image`)."""
    f = np.asarray(frame)
    if f.ndim != 3:
        raise ValueError(f"a frame must be (H, W, 3), (3, H, W) or (2, H, W), got shape {f.shape}")
    if f.shape[0] == 2 and f.shape[-1] != 3:  # events: OFF, ON
        f = np.stack([f[1], np.zeros_like(f[0]), f[0]], -1)
    elif f.shape[0] == 3 and f.shape[-1] != 3:
        f = f.transpose(1, 2, 0)
    if f.shape[-1] != 3:
        raise ValueError(f"cannot read a frame of shape {np.asarray(frame).shape} as an image")
    if f.dtype == np.uint8:
        return f
    return (np.clip(f, 0, 1) * 255).round().astype(np.uint8)


def image_data_uri(img: np.ndarray, min_side: int = 448) -> tuple[str, int]:
    """(PNG data URI, upscale factor): the image is enlarged by an integer nearest-neighbour factor so its
    side is ≥ min_side, which keeps patch edges crisp when the browser scales it."""
    scale = max(1, int(np.ceil(min_side / max(img.shape[:2]))))
    big = img.repeat(scale, 0).repeat(scale, 1) if scale > 1 else img
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(big)).save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), scale


def pick_site(df: pl.DataFrame, prefer: tuple[str, ...] = ()) -> str | None:
    """The site to read when a kind is logged at several: the first whose name ends with one of `prefer`,
    else a plain (undotted) site — where the pipeline logs its per-frame totals — else the first in order."""
    if df.height == 0:
        return None
    sites = sorted(set(df["site"].to_list()))
    for suffix in prefer:
        for s in sites:
            if s.endswith(suffix):
                return s
    plain = [s for s in sites if "." not in s]
    return (plain or sites)[0]


def frame_series(trace: pl.DataFrame | None, kind: str, site: str | None = None,
                 prefer: tuple[str, ...] = ()) -> np.ndarray:
    """(T,) per-frame values of a frame-level `kind` (token == −1, frame ≥ 0), ordered by frame; empty when
    absent. With several sites logging the kind, `site` or `pick_site` decides."""
    if trace is None or trace.height == 0:
        return np.zeros(0)
    rows = trace.filter((pl.col("kind") == kind) & (pl.col("token") == -1) & (pl.col("frame") >= 0))
    site = site or pick_site(rows, prefer)
    if site is None:
        return np.zeros(0)
    rows = rows.filter(pl.col("site") == site).sort("frame")
    return rows["value"].to_numpy().astype(np.float64)


def message_figure(text: str, title: str = "", height: int = 300) -> go.Figure:
    """An empty figure that says why there is nothing to draw."""
    fig = go.Figure()
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=14, color="#555"))
    fig.update_layout(**base_layout(title, height))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def add_frame_marker(fig: go.Figure, frame_index: int | None, rows: int = 1) -> go.Figure:
    """A vertical dashed line at the scrubber's frame on every row of a frame-axis figure."""
    if frame_index is None:
        return fig
    for r in range(1, rows + 1):
        kw = {"row": r, "col": 1} if rows > 1 else {}
        fig.add_vline(x=frame_index, line=dict(color="#333", width=1, dash="dash"), **kw)
    return fig


def base_layout(title: str, height: int) -> dict:
    return dict(title=dict(text=title, x=0.01, xanchor="left", font=dict(size=14)), height=height,
                margin=dict(l=50, r=20, t=50, b=40), template="plotly_white",
                legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
