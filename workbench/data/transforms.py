"""Events → model input: spatial fit to the model grid, binning into frames, normalisation, patch rates.

Small frozen dataclasses over functional code (tonic's style). Count binning is tonic's
`to_frame_numpy`; time binning and the spatial fit are ours (tonic's time bins drop edge events, and it has no
"fit any sensor to a square grid without aliasing").

    >>> from workbench.data.events import make_events
    >>> ev = make_events(x=[0, 127], y=[0, 127], t=[0, 1000], p=[1, 0])
    >>> EventsToFrames(n_frames=2)(ev, (128, 128)).shape
    (2, 2, 112, 112)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from tonic.functional import to_frame_numpy

from workbench.data.events import EVENT_DTYPE

Fit = Literal["crop", "pad", "stretch"]


def fit_events_to_grid(events: np.ndarray, sensor_size: tuple[int, int], grid: int, fit: Fit = "crop") -> np.ndarray:
    """Map event coordinates from a W×H sensor onto a grid×grid image (for display and event lists; frames
    are binned with `fit_counts`, which avoids the aliasing of floor() on non-integer ratios).

    crop: centre-crop the largest square, then scale (drops events outside the square);
    pad: scale the longer side to `grid`, centre the shorter one (letterbox);
    stretch: scale each axis independently.
    """
    w, h = sensor_size
    x = events["x"].astype(np.float64)
    y = events["y"].astype(np.float64)
    if fit == "crop":
        side = min(w, h)
        x0, y0 = (w - side) / 2.0, (h - side) / 2.0
        sx = sy = grid / side
        ox = oy = 0.0
    elif fit == "pad":
        side = max(w, h)
        x0 = y0 = 0.0
        sx = sy = grid / side
        ox, oy = (grid - w * sx) / 2.0, (grid - h * sy) / 2.0
    elif fit == "stretch":
        x0 = y0 = ox = oy = 0.0
        sx, sy = grid / w, grid / h
    else:
        raise ValueError(f"fit must be crop, pad or stretch, not {fit!r}")
    gx = np.floor((x - x0) * sx + ox)
    gy = np.floor((y - y0) * sy + oy)
    keep = (gx >= 0) & (gx < grid) & (gy >= 0) & (gy < grid)
    out = np.empty(int(keep.sum()), dtype=EVENT_DTYPE)
    out["x"], out["y"] = gx[keep], gy[keep]
    out["t"], out["p"] = events["t"][keep], events["p"][keep]
    return out


def bin_edges(t0: int, t1: int, n_frames: int) -> np.ndarray:
    """(n_frames + 1,) µs edges of equal time bins over [t0, t1]; bin k = [edges[k], edges[k+1])."""
    return t0 - (-np.arange(n_frames + 1, dtype=np.int64) * (t1 - t0)) // n_frames  # ceil division


def bin_events(events: np.ndarray, size: tuple[int, int], n_frames: int, by: Literal["time", "count"] = "time",
               t_start: int | None = None, t_end: int | None = None) -> np.ndarray:
    """Count events per (frame, polarity, y, x) on a (width, height) canvas: float32 (n_frames, 2, h, w);
    channel 0 = OFF, 1 = ON.

    by="time" cuts [t_start, t_end] into equal windows (every event inside kept, the last window closed);
    by="count" cuts into equal event counts (tonic's n_event_bins).
    """
    w, h = size
    out = np.zeros((n_frames, 2, h, w), np.float32)
    if len(events) == 0:
        return out
    if by == "count":
        frames = to_frame_numpy(events, sensor_size=(w, h, 2), n_event_bins=n_frames)
        out[: len(frames)] = frames
        return out
    t0 = int(events["t"][0]) if t_start is None else int(t_start)
    t1 = int(events["t"][-1]) if t_end is None else int(t_end)
    span = max(t1 - t0, 1)
    inside = (events["t"] >= t0) & (events["t"] <= t1)
    ev = events[inside]
    # own time binning: tonic's n_time_bins drops events at the edges (ENVIRONMENT.md)
    idx = np.clip(((ev["t"] - t0) * n_frames) // span, 0, n_frames - 1)
    np.add.at(out, (idx, ev["p"].astype(np.intp), ev["y"].astype(np.intp), ev["x"].astype(np.intp)), 1.0)
    return out


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) resampling matrix: entry [i, j] = the fraction of input pixel j that falls in output pixel i.

    Each column sums to 1, so resampling with it conserves the number of events exactly, and a thin line
    keeps its count wherever it lies (unlike overlapping area windows).

    >>> area_weights(3, 2).tolist()
    [[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]]
    """
    edges_out = np.arange(n_out + 1) * (n_in / n_out)  # output pixel boundaries in input units
    lo = np.maximum(edges_out[:-1, None], np.arange(n_in)[None, :])
    hi = np.minimum(edges_out[1:, None], np.arange(n_in)[None, :] + 1)
    return np.clip(hi - lo, 0.0, None)


def fit_counts(events: np.ndarray, sensor_size: tuple[int, int], grid: int, n_frames: int,
               by: Literal["time", "count"] = "time", t_start: int | None = None, t_end: int | None = None,
               fit: Fit = "crop") -> np.ndarray:
    """Events of any sensor → (n_frames, 2, grid, grid) counts on the model grid, without aliasing.

    Mapping coordinates with floor() onto a grid of non-integer ratio (128 → 112) makes every 7th grid column
    collect two sensor columns: a fixed stripe pattern in every frame. Instead: select the fitted region,
    sum-pool by the largest integer factor (exact; bounds memory on big sensors), bin there, and resample to
    the grid with exact overlap weights (`area_weights`), which conserve every event.
    """
    w, h = sensor_size
    if fit == "crop":
        side = min(w, h)
        x0, y0, rw, rh = (w - side) // 2, (h - side) // 2, side, side
        out_w = out_h = grid
    elif fit in ("pad", "stretch"):
        x0, y0, rw, rh = 0, 0, w, h
        scale = grid / max(w, h)
        out_w, out_h = (grid, grid) if fit == "stretch" else (max(1, round(w * scale)), max(1, round(h * scale)))
    else:
        raise ValueError(f"fit must be crop, pad or stretch, not {fit!r}")
    keep = (events["x"] >= x0) & (events["x"] < x0 + rw) & (events["y"] >= y0) & (events["y"] < y0 + rh)
    ev = events[keep].copy()
    k = max(1, min(rw // out_w, rh // out_h))
    ev["x"] = (ev["x"] - x0) // k
    ev["y"] = (ev["y"] - y0) // k
    pw, ph = -(-rw // k), -(-rh // k)
    counts = bin_events(ev, (pw, ph), n_frames, by, t_start, t_end)  # (T, 2, ph, pw)
    if (pw, ph) != (out_w, out_h):
        wy, wx = area_weights(ph, out_h), area_weights(pw, out_w)  # (out_h, ph), (out_w, pw)
        counts = np.einsum("yh,tphw,xw->tpyx", wy, counts, wx, optimize=True)
    if (out_w, out_h) == (grid, grid):
        return np.ascontiguousarray(counts, np.float32)
    canvas = np.zeros((n_frames, 2, grid, grid), np.float32)  # letterbox
    oy, ox = (grid - out_h) // 2, (grid - out_w) // 2
    canvas[:, :, oy: oy + out_h, ox: ox + out_w] = counts
    return canvas


def normalise_counts(counts: np.ndarray, q: float = 0.95) -> np.ndarray:
    """Scale counts to [0, 1] by the clip's q-quantile of non-zero pixels (sensor- and density-independent)."""
    nz = counts[counts > 0]
    scale = float(np.quantile(nz, q)) if len(nz) else 1.0
    return np.clip(counts / max(scale, 1.0), 0.0, 1.0).astype(np.float32)


def patch_event_rate(counts: np.ndarray, patch: int) -> np.ndarray:
    """Events per pixel per patch and frame: (T, 2, H, W) counts → (T, H/patch, W/patch)."""
    t, _, h, w = counts.shape
    per = counts.sum(1).reshape(t, h // patch, patch, w // patch, patch)  # (T, gh, p, gw, p)
    return per.sum((2, 4)) / float(patch * patch)


@dataclass(frozen=True)
class EventsToFrames:
    """Fit events to the model grid and bin them into `n_frames` normalised 2-channel polarity frames."""

    n_frames: int = 16
    grid: int = 112
    by: Literal["time", "count"] = "time"
    fit: Fit = "crop"

    def counts(self, events: np.ndarray, sensor_size: tuple[int, int], t_start: int | None = None,
               t_end: int | None = None) -> np.ndarray:
        """Raw (n_frames, 2, grid, grid) counts (see `fit_counts`)."""
        return fit_counts(events, sensor_size, self.grid, self.n_frames, self.by, t_start, t_end, self.fit)

    def __call__(self, events: np.ndarray, sensor_size: tuple[int, int], t_start: int | None = None,
                 t_end: int | None = None) -> np.ndarray:
        return normalise_counts(self.counts(events, sensor_size, t_start, t_end))
