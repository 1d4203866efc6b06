"""Stream readers: a video or event file (or a generated clip) as frames, one at a time, at any length.

`open_stream(source, fps=None, fit="crop")` → a `FrameSource`: `.info` (what the stream is) and iteration over
`StreamFrame`s (index, [start_s, end_s), the (C, 112, 112) model-grid frame, and for events the per-patch event
rate). Nothing is accumulated: a video is decoded packet by packet with PyAV and each frame is fitted to the
model grid and handed on at once, so memory does not grow with the stream's length.

- Video at `fps=R`: frame k covers [start + k/R, start + (k+1)/R) and is the frame on screen at the centre of
  that interval — the convention of `data.video.read_video` (so the same sample times give the same frames).
  Native rate (`fps=None` or "native") is the container's declared rate: on a constant-rate file every decoded
  frame exactly once; on a variable-rate file (tree.avi stores a frame only when the picture changes) each
  stored frame is held on screen until the next, as a player shows it.
- Events: bins of 1/R s (default 8 per second: the 16 bins per 2 s the model was trained on), fitted to the
  grid like `data.load.events_to_clip`. A clip normalises counts by its own 95 % quantile, which a stream
  cannot know in advance: a stream frame is normalised by the mean of the last `norm_frames` frames'
  quantiles (causal). The event file itself is read whole by `data.readers.read_events` (event readers are
  not incremental); the binning is.
- A seed ("shapes:7", "gesture:3"): the generated clip's frames, one by one.

Damage: frames decode until the damage; then a `CorruptFileError` says where the stream broke (a decoder
error, or a stream that ends well before the duration the file declares). Consumers keep what they got.

    >>> src = open_stream("shapes:3")
    >>> src.info.modality, src.info.fps, [f.index for f in src][:3]
    ('rgb', 8.0, [0, 1, 2])
"""
from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from workbench.data.clip import IMAGE_SIZE, PATCH_SIZE, Clip
from workbench.data.transforms import fit_counts, patch_event_rate
from workbench.data.video import (_SEEK_MARGIN_S, _check_resolution, _declared_duration, _keyframe_times, _open,
                                  _video_stream)
from workbench.data.video_fit import FITS, aspect_note, fit_frame
from workbench.errors import CorruptFileError, EmptyInputError, InputError, UnsupportedFormatError

EVENT_FPS = 8.0  # event bins per second when none is asked for (16 bins per 2 s, as in training)
_EPS_S = 1e-6


@dataclass
class StreamFrame:
    index: int
    start_s: float  # the frame covers [start_s, end_s) of the media
    end_s: float
    pixels: np.ndarray  # (C, 112, 112) float32 in [0, 1]; RGB C = 3, events C = 2 (OFF, ON)
    patch_rate: np.ndarray | None = None  # (N,) events per pixel per patch (event streams only)


@dataclass
class StreamInfo:
    source: str
    modality: str  # "rgb" | "events"
    fps: float  # frames per second of the stream as read (native or resampled)
    duration_s: float | None  # declared media duration (None: unknown until the end)
    sample_id: str
    meta: dict = field(default_factory=dict)  # container, codec, size, native fps, fit, notes


class FrameSource:
    """An iterable of `StreamFrame` with `info`; iterate once."""

    def __init__(self, info: StreamInfo, frames: Iterator[StreamFrame]):
        self.info, self._frames = info, frames

    def __iter__(self) -> Iterator[StreamFrame]:
        return self._frames


def open_stream(source: str | int | os.PathLike, fps: float | str | None = None, fit: str = "crop",
                start_s: float = 0.0, duration_s: float | None = None, norm_frames: int = 16) -> FrameSource:
    """Open any input as a frame stream (see the module docstring). Raises `InputError` subclasses on bad
    input before the first frame; damage met later is raised by the iteration, after the frames before it."""
    from workbench.data.load import _SEED
    if fit not in FITS:
        raise InputError("fit", f"must be one of {', '.join(FITS)}, not {fit!r}")
    rate = None if fps in (None, "native") else float(fps)
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise InputError("fps", f"must be > 0 or 'native', not {fps!r}")
    m = _SEED.match(str(source).strip()) if not isinstance(source, os.PathLike) else None
    if m:
        from workbench.data.load import load_clip
        return clip_stream(load_clip(str(source)))
    from workbench.data.load import input_file, is_event_file
    from workbench.data.readers import read_events
    path = input_file(source)
    if not is_event_file(path):
        return video_stream(path, rate, fit, start_s, duration_s)
    return event_stream(read_events(path), rate or EVENT_FPS, fit, start_s, duration_s, norm_frames)


def clip_stream(clip: Clip) -> FrameSource:
    """A generated (or already loaded) clip as a stream of its frames."""
    edges = clip.frame_times_us
    if edges is None:
        edges = np.round(np.arange(clip.num_frames + 1) / clip.fps * 1e6).astype(np.int64)
    t0 = float(edges[0])
    rate = clip.patch_event_rate

    def frames():
        for i in range(clip.num_frames):
            pr = None if rate is None else np.asarray(rate[i], np.float32).reshape(-1)
            yield StreamFrame(i, float(edges[i] - t0) / 1e6, float(edges[i + 1] - t0) / 1e6, clip.frames[i], pr)
    info = StreamInfo(clip.sample_id, clip.modality, float(clip.fps), clip.duration_s, clip.sample_id,
                      {**clip.meta, "generated": True})
    return FrameSource(info, frames())


# ---- video ------------------------------------------------------------------------------------------------------

def video_stream(path: Path, fps: float | None, fit: str = "crop", start_s: float = 0.0,
                 duration_s: float | None = None) -> FrameSource:
    """A video file as frames at its native rate (`fps=None`) or resampled to `fps` (see the module docstring)."""
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        cc = stream.codec_context
        if cc is None:
            raise UnsupportedFormatError(path, "its video codec is unknown to FFmpeg (no decoder)")
        width, height = int(cc.width or 0), int(cc.height or 0)
        _check_resolution(path, width, height)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        native = float(rate) if rate else None
        declared, strict = _declared_duration(container, stream)
    except BaseException:
        container.close()
        raise
    if declared is not None and start_s >= declared:
        container.close()
        raise EmptyInputError(path, f"the window starts at {start_s:.3f} s but the video lasts only {declared:.3f} s")
    end = None if duration_s is None else start_s + duration_s
    if declared is not None:
        end = declared if end is None else min(end, declared)
    notes = [n for n in (aspect_note(width, height, fit),) if n]
    meta = {"source": str(path), "container": container.format.name, "codec": cc.name, "width": width,
            "height": height, "fps": native, "duration_s": declared, "fit": fit, "notes": notes}
    rate = fps or native or 25.0
    info = StreamInfo(str(path), "rgb", rate, declared, path.stem, meta)
    return FrameSource(info, _video_frames(container, stream, path, rate, native, fit, start_s, end, strict))


def _video_frames(container, stream, path: Path, fps: float, native: float | None, fit: str, start_s: float,
                  end_s: float | None, strict: bool) -> Iterator[StreamFrame]:
    """Frame k covers [start + k/fps, start + (k+1)/fps) and shows what is on screen at its centre."""
    tb = stream.time_base
    origin = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
    frame_dur = 1.0 / native if native else 1.0 / fps
    sar = stream.codec_context.sample_aspect_ratio
    sar = float(sar) if sar and sar > 0 else 1.0
    stream.codec_context.thread_type = "AUTO"  # identical output to single-threaded decoding
    last_t, prev, k = None, None, 0  # k: the next output frame

    def fitted(frame) -> np.ndarray:
        _check_resolution(path, frame.width, frame.height)
        return fit_frame(frame, fit, IMAGE_SIZE, sar)

    def centre(i: int) -> float:
        return start_s + (i + 0.5) / fps

    def inside(i: int, stop: float | None) -> bool:  # whole frame intervals only, like `read_video`
        return stop is None or start_s + (i + 1) / fps <= stop + 1e-9

    def out(i: int, px: np.ndarray) -> StreamFrame:
        return StreamFrame(i, start_s + i / fps, start_s + (i + 1) / fps, px)

    try:
        with container:
            kf = _keyframe_times(stream, origin)
            if start_s > _SEEK_MARGIN_S and kf and kf[0] < start_s - _SEEK_MARGIN_S:
                container.seek(int((start_s - _SEEK_MARGIN_S + origin) / tb), stream=stream, backward=True)
            for frame in _decode(container, stream, path, lambda: last_t):
                t = float(frame.pts * tb) - origin if frame.pts is not None and tb else (
                    (last_t + frame_dur) if last_t is not None else 0.0)
                last_t = t
                px = None  # output frames whose centre falls before this frame show the previous one
                while prev is not None and inside(k, end_s) and centre(k) < t - _EPS_S:
                    px = fitted(prev) if px is None else px
                    yield out(k, px)
                    k += 1
                if not inside(k, end_s):
                    break
                prev = frame
            else:  # the stream ended: its last frame stays on screen until the end of the media
                if last_t is None:
                    raise EmptyInputError(path, "the video stream holds no decodable frame (the file may be truncated)")
                shown_end = last_t + frame_dur
                stop = shown_end if end_s is None or (strict and shown_end < end_s) else end_s
                px = None
                while inside(k, stop) or (k == 0 and prev is not None):
                    px = fitted(prev) if px is None else px
                    yield out(k, px)
                    k += 1
                if strict and end_s is not None and shown_end < end_s - max(1.0, 5 * frame_dur):
                    raise CorruptFileError(path, f"the video stream ends at {shown_end:.2f} s although the file "
                                                 f"declares {end_s:.2f} s; the file is truncated or damaged "
                                                 f"(the frames before {shown_end:.2f} s were read)")
    except InputError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, IndexError, EOFError, MemoryError) as e:
        if last_t is None:
            raise CorruptFileError(path, f"the video cannot be decoded ({type(e).__name__}: {e})") from e
        raise CorruptFileError(path, f"the video cannot be decoded after {last_t:.2f} s ({type(e).__name__}: {e}); "
                                     "the frames before it were read") from e


def _decode(container, stream, path: Path, where) -> Iterator:
    """Decoded frames; a decoder error becomes a CorruptFileError naming the last good time."""
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.FFmpegError as e:
            t = where()
            if t is None:
                raise CorruptFileError(path, f"the video stream cannot be decoded from its start ({e})") from e
            raise CorruptFileError(path, f"the video stream is damaged after {t:.2f} s ({e}); the frames before "
                                         "it were read") from e
        yield from frames


# ---- events -----------------------------------------------------------------------------------------------------

def event_stream(stream, fps: float = EVENT_FPS, fit: str = "crop", start_s: float = 0.0,
                 duration_s: float | None = None, norm_frames: int = 16) -> FrameSource:
    """An `EventStream` as frames of 1/fps s each (see the module docstring)."""
    ev = stream.events
    if len(ev) == 0:
        raise EmptyInputError(stream.source, "the recording holds no events")
    t = ev["t"]
    if np.any(t[1:] < t[:-1]):
        ev = ev[np.argsort(t, kind="stable")]
        t = ev["t"]
    t_first, t_last = int(t[0]), int(t[-1])
    t0 = t_first + int(round(start_s * 1e6))
    t1 = t_last + 1 if duration_s is None else min(t_last + 1, t0 + int(round(duration_s * 1e6)))
    if t0 >= t1:
        raise EmptyInputError(stream.source, f"no events after {start_s:.3f} s (the recording spans "
                                             f"{(t_last - t_first) / 1e6:.3f} s)")
    step = 1e6 / fps
    n = max(1, math.ceil((t1 - t0) / step - 1e-9))
    meta = {"source": stream.source, "format": stream.format, "sensor_size": tuple(stream.sensor_size),
            "num_events": int(len(ev)), "fit": fit,
            "notes": [n for n in (aspect_note(*stream.sensor_size, fit, what="sensor"),) if n]}
    info = StreamInfo(str(stream.source), "events", float(fps), (t1 - t0) / 1e6, Path(str(stream.source)).stem, meta)

    def frames():
        scales: deque = deque(maxlen=max(1, norm_frames))
        for k in range(n):
            a = t0 + int(round(k * step))
            b = min(t1, t0 + int(round((k + 1) * step)))
            lo, hi = np.searchsorted(t, [a, b], side="left")
            counts = fit_counts(ev[lo:hi], stream.sensor_size, IMAGE_SIZE, 1, "time", a, b - 1, fit)  # (1, 2, H, W)
            nz = counts[counts > 0]
            if len(nz):
                scales.append(float(np.quantile(nz, 0.95)))
            scale = max(float(np.mean(scales)) if scales else 1.0, 1.0)
            px = np.clip(counts[0] / scale, 0.0, 1.0).astype(np.float32)
            rate = patch_event_rate(counts, PATCH_SIZE)[0].reshape(-1).astype(np.float32)  # (gh, gw) → (N,)
            yield StreamFrame(k, (a - t0) / 1e6, (b - t0) / 1e6, px, rate)
    return FrameSource(info, frames())
