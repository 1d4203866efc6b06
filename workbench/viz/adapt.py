"""Figures of cloud-device adaptation: pure functions DataFrame → plotly Figure (the dashboard's adapt tab and
notebook 50_cloud_device call them).

- `accuracy_figure(rounds)`: CIDEr per round on the target and the source domain, one line per run, teacher
  and no-adaptation references dashed.
- `bytes_figure(rounds)`: uplink and downlink bytes per round, stacked, beside send-everything (log axis).
- `confidence_figure(samples, threshold)`: each streamed sample's sequence confidence against the gate.
- `uncertainty_figure(frame, uncertainty, sent)`: per-token MC-dropout uncertainty on the frame, the tokens
  that stayed on the device outlined.
- `delta_figure(layers)`: per trained tensor, the fraction of ΔW entries sent and the bits per entry.

    >>> import polars as pl
    >>> rounds = pl.DataFrame({"run": ["ours"] * 2, "round": [0, 1], "accuracy": [0.2, 0.5], "source": [1.4, 1.39]})
    >>> accuracy_figure(rounds, teacher=0.9).data[0].name
    'ours · target'
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from workbench.viz.style import base_layout, image_data_uri, message_figure, to_rgb_image

PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def accuracy_figure(rounds: pl.DataFrame, teacher: float | None = None, teacher_source: float | None = None,
                    title: str = "CIDEr per round: target (solid) and source (dotted)") -> go.Figure:
    """rounds: run, round (0 = before adapting), accuracy (target CIDEr), source (source CIDEr)."""
    if rounds.height == 0:
        return message_figure("run some rounds first", title)
    fig = go.Figure()
    for i, (run,) in enumerate(rounds.select("run").unique(maintain_order=True).iter_rows()):
        r = rounds.filter(pl.col("run") == run).sort("round")
        color = PALETTE[i % len(PALETTE)]
        fig.add_scatter(x=r["round"].to_list(), y=r["accuracy"].to_list(), mode="lines+markers",
                        name=f"{run} · target", line=dict(color=color))
        fig.add_scatter(x=r["round"].to_list(), y=r["source"].to_list(), mode="lines+markers",
                        name=f"{run} · source", line=dict(color=color, dash="dot"), marker=dict(symbol="circle-open"))
    first = rounds.filter(pl.col("round") == 0)
    if first.height:
        fig.add_hline(y=float(first["accuracy"][0]), line=dict(color="#999", dash="dash"),
                      annotation_text="no adaptation", annotation_position="bottom right")
    if teacher is not None:
        fig.add_hline(y=teacher, line=dict(color="#2ca02c", dash="dash"), annotation_text="teacher (target)",
                      annotation_position="top right")
    if teacher_source is not None:
        fig.add_hline(y=teacher_source, line=dict(color="#2ca02c", dash="dot"), annotation_text="teacher (source)")
    fig.update_layout(**base_layout(title, 380))
    fig.update_xaxes(title="round", dtick=1)
    fig.update_yaxes(title="CIDEr")
    return fig


def bytes_figure(rounds: pl.DataFrame, title: str = "bytes on the wire per round") -> go.Figure:
    """rounds: round (≥ 1), uplink, downlink, send_everything (bytes). Stacked bars, log axis."""
    rows = rounds.filter(pl.col("round") >= 1).sort("round") if rounds.height else rounds
    if rows.height == 0:
        return message_figure("run some rounds first", title)
    x = [f"round {r}" for r in rows["round"].to_list()]
    fig = go.Figure()
    fig.add_bar(x=x, y=rows["uplink"].to_list(), name="uplink (UTS payloads)", marker_color="#1f77b4",
                offsetgroup="ours")
    fig.add_bar(x=x, y=rows["downlink"].to_list(), name="downlink (DWC update)", marker_color="#ff7f0e",
                offsetgroup="ours", base=rows["uplink"].to_list())
    fig.add_bar(x=x, y=rows["send_everything"].to_list(), name="send everything (uplink)",
                marker_color="#bbbbbb", offsetgroup="all")
    if "full_weights" in rows.columns:
        fig.add_bar(x=x, y=rows["full_weights"].to_list(), name="full fp32 weights (downlink)",
                    marker_color="#888888", offsetgroup="all", base=rows["send_everything"].to_list())
    fig.update_layout(**base_layout(title, 360), barmode="group")
    fig.update_yaxes(title="bytes", type="log")
    return fig


def confidence_figure(samples: pl.DataFrame, threshold: float,
                      title: str = "sequence confidence of each streamed sample vs the gate") -> go.Figure:
    """samples: round, sample_id, confidence, uploaded (bool)."""
    if samples.height == 0:
        return message_figure("no samples yet", title)
    fig = go.Figure()
    for up, name, color in ((True, "uploaded", "#d62728"), (False, "kept on the device", "#1f77b4")):
        s = samples.filter(pl.col("uploaded") == up)
        if s.height:
            jitter = np.linspace(-0.25, 0.25, s.height) if s.height > 1 else np.zeros(1)
            fig.add_scatter(x=(s["round"].to_numpy() + 1 + jitter).tolist(),
                            y=np.clip(s["confidence"].to_numpy(), 1e-12, 1).tolist(), mode="markers", name=name,
                            marker=dict(color=color, size=8), text=s["sample_id"].to_list(),
                            hovertemplate="%{text}<br>confidence %{y:.2e}<extra></extra>")
    fig.add_hline(y=threshold, line=dict(color="#333", dash="dash"), annotation_text=f"gate {threshold:g}")
    fig.update_layout(**base_layout(title, 340))
    fig.update_xaxes(title="round", dtick=1)
    fig.update_yaxes(title="∏ max p (log)", type="log")
    return fig


def uncertainty_figure(frame: np.ndarray, uncertainty: np.ndarray, sent: np.ndarray,
                       title: str = "MC-dropout uncertainty per token (outlined: not sent)") -> go.Figure:
    """frame (3, H, W) or (H, W, 3); uncertainty (g, g) (NaN where no token starts at this frame); sent (g, g)
    bool (False = stayed on the device)."""
    img = to_rgb_image(frame)
    g = uncertainty.shape[0]
    h, w = img.shape[:2]
    uri, _ = image_data_uri(img)
    fig = go.Figure()
    fig.add_layout_image(dict(source=uri, xref="x", yref="y", x=0, y=0, sizex=w, sizey=h, sizing="stretch",
                              layer="below"))
    p = h / g
    centres = (np.arange(g) + 0.5) * p
    fig.add_heatmap(z=uncertainty, x=centres, y=centres, colorscale="Inferno", opacity=0.55,
                    colorbar=dict(title="variance"), hovertemplate="patch (%{x:.0f}, %{y:.0f})<br>%{z:.2e}<extra></extra>")
    for r, c in zip(*np.nonzero(~sent & ~np.isnan(uncertainty))):
        fig.add_shape(type="rect", x0=c * p, x1=(c + 1) * p, y0=r * p, y1=(r + 1) * p,
                      line=dict(color="#00e5ff", width=2))
    fig.update_layout(**base_layout(title, 460))
    fig.update_xaxes(range=[0, w], visible=False)
    fig.update_yaxes(range=[h, 0], visible=False, scaleanchor="x")
    return fig


def delta_figure(layers: pl.DataFrame, title: str = "downlink ΔW per trained tensor") -> go.Figure:
    """layers: tensor, kept (fraction of entries sent), bits_per_entry."""
    if layers.height == 0:
        return message_figure("no update applied yet", title)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("fraction of entries sent", "bits sent per entry"))
    names = layers["tensor"].to_list()
    fig.add_bar(x=names, y=layers["kept"].to_list(), marker_color="#1f77b4", showlegend=False, row=1, col=1)
    fig.add_bar(x=names, y=layers["bits_per_entry"].to_list(), marker_color="#ff7f0e", showlegend=False, row=2, col=1)
    fig.update_layout(**base_layout(title, 520))
    fig.update_xaxes(tickangle=60, tickfont=dict(size=8), row=2, col=1)
    return fig


def domains_figure(frames: dict[str, np.ndarray], title: str = "one frame per domain") -> go.Figure:
    """frames: domain name → frame (3, H, W) or (H, W, 3); one image per domain side by side."""
    if not frames:
        return message_figure("no frames", title)
    fig = make_subplots(rows=1, cols=len(frames), subplot_titles=list(frames), horizontal_spacing=0.02)
    for i, f in enumerate(frames.values(), start=1):
        fig.add_image(z=to_rgb_image(f), row=1, col=i)
    fig.update_layout(**base_layout(title, 300))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig
