"""The event stream itself — binned event frames or a time surface — beside the frame the model sees.

    event_frames_figure(events, sensor_size, t_edges=None, frame_index=0, n_bins=16, model_frame=None,
                        view="binned" | "time_surface", tau_us=None, title=None) -> go.Figure
    time_surface_figure(events, sensor_size, t_ref_us, tau_us=50_000, model_frame=None, title=None) -> go.Figure
    bin_events(events, sensor_size, t_edges) -> (T, 2, H, W) counts          (channel 0 OFF, 1 ON)
    time_surface(events, sensor_size, t_ref_us, tau_us) -> (2, H, W) in [0, 1]

events: an EVENT_DTYPE array (x, y, t µs, p) — e.g. `Clip.events` (already on the model grid, so
sensor_size = (112, 112)) or a reader's `EventStream.events` with its `sensor_size` (width, height).
t_edges: (T + 1,) bin edges in µs (`Clip.frame_times_us`); None = `n_bins` equal bins over the events' span.

"binned" shows the events of bin `frame_index` (ON red, OFF blue, log-scaled counts); "time_surface" shows
exp(−(t_ref − t_last) / τ) per pixel and polarity at the end of that bin (τ defaults to the bin length), so
recent motion is bright and old motion fades. With `model_frame` (the clip's frame, (2, H, W) or any image)
a second panel shows what the model was given for the same bin.

    >>> from workbench.data.events import make_events
    >>> ev = make_events([0, 1, 1], [0, 0, 1], [0, 10, 20], [1, 0, 1])
    >>> bin_events(ev, (2, 2), [0, 15, 30])[:, 1].sum(axis=(1, 2)).tolist()  # ON events per bin
    [1, 1]
    >>> float(time_surface(ev, (2, 2), 20, 10)[1, 1, 1])  # an ON event exactly at t_ref
    1.0
    >>> event_frames_figure(ev, (2, 2), [0, 15, 30], 1).layout.title.text
    'events 15–30 µs of bin 1: 1 event (1 ON, 0 OFF) on a 2×2 sensor'
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.viz.style import base_layout, image_data_uri, message_figure, to_rgb_image

__all__ = ["event_frames_figure", "time_surface_figure", "bin_events", "time_surface", "EVENT_VIEWS"]

EVENT_VIEWS = ("binned", "time_surface")


def _edges(events: np.ndarray, t_edges, n_bins: int) -> np.ndarray:
    if t_edges is not None:
        return np.asarray(t_edges, dtype=np.int64)
    if len(events) == 0:
        return np.zeros(n_bins + 1, np.int64)
    t0, t1 = int(events["t"][0]), int(events["t"][-1]) + 1
    return np.linspace(t0, t1, n_bins + 1).round().astype(np.int64)


def bin_events(events: np.ndarray, sensor_size: tuple[int, int], t_edges) -> np.ndarray:
    """Event counts per bin, polarity and pixel at sensor resolution: (T, 2, height, width) int64.
    Events outside [edges[0], edges[-1]] are dropped; the last bin includes its right edge."""
    w, h = int(sensor_size[0]), int(sensor_size[1])
    edges = np.asarray(t_edges, dtype=np.int64)
    t = len(edges) - 1
    out = np.zeros((t, 2, h, w), np.int64)
    if len(events) == 0 or t < 1:
        return out
    ts = events["t"]
    b = np.searchsorted(edges, ts, side="right") - 1
    b[ts == edges[-1]] = t - 1
    ok = (b >= 0) & (b < t) & (events["x"] >= 0) & (events["x"] < w) & (events["y"] >= 0) & (events["y"] < h)
    np.add.at(out, (b[ok], events["p"][ok].astype(np.int64), events["y"][ok].astype(np.int64),
                    events["x"][ok].astype(np.int64)), 1)
    return out


def time_surface(events: np.ndarray, sensor_size: tuple[int, int], t_ref_us: float, tau_us: float) -> np.ndarray:
    """(2, height, width) exp(−(t_ref − t_last)/τ) of the last event at or before t_ref per pixel and polarity
    (0 where a pixel never fired)."""
    if tau_us <= 0:
        raise ValueError(f"tau_us must be > 0, got {tau_us}")
    w, h = int(sensor_size[0]), int(sensor_size[1])
    last = np.full((2, h, w), -np.inf)
    sel = events[events["t"] <= t_ref_us] if len(events) else events
    if len(sel):
        ok = (sel["x"] >= 0) & (sel["x"] < w) & (sel["y"] >= 0) & (sel["y"] < h)
        sel = sel[ok]
        # events are time-ordered, so a plain fancy assignment keeps the last (latest) one per pixel
        last[sel["p"].astype(np.int64), sel["y"].astype(np.int64), sel["x"].astype(np.int64)] = sel["t"]
    with np.errstate(over="ignore", invalid="ignore"):
        surf = np.exp(-(float(t_ref_us) - last) / float(tau_us))
    return np.where(np.isfinite(last), surf, 0.0)


def _polarity_image(off: np.ndarray, on: np.ndarray) -> np.ndarray:
    return to_rgb_image(np.stack([off, on]).astype(np.float32))


def _counts_image(counts: np.ndarray) -> np.ndarray:
    """(2, H, W) counts → RGB with log-scaled intensity (ON red, OFF blue)."""
    top = np.log1p(counts.max()) if counts.max() > 0 else 1.0
    return _polarity_image(np.log1p(counts[0]) / top, np.log1p(counts[1]) / top)


def _figure(panels: list[tuple[str, np.ndarray]], title: str, height: int) -> go.Figure:
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[name for name, _ in panels],
                        horizontal_spacing=0.04)
    for i, (name, img) in enumerate(panels, start=1):
        uri, scale = image_data_uri(img, min_side=336)
        h, w = img.shape[:2]
        fig.add_trace(go.Image(source=uri, x0=0, y0=0, dx=1 / scale, dy=1 / scale, name=name), row=1, col=i)
        fig.update_xaxes(range=[0, w], visible=False, constrain="domain", row=1, col=i)
        fig.update_yaxes(range=[h, 0], visible=False, scaleanchor=f"x{'' if i == 1 else i}", constrain="domain",
                         row=1, col=i)
    fig.update_layout(**base_layout(title, height))
    return fig


def _summary(events: np.ndarray, lo: int, hi: int, sensor_size, last: bool) -> str:
    """Events in [lo, hi) ([lo, hi] for the last bin, as `bin_events`)."""
    if len(events):
        t = events["t"]
        sel = events[(t >= lo) & ((t <= hi) if last else (t < hi))]
    else:
        sel = events
    on, n = (int(sel["p"].sum()) if len(sel) else 0), len(sel)
    return (f"{n:,} event{'' if n == 1 else 's'} ({on:,} ON, {n - on:,} OFF) on a "
            f"{sensor_size[0]}×{sensor_size[1]} sensor")


def _fmt_us(a: int, b: int) -> str:
    span = max(abs(a), abs(b))
    if span >= 1_000_000:
        return f"{a / 1e6:.3f}–{b / 1e6:.3f} s"
    if span >= 1_000:
        return f"{a / 1e3:.1f}–{b / 1e3:.1f} ms"
    return f"{a}–{b} µs"


def event_frames_figure(events: np.ndarray, sensor_size: tuple[int, int], t_edges=None, frame_index: int = 0,
                        n_bins: int = 16, model_frame: np.ndarray | None = None, view: str = "binned",
                        tau_us: float | None = None, title: str | None = None, height: int = 420) -> go.Figure:
    """The events of bin `frame_index` (binned or as a time surface) beside the model's frame (module docstring)."""
    if view not in EVENT_VIEWS:
        raise ValueError(f"view must be one of {EVENT_VIEWS}, not {view!r}")
    if events is None:
        return message_figure("this input has no event stream (it is a video or a rendered clip)",
                              title or "event stream", height)
    edges = _edges(events, t_edges, n_bins)
    if not 0 <= frame_index < len(edges) - 1:
        raise ValueError(f"frame_index {frame_index} is outside the {len(edges) - 1} bins")
    lo, hi = int(edges[frame_index]), int(edges[frame_index + 1])
    last = frame_index == len(edges) - 2
    if view == "binned":
        counts = bin_events(events, sensor_size, edges[frame_index: frame_index + 2])[0]
        img, name = _counts_image(counts), f"events, bin {frame_index}"
        auto = f"events {_fmt_us(lo, hi)} of bin {frame_index}: {_summary(events, lo, hi, sensor_size, last)}"
    else:
        tau = float(tau_us or max(hi - lo, 1))
        surf = time_surface(events, sensor_size, hi, tau)
        img, name = _polarity_image(surf[0], surf[1]), f"time surface at end of bin {frame_index}"
        auto = (f"time surface at the end of bin {frame_index} ({_fmt_us(lo, hi)}, τ = {tau / 1e3:.3g} ms): "
                f"{_summary(events, lo, hi, sensor_size, last)}")
    panels = [(name, img)]
    if model_frame is not None:
        panels.append(("the model's input frame", to_rgb_image(model_frame)))
    return _figure(panels, title or auto, height)


def time_surface_figure(events: np.ndarray, sensor_size: tuple[int, int], t_ref_us: float,
                        tau_us: float = 50_000, model_frame: np.ndarray | None = None, title: str | None = None,
                        height: int = 420) -> go.Figure:
    """The time surface at `t_ref_us` (ON red, OFF blue) beside an optional model frame."""
    surf = time_surface(events, sensor_size, t_ref_us, tau_us)
    panels = [(f"time surface, τ = {tau_us / 1e3:g} ms", _polarity_image(surf[0], surf[1]))]
    if model_frame is not None:
        panels.append(("the model's input frame", to_rgb_image(model_frame)))
    n = int((events["t"] <= t_ref_us).sum()) if len(events) else 0
    return _figure(panels, title or f"time surface at t = {t_ref_us / 1e6:.3f} s ({n:,} events so far)", height)
