"""One door for every input: `load_clip(source)` → `Clip`.

source may be a ShapesWorld seed (`7`, `"shapes:7"`), a synthetic gesture seed (`"gesture:3"`), a video file
(any container ffmpeg reads) or an event file in any format the readers support. Files are recognised by
content, not by name. Event recordings are cut to a time window and binned into frames by `events_to_clip`
— the same code path the synthetic gesture analog uses.

    >>> load_clip("shapes:3").sample_id
    'shapes-3'
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.data.clip import IMAGE_SIZE, PATCH_SIZE, Clip
from workbench.data.events import EventStream
from workbench.data.transforms import (EventsToFrames, bin_edges, fit_events_to_grid, normalise_counts,
                                       patch_event_rate)
from workbench.errors import EmptyInputError, InputError, UnsupportedFormatError

_SEED = re.compile(r"^(?:(shapes|gesture):)?(\d+)$")


@dataclass(frozen=True)
class EventWindow:
    """Which part of an event recording becomes the clip, and how it is binned."""

    n_frames: int = 16
    start_s: float = 0.0  # from the first event
    duration_s: float | None = 2.0  # None = to the end of the recording
    by: str = "time"  # or "count"
    fit: str = "crop"
    denoise_us: int | None = None  # drop isolated events (tonic's denoise, this filter time in µs); None = keep all


def denoise_events(events: np.ndarray, filter_time_us: int) -> np.ndarray:
    """Drop events with no other event at a 4-neighbour pixel within the previous `filter_time_us` µs
    (tonic's `denoise_numpy`, a Python loop over events: ~2 s per million events).

    tonic starts its per-pixel memory at `filter_time`, which keeps every event with t < filter_time; the
    events are shifted to start at t = filter_time for the call and shifted back.

        >>> from workbench.data.events import make_events
        >>> ev = make_events([5, 6, 30], [5, 5, 30], [100, 200, 300], [1, 1, 1])
        >>> denoise_events(ev, 1000)["x"].tolist()
        [6]
    """
    from tonic.functional import denoise_numpy

    if int(filter_time_us) <= 0:
        raise InputError("denoise_us", f"must be a positive number of microseconds, got {filter_time_us}")
    if len(events) == 0:
        return events
    ft = int(filter_time_us)
    shift = int(events["t"][0]) - ft
    moved = events.copy()
    moved["t"] -= shift
    kept = denoise_numpy(moved, filter_time=ft)
    kept["t"] += shift
    return kept


def events_to_clip(stream: EventStream, window: EventWindow = EventWindow(), sample_id: str | None = None,
                   label: int | None = None, t_range: tuple[int, int] | None = None, **meta) -> Clip:
    """Cut `window` out of an event stream, fit it to the model grid and bin it into normalised frames.

    The window starts `window.start_s` after the first event and ends `window.duration_s` later or where the
    recording ends; `t_range` = (t0, t1) in µs overrides both (a simulator knows its exact time span).
    With `window.denoise_us` set, the window's events first pass `denoise_events` (isolated events dropped).

        >>> from workbench.data.events import make_events
        >>> s = EventStream(make_events([1, 2, 3], [1, 1, 1], [0, 500_000, 1_000_000], [1, 0, 1]), (8, 8))
        >>> events_to_clip(s, EventWindow(n_frames=4)).frames.shape
        (4, 2, 112, 112)
    """
    ev = stream.events
    t_first, t_last = int(ev["t"][0]), int(ev["t"][-1])
    if t_range is not None:
        t0, t1 = int(t_range[0]), int(t_range[1])
    else:
        t0 = t_first + int(round(window.start_s * 1e6))
        # the window ends at start + duration, or earlier where the recording ends
        t1 = t_last if window.duration_s is None else min(t_last, t0 + int(round(window.duration_s * 1e6)))
    sel = ev[(ev["t"] >= t0) & (ev["t"] <= t1)]
    if len(sel) == 0:
        raise EmptyInputError(stream.source, f"no events between {window.start_s:.3f} s and "
                              f"{(t1 - t_first) / 1e6:.3f} s of the recording (it spans {(t_last - t_first) / 1e6:.3f} s)")
    if window.denoise_us is not None:
        n_before = len(sel)
        sel = denoise_events(sel, window.denoise_us)
        meta = {**meta, "denoise_us": int(window.denoise_us), "denoised_away": n_before - len(sel)}
        if len(sel) == 0:
            raise EmptyInputError(stream.source, f"all {n_before:,} events of the window are isolated noise for a "
                                  f"{window.denoise_us} µs denoise filter; use a longer filter time or none")
    binner = EventsToFrames(n_frames=window.n_frames, grid=IMAGE_SIZE, by=window.by, fit=window.fit)
    counts = binner.counts(sel, stream.sensor_size, t0, t1)
    frames = normalise_counts(counts)
    edges = bin_edges(t0, t1, window.n_frames)
    return Clip(frames=frames, modality="events", sample_id=sample_id or Path(stream.source).stem,
                fps=window.n_frames / max((t1 - t0) / 1e6, 1e-6), frame_times_us=edges,
                events=fit_events_to_grid(sel, stream.sensor_size, IMAGE_SIZE, window.fit),
                patch_event_rate=patch_event_rate(counts, PATCH_SIZE), label=label,
                meta={"source": stream.source, "format": stream.format, "sensor_size": tuple(stream.sensor_size),
                      "num_events": int(len(sel)), "window_us": (int(t0), int(t1)), **meta})


def input_file(source: str | os.PathLike) -> Path:
    """The path of a user's input file, or an InputError saying why it cannot be one (missing, a folder, empty)."""
    path = Path(source)
    if not path.exists():
        raise InputError(path, "no such file (or a seed like 'shapes:7' / 'gesture:3')")
    if path.is_dir():
        raise UnsupportedFormatError(path, "is a folder; give a video or an event file")
    if path.stat().st_size == 0:
        raise EmptyInputError(path, "the file is empty (0 bytes)")
    return path


def is_event_file(path: Path) -> bool:
    """True when the content is a supported event format (sniffed; anything else is tried as a video)."""
    from workbench.data.readers import sniff_format
    try:
        sniff_format(path)
    except UnsupportedFormatError:
        return False
    return True


def load_clip(source: str | int | os.PathLike, n_frames: int = 16, start_s: float = 0.0,
              duration_s: float | None = None, fps: float | None = None, fit: str = "crop") -> Clip:
    """Load any supported input as a Clip (see module docstring). Raises `InputError` subclasses on bad input.

    duration_s: for videos the window (None = whole video, sampled); for events None means the default 2 s
    window the reference model was trained on. fit: how a non-square picture or sensor meets the square
    model input — "crop" (centre square), "pad" (letterbox) or "stretch" (squash); the clip's
    `meta["notes"]` says which was applied when the input is not square.
    """
    from workbench.data.video_fit import FITS
    if fit not in FITS:
        raise InputError("fit", f"must be one of {', '.join(FITS)}, not {fit!r}")
    from workbench.data import gestures, shapesworld
    m = _SEED.match(str(source).strip()) if not isinstance(source, os.PathLike) else None
    if m:
        kind, seed = m.group(1) or "shapes", int(m.group(2))
        return gestures.make_gesture_clip(seed) if kind == "gesture" else shapesworld.make_clip(seed, n_frames)
    path = input_file(source)
    from workbench.data.readers import read_events
    if not is_event_file(path):
        from workbench.data.video import VideoSampling, read_video
        sampling = VideoSampling(n_frames=None if fps else n_frames, fps=fps, start_s=start_s, duration_s=duration_s,
                                 fit=fit)
        return read_video(path, sampling)
    stream = read_events(path)
    window = EventWindow(n_frames=n_frames, start_s=start_s, duration_s=2.0 if duration_s is None else duration_s,
                         fit=fit)
    clip = events_to_clip(stream, window)
    from workbench.data.video_fit import aspect_note
    clip.meta["notes"] = [n for n in (aspect_note(*stream.sensor_size, fit, what="sensor"),) if n]
    clip.meta["fit"] = fit
    return clip
