"""Video files → `Clip`: streaming PyAV decoding, timestamp-based sampling, crop / pad / stretch to 112×112.

The sample times are chosen first (from the stream's duration), then the file is decoded in order and only
the frame *on screen* at each sample time (the last frame whose timestamp is at or before it) is kept,
converted to RGB, fitted and resized at once — full-resolution frames are never accumulated. When the
container has a keyframe index, far-away sample times (and a window start) are reached by seeking, so a long
video costs about one GOP of decoding per sample. Timestamps (not frame counts) drive everything, so
variable-frame-rate files work, and a missing duration is recovered by scanning packet timestamps.

Limits (checked before decoding; `InputTooLargeError`): file size `MAX_FILE_BYTES` (2 GiB), resolution
`MAX_WIDTH`×`MAX_HEIGHT` (7680×4320, either orientation), duration `MAX_DURATION_S` (3 h). Every PyAV / FFmpeg
failure becomes an `InputError` subclass naming the file.

    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "ramp.mp4")
    >>> ramp = np.linspace(0, 1, 20, dtype=np.float32)[:, None, None, None] * np.ones((20, 3, 64, 96), np.float32)
    >>> _ = write_video(p, ramp, fps=10)
    >>> clip = read_video(p, VideoSampling(n_frames=4))
    >>> clip.frames.shape, clip.fps, clip.frame_times_us.tolist()
    ((4, 3, 112, 112), 2.0, [0, 500000, 1000000, 1500000, 2000000])
"""
from __future__ import annotations

import bisect
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np

from workbench.data.clip import IMAGE_SIZE, Clip
from workbench.data.video_fit import Fit, aspect_note, fit_frame as _fit_frame
from workbench.data.video_write import write_video  # noqa: F401 (re-exported)
from workbench.errors import (CorruptFileError, EmptyInputError, InputError, InputTooLargeError,
                              UnsupportedFormatError)

MAX_FILE_BYTES = 2 * 1024**3
MAX_WIDTH, MAX_HEIGHT = 7680, 4320  # 8K UHD; a portrait 4320×7680 is accepted too
MAX_DURATION_S = 3 * 3600.0
MAX_FRAMES = 4096  # upper bound for VideoSampling.max_frames: 4096 × 3 × 112² float32 ≈ 600 MB
_EPS_S = 1e-6  # a frame stamped within 1 µs after a sample time counts as "at" it (float rounding)
_SEEK_MARGIN_S = 0.5  # seek to a keyframe at least this far before the target (B-frame reordering)
_MIN_SEEK_GAIN_S = 0.2  # don't seek unless it skips at least this much video
_BLIND_SEEK_S = 5.0  # without a keyframe index, seek only to a window starting later than this
_TRUNCATION_SLACK = (1.0, 0.1)  # an early end beyond max(1 s, 10 % of the window) means a truncated stream

# the first bytes of common containers: a file that starts like one of them but fails to open is corrupt,
# anything else is simply not a video format we read
_MAGIC = ((4, b"ftyp"), (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"), (4, b"skip"), (0, b"RIFF"),
          (0, b"\x1a\x45\xdf\xa3"), (0, b"OggS"), (0, b"FLV"), (0, b"\x00\x00\x01\xba"), (0, b"GIF8"),
          (0, b"\x30\x26\xb2\x75"))


@dataclass(frozen=True)
class VideoSampling:
    """Which frames to take from a video and how to fit them to the model grid.

    n_frames: count-based sampling — this many frames evenly spaced over the window (segment centres).
    fps: rate-based sampling — one frame every 1/fps s; if that gives more than `max_frames`, the rate is
        lowered so that `max_frames` frames cover the whole window. When `fps` is set, `n_frames` is ignored.
    start_s / duration_s: the window (duration None = to the end of the video).
    fit: "crop" (centre square, then resize), "pad" (letterbox, black bars) or "stretch".

        >>> VideoSampling(fps=2.0, start_s=1.0, duration_s=3.0).fps
        2.0
    """

    n_frames: int | None = 16
    fps: float | None = None
    start_s: float = 0.0
    duration_s: float | None = None
    max_frames: int = 256
    fit: Fit = "crop"
    size: int = IMAGE_SIZE

    def __post_init__(self):
        def finite(x) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        def whole(x) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        problems = [
            (self.fps is None and self.n_frames is None, "VideoSampling needs n_frames or fps"),
            (self.fps is not None and not (finite(self.fps) and self.fps > 0), f"fps must be > 0, not {self.fps!r}"),
            (not (whole(self.max_frames) and 1 <= self.max_frames <= MAX_FRAMES),
             f"max_frames must be an int in [1, {MAX_FRAMES}], not {self.max_frames!r}"),
            (self.fps is None and not (whole(self.n_frames) and 1 <= self.n_frames <= self.max_frames),
             f"n_frames must be an int in [1, max_frames={self.max_frames}], not {self.n_frames!r}"),
            (not (finite(self.start_s) and self.start_s >= 0), f"start_s must be ≥ 0, not {self.start_s!r}"),
            (self.duration_s is not None and not (finite(self.duration_s) and self.duration_s > 0),
             f"duration_s must be > 0 or None, not {self.duration_s!r}"),
            (self.fit not in ("crop", "pad", "stretch"), f"fit must be crop, pad or stretch, not {self.fit!r}"),
            (not (whole(self.size) and 1 <= self.size <= 1024), f"size must be an int in [1, 1024], not {self.size!r}"),
        ]
        for bad, message in problems:
            if bad:
                raise ValueError(message)


def sample_times(video_duration_s: float, sampling: VideoSampling) -> tuple[np.ndarray, np.ndarray]:
    """Window edges (T + 1,) and sample times (T,) in seconds for a video of the given duration.

    Frame t covers [edges[t], edges[t+1]); it is sampled at the centre of that interval.
    Raises ValueError when the window starts at or after the end of the video.

        >>> edges, times = sample_times(10.0, VideoSampling(n_frames=4, start_s=2.0, duration_s=4.0))
        >>> edges.tolist(), times.tolist()
        ([2.0, 3.0, 4.0, 5.0, 6.0], [2.5, 3.5, 4.5, 5.5])
    """
    t0 = sampling.start_s
    if t0 >= video_duration_s:
        raise ValueError(f"the window starts at {t0:.3f} s but the video lasts only {video_duration_s:.3f} s")
    t1 = video_duration_s if sampling.duration_s is None else min(video_duration_s, t0 + sampling.duration_s)
    span = t1 - t0
    if sampling.fps is not None:
        n = max(1, int(math.floor(span * sampling.fps + 1e-9)))
        step = 1.0 / sampling.fps if n <= sampling.max_frames else span / sampling.max_frames
        n = min(n, sampling.max_frames)
    else:
        n = sampling.n_frames
        step = span / n
    edges = t0 + step * np.arange(n + 1, dtype=np.float64)  # (T + 1,)
    return edges, edges[:-1] + step / 2


def read_video(path: str | os.PathLike, sampling: VideoSampling = VideoSampling()) -> Clip:
    """Decode a video file into an RGB `Clip` (frames float32 (T, 3, size, size) in [0, 1]).

    Reads anything FFmpeg demuxes (mp4, mov, mkv, webm, avi, …). `clip.fps` is the effective sampling rate,
    `clip.frame_times_us` the (T + 1,) window edges in µs from the start of the video, `clip.meta` the
    source, container, codec, original size / fps / duration, the number of decoded frames and the sampling.

        >>> clip = read_video("../shared/data/real/video/bikes.mp4", VideoSampling(n_frames=8))  # doctest: +SKIP
        >>> clip.frames.shape, clip.meta["width"], clip.meta["height"]  # doctest: +SKIP
        ((8, 3, 112, 112), 640, 272)
    """
    src = _check_file(path)
    try:
        return _read(src, sampling)
    except InputError:
        raise
    except MemoryError as e:
        raise InputTooLargeError(src, "decoding it needs more memory than this machine has") from e
    except av.error.DecoderNotFoundError as e:
        raise UnsupportedFormatError(src, f"no decoder for its video codec ({e})") from e
    except (av.error.FFmpegError, OSError, ValueError, IndexError, KeyError, EOFError, OverflowError,
            ZeroDivisionError, RuntimeError, AttributeError, TypeError) as e:  # PyAV on broken streams
        raise CorruptFileError(src, f"the video cannot be decoded: {type(e).__name__}: {e}") from e


def _check_file(path) -> Path:
    src = Path(path)
    try:
        st = src.stat()
    except OSError as e:
        raise InputError(src, f"cannot open the file ({e.strerror or e})") from e
    if src.is_dir():
        raise UnsupportedFormatError(src, "is a folder, not a video file")
    if st.st_size == 0:
        raise EmptyInputError(src, "the file is empty (0 bytes)")
    if st.st_size > MAX_FILE_BYTES:
        raise InputTooLargeError(src, f"the file has {st.st_size / 1024**3:.1f} GiB; the limit is "
                                      f"{MAX_FILE_BYTES / 1024**3:.0f} GiB")
    return src


def _open(src: Path):
    try:
        return av.open(str(src), mode="r", metadata_errors="ignore")
    except PermissionError as e:
        raise InputError(src, "cannot read the file (permission denied)") from e
    except (av.error.FFmpegError, OSError, ValueError, IndexError, EOFError) as e:
        try:
            with open(src, "rb") as fh:
                head = fh.read(16)
        except OSError:
            head = b""
        if any(head[o:o + len(m)] == m for o, m in _MAGIC):
            raise CorruptFileError(src, f"looks like a video container but cannot be opened; it is probably "
                                        f"truncated or damaged ({e})") from e
        raise UnsupportedFormatError(src, f"not a video file FFmpeg can read ({e})") from e


def _video_stream(container, src: Path):
    attached = av.stream.Disposition.attached_pic
    for s in container.streams.video:
        if not (s.disposition & attached):  # cover art in audio files is a "video" stream of one picture
            return s
    kinds = sorted({s.type for s in container.streams})
    raise EmptyInputError(src, "the file has no video stream" + (f" (only {', '.join(kinds)})" if kinds else ""))


def _read(src: Path, sampling: VideoSampling) -> Clip:
    with _open(src) as container:
        stream = _video_stream(container, src)
        cc = stream.codec_context
        if cc is None:  # FFmpeg knows no decoder for the stream's codec id
            raise UnsupportedFormatError(src, "its video codec is unknown to FFmpeg (no decoder)")
        width, height = int(cc.width or 0), int(cc.height or 0)
        _check_resolution(src, width, height)
        tb = stream.time_base
        origin = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        native_fps = float(rate) if rate else None
        duration, strict = _declared_duration(container, stream)
        if duration is None:
            duration = _scan_duration(src, native_fps)
        if duration > MAX_DURATION_S:
            raise InputTooLargeError(src, f"the video lasts {duration / 3600:.1f} h; the limit is "
                                          f"{MAX_DURATION_S / 3600:.0f} h")
        try:
            edges, targets = sample_times(duration, sampling)
        except ValueError as e:
            raise EmptyInputError(src, str(e)) from e
        cc.thread_type = "AUTO"  # frame + slice threads; output is identical to single-threaded decoding
        fmt_name, codec_name = container.format.name, cc.name
        frames, n_decoded, last_end = _decode_at(container, stream, targets, origin, native_fps, sampling, src)
    window_end = float(edges[-1])
    slack = max(_TRUNCATION_SLACK[0], _TRUNCATION_SLACK[1] * (window_end - float(edges[0])))
    if strict and last_end is not None and last_end < window_end - slack:
        raise CorruptFileError(src, f"the video stream ends at {last_end:.2f} s although the file declares "
                                    f"{duration:.2f} s; the file is truncated or damaged")
    span = float(edges[-1] - edges[0])
    return Clip(frames=frames, modality="rgb", sample_id=src.stem, fps=len(targets) / span,
                frame_times_us=np.round(edges * 1e6).astype(np.int64),
                meta={"source": str(src), "container": fmt_name, "codec": codec_name,
                      "width": width, "height": height, "fps": native_fps, "duration_s": duration,
                      "n_decoded": n_decoded, "sampling": asdict(sampling), "fit": sampling.fit,
                      "notes": [n for n in (aspect_note(width, height, sampling.fit),) if n]})


def _check_resolution(src: Path, width: int, height: int) -> None:
    if max(width, height) > MAX_WIDTH or min(width, height) > MAX_HEIGHT:
        raise InputTooLargeError(src, f"the video is {width}×{height}; the limit is {MAX_WIDTH}×{MAX_HEIGHT}")


def _declared_duration(container, stream) -> tuple[float | None, bool]:
    """(duration in s, whether it is the video stream's own figure) from metadata, or (None, False)."""
    if stream.duration and stream.time_base and stream.duration > 0:
        return float(stream.duration * stream.time_base), True
    if stream.frames and stream.average_rate:
        return float(stream.frames / stream.average_rate), True
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")  # Matroska / WebM per-track tag
    try:
        hms = [float(x) for x in str(tag).split(":")] if tag else []
    except ValueError:
        hms = []
    if len(hms) == 3 and all(math.isfinite(x) and x >= 0 for x in hms) and sum(hms) > 0:
        return hms[0] * 3600 + hms[1] * 60 + hms[2], True
    if container.duration and container.duration > 0:  # AV_TIME_BASE units (µs), max over all streams
        return container.duration / 1e6, False
    return None, False


def _scan_duration(src: Path, native_fps: float | None) -> float:
    """Duration from packet timestamps (no decoding) when the metadata has none."""
    end, n = 0.0, 0
    with _open(src) as container:
        stream = _video_stream(container, src)
        tb = stream.time_base
        origin = float(stream.start_time * tb) if stream.start_time is not None and tb else None
        frame_dur = 1.0 / native_fps if native_fps else 0.04
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            n += 1
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None or not tb:
                end = max(end, n * frame_dur)
                continue
            t = float(ts * tb)
            origin = t if origin is None else origin
            dur = float(packet.duration * tb) if packet.duration else frame_dur
            end = max(end, t - origin + dur)
    if n == 0:
        raise EmptyInputError(src, "the video stream holds no frames")
    return max(end, frame_dur)


def _keyframe_times(stream, origin: float) -> list[float]:
    """Sorted keyframe times (s from the video start) from the container's index; [] when it has none."""
    try:
        raw = sorted({int(e.timestamp) for e in stream.index_entries if e.is_keyframe})
    except (AttributeError, av.error.FFmpegError, OverflowError, ValueError):
        return []
    return [float(r * stream.time_base) - origin for r in raw] if stream.time_base else []


def _decode_at(container, stream, targets: np.ndarray, origin: float, native_fps: float | None,
               sampling: VideoSampling, src: Path):
    """Decode in order (seeking forward via the keyframe index) and keep the frame on screen at each target.

    Returns frames (T, 3, size, size) float32, the number of decoded frames and the end time of the last
    decoded frame (None when the stream was not decoded to its end).
    """
    n, tb = len(targets), stream.time_base
    frame_dur = 1.0 / native_fps if native_fps else 0.04
    kf_times = _keyframe_times(stream, origin)
    sar = stream.codec_context.sample_aspect_ratio
    sar = float(sar) if sar and sar > 0 else 1.0
    kept: list[np.ndarray] = []  # converted frames (3, size, size)
    choice = np.zeros(n, np.intp)  # target → index into `kept`
    i, n_decoded, t_cur = 0, 0, 0.0
    prev, prev_idx, prev_t = None, None, None
    eof = False

    def convert(frame) -> int:
        _check_resolution(src, frame.width, frame.height)
        kept.append(_fit_frame(frame, sampling.fit, sampling.size, sar))
        return len(kept) - 1

    def seek_target() -> int:  # index of a keyframe worth seeking to before targets[i], or -1
        k = bisect.bisect_right(kf_times, targets[i] - _SEEK_MARGIN_S) - 1
        return k if k > last_seek and kf_times[k] > t_cur + _MIN_SEEK_GAIN_S else -1

    last_seek = -1  # keyframes sought strictly increase, so seeking always terminates
    if not kf_times and targets[0] > _BLIND_SEEK_S:  # no index (e.g. MPEG-TS): one seek to the window start
        if _blind_seek(container, stream, targets[0], origin, src):
            t_cur = targets[0] - _SEEK_MARGIN_S
    while i < n and not eof:
        k = seek_target()
        if k >= 0:
            # seek by time, not by the index entry: its timestamp is a dts and can precede the keyframe's pts,
            # which makes FFmpeg fall back to the keyframe before it
            container.seek(int((targets[i] - _SEEK_MARGIN_S + origin) / tb), stream=stream, backward=True)
            prev, prev_idx, prev_t, last_seek = None, None, None, k
        eof = True
        for frame in container.decode(stream):
            n_decoded += 1
            t = float(frame.pts * tb) - origin if frame.pts is not None and tb else (
                prev_t + frame_dur if prev_t is not None else max(t_cur, 0.0))
            cur_idx = None
            while i < n and targets[i] < t - _EPS_S:  # targets before this frame show the previous one
                if prev is None:  # nothing decoded before it (stream start or just after a seek)
                    cur_idx = convert(frame) if cur_idx is None else cur_idx
                    choice[i] = cur_idx
                else:
                    prev_idx = convert(prev) if prev_idx is None else prev_idx
                    choice[i] = prev_idx
                i += 1
            prev, prev_idx, prev_t, t_cur = frame, cur_idx, t, t
            if i == n:
                eof = False
                break
            if seek_target() >= 0:
                eof = False
                break  # seek forward past frames we don't need
    if n_decoded == 0:
        raise EmptyInputError(src, "the video stream holds no decodable frame (the file may be truncated)")
    if prev is None and i < n:
        raise CorruptFileError(src, f"no frame could be decoded after seeking to {targets[i]:.2f} s")
    last_end = None
    if i < n:  # end of stream: the last frame stays on screen
        prev_idx = convert(prev) if prev_idx is None else prev_idx
        choice[i:] = prev_idx
        last_end = prev_t + frame_dur
    return np.stack([kept[j] for j in choice]), n_decoded, last_end  # (T, 3, size, size)


def _blind_seek(container, stream, target: float, origin: float, src: Path) -> bool:
    """Seek just before `target` without a keyframe index, after checking on a second handle that the seek
    lands at or before the target (else nothing moves and decoding stays sequential)."""
    tb = stream.time_base
    if not tb:
        return False
    pos = int((target - _SEEK_MARGIN_S + origin) / tb)
    try:
        with av.open(str(src), mode="r", metadata_errors="ignore") as probe:
            ps = probe.streams[stream.index]
            probe.seek(pos, stream=ps, backward=True)
            first = next(probe.decode(ps), None)
        if first is None or first.pts is None or float(first.pts * tb) - origin > target - _EPS_S:
            return False
        container.seek(pos, stream=stream, backward=True)
    except (av.error.FFmpegError, OSError, ValueError, IndexError, StopIteration):
        return False
    return True
