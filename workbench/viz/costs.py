"""Cost per frame, dense vs compressed, with the cumulative saving — tokens and encoder FLOPs.

    tokens_per_frame(dense_trace, trace, frame_index=None, title=None) -> go.Figure
    flops_per_frame(dense_trace, trace, frame_index=None, title=None) -> go.Figure
    cost_series(dense_trace, trace, kind) -> (dense (T,), compressed (T,), cumulative saving (T,))

Both read the per-frame totals every pipeline run logs (`workbench.pipeline`: kind `tokens_to_decoder`,
`tokens_computed`, `encoder_flops` at the method's site, token = −1). Bars: dense (grey) and compressed
(red) per frame; tokens also show `tokens_computed` (tokens that went through the encoder blocks) as a dashed
line — for STTF the decoder count is what fusion leaves, for ANC the decoder always gets N per frame while the
computed count drops on skipped frames. Right axis: the cumulative saving 1 − Σcompressed / Σdense up to each
frame, in %. `dense_trace=None` draws the compressed run alone. `frame_index` marks the scrubber's frame.

    >>> import numpy as np, polars as pl
    >>> from workbench.trace.schema import TRACE_SCHEMA
    >>> def totals(site, values):
    ...     return pl.DataFrame({"run_id": site, "sample_id": "s", "frame": np.arange(len(values)), "layer": -1,
    ...         "site": site, "token": -1, "kind": "tokens_to_decoder", "value": values, "target": None},
    ...         schema=TRACE_SCHEMA)
    >>> dense, sttf = totals("dense", [196.0, 196.0]), totals("sttf", [196.0, 0.0])
    >>> cost_series(dense, sttf, "tokens_to_decoder")[2].tolist()
    [0.0, 0.5]
    >>> tokens_per_frame(dense, sttf).layout.title.text
    'visual tokens to the decoder: 98 per frame vs 196 dense (−50%)'
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from workbench.viz.style import (COMPRESSED_COLOR, DENSE_COLOR, SAVING_COLOR, add_frame_marker, base_layout,
                                 frame_series, message_figure)

__all__ = ["tokens_per_frame", "flops_per_frame", "cost_series"]


def cost_series(dense_trace: pl.DataFrame | None, trace: pl.DataFrame, kind: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dense, compressed, cumulative saving) per frame for a frame-level `kind`; dense and saving are empty
    without a dense trace (or when the two runs differ in length)."""
    comp = frame_series(trace, kind)
    dense = frame_series(dense_trace, kind) if dense_trace is not None else np.zeros(0)
    if len(dense) != len(comp) or not len(dense):
        return dense, comp, np.zeros(0)
    cd = np.cumsum(dense)
    saving = np.where(cd > 0, 1 - np.cumsum(comp) / np.where(cd > 0, cd, 1), 0.0)
    return dense, comp, saving


def _cost_figure(dense_trace, trace, kind: str, label: str, unit_scale: float, unit: str, frame_index,
                 title: str | None, extra: tuple[str, str] | None = None, height: int = 380) -> go.Figure:
    dense, comp, saving = cost_series(dense_trace, trace, kind)
    if not len(comp):
        return message_figure(f"this run logged no `{kind}` per frame", title or label, height)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    frames = np.arange(len(comp))
    if len(dense):
        fig.add_trace(go.Bar(x=frames, y=dense / unit_scale, name="dense", marker_color=DENSE_COLOR,
                             hovertemplate=f"frame %{{x}}: %{{y:.4g}} {unit}<extra>dense</extra>"))
    fig.add_trace(go.Bar(x=frames, y=comp / unit_scale, name="compressed", marker_color=COMPRESSED_COLOR,
                         hovertemplate=f"frame %{{x}}: %{{y:.4g}} {unit}<extra>compressed</extra>"))
    if extra is not None:
        ekind, elabel = extra
        ev = frame_series(trace, ekind)
        if len(ev) == len(comp) and not np.array_equal(ev, comp):
            fig.add_trace(go.Scatter(x=frames, y=ev / unit_scale, name=elabel, mode="lines+markers",
                                     line=dict(color="#444", dash="dash")))
    if len(saving):
        fig.add_trace(go.Scatter(x=frames, y=saving * 100, name="cumulative saving", mode="lines+markers",
                                 line=dict(color=SAVING_COLOR, width=2),
                                 hovertemplate="up to frame %{x}: %{y:.1f}% saved<extra></extra>"), secondary_y=True)
        lo = min(0.0, float(saving.min() * 100))
        fig.update_yaxes(title_text="cumulative saving %", range=[lo - 2, 102], secondary_y=True, showgrid=False)
    mean_c = comp.mean() / unit_scale
    if len(dense):
        total = 1 - comp.sum() / dense.sum() if dense.sum() else 0.0
        auto = f"{label}: {mean_c:.3g} per frame vs {dense.mean() / unit_scale:.3g} dense (−{total:.0%})"
        if total < 0:
            auto = f"{label}: {mean_c:.3g} per frame vs {dense.mean() / unit_scale:.3g} dense (+{-total:.0%})"
    else:
        auto = f"{label}: {mean_c:.3g} per frame (no dense baseline)"
    fig.update_layout(**base_layout(title or auto, height), barmode="group", bargap=0.15)
    fig.update_yaxes(title_text=unit, secondary_y=False, rangemode="tozero")
    fig.update_xaxes(title_text="frame", dtick=1 if len(comp) <= 32 else None)
    return add_frame_marker(fig, frame_index)


def tokens_per_frame(dense_trace: pl.DataFrame | None, trace: pl.DataFrame, frame_index: int | None = None,
                     title: str | None = None) -> go.Figure:
    """Visual tokens entering the decoder per frame, dense vs compressed (+ tokens computed by the encoder)."""
    return _cost_figure(dense_trace, trace, "tokens_to_decoder", "visual tokens to the decoder", 1.0, "tokens",
                        frame_index, title, extra=("tokens_computed", "tokens computed (encoder)"))


def flops_per_frame(dense_trace: pl.DataFrame | None, trace: pl.DataFrame, frame_index: int | None = None,
                    title: str | None = None) -> go.Figure:
    """Encoder FLOPs per frame (FlopCounterMode on the actual run), dense vs compressed, in MFLOPs."""
    return _cost_figure(dense_trace, trace, "encoder_flops", "encoder MFLOPs", 1e6, "MFLOPs", frame_index, title)
