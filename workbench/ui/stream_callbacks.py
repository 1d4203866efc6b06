"""The dashboard's stream mode as plain functions (no gradio here): a long video or event file processed as a
stream, its window captions as subtitles, a stream-long timeline and the patch overlay at any frame.

`analyse_stream` reads the input frame by frame (`workbench.stream`), captions every window with the chosen
method's state carried across the whole stream, and keeps only what the views need: the windows, a few
numbers per frame and the packed recompute masks (`FrameLog`), a WebVTT file of the captions. The frame
under the slider is decoded again when asked (`frame_pixels`, a seek), so a 10-minute upload never sits in
memory. `stream_views` draws the timeline (`viz.stream`) and the existing patch overlay at that frame.

    >>> a = analyse_stream(None, "gesture events (2 s)", StreamSpec(MethodSpec("sttf", source="events")),
    ...                    "tinyvlm-debug")
    >>> len(a.windows), a.info.modality, a.windows[0].gesture is not None
    (1, 'events', True)
    >>> sorted(vars(stream_views(a, 3)))
    ['overlay', 'timeline']
"""
from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import polars as pl

from workbench.data.clip import Clip
from workbench.errors import InputError
from workbench.stream import FrameLog, StreamConfig, StreamInfo, Window, caption_stream, open_stream
from workbench.stream.captions import REAL_FOOTAGE_NOTE
from workbench.stream.subtitles import write_subtitles
from workbench.stream.trace import frames_table, log_trace, patch_rows
from workbench.ui.inputs import LIMITS, check_upload
from workbench.ui.methods import MethodSpec, build_method
from workbench.viz.overlay import patch_overlay
from workbench.viz.stream import stream_timeline

__all__ = ["StreamSpec", "StreamAnalysis", "StreamViews", "analyse_stream", "stream_views", "windows_table",
           "summary_markdown", "frame_pixels", "STREAM_SAMPLES", "STREAM_ROOT"]

STREAM_ROOT = Path(tempfile.gettempdir()) / "workbench-streams"
STREAM_SAMPLES = {  # generated inputs: (kind, argument)
    "ShapesWorld stream (6 scenes, 12 s at 25 fps)": ("shapes", (3, 9, 12, 21, 30, 44)),
    "gesture events (2 s)": ("seed", "gesture:3"),
}
FPS_CHOICES = ("native", "30", "25", "15", "8")


@dataclass(frozen=True)
class StreamSpec:
    """Stream-mode knobs: the method, the rate (None = native), window / stride in frames, the fit."""

    method: MethodSpec = field(default_factory=MethodSpec)
    fps: float | None = None
    window: int = 16
    stride: int | None = None
    fit: str = "crop"

    def __post_init__(self):
        if self.fps is not None and not 0 < self.fps <= 120:
            raise InputError("frame rate", f"choose 'native' or a rate in (0, 120] per second, not {self.fps}")
        if not 1 <= self.window <= 32:
            raise InputError("window", f"choose 1–32 frames per window, not {self.window}")
        if self.stride is not None and not 1 <= self.stride <= self.window:
            raise InputError("stride", f"choose 1–{self.window} frames (the window) or 0 for back to back")
        if self.fit not in ("crop", "pad", "stretch"):
            raise InputError("fit", f"choose crop, pad or stretch, not {self.fit!r}")


@dataclass
class StreamAnalysis:
    source: str  # what `open_stream` reads: a file path or a seed
    name: str  # what the user sees
    info: StreamInfo
    spec: StreamSpec
    model_name: str
    windows: list[Window]
    log: FrameLog
    trace: pl.DataFrame  # frame-level rows of the whole stream (one trace schema)
    fuse: bool
    wall_s: float
    error: str | None = None
    subtitles: str | None = None  # WebVTT of the window captions
    video: str | None = None  # a playable video of the input (events: the binned frames)
    notes: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return len(self.log)

    @property
    def media_s(self) -> float:
        return (self.windows[-1].end_s - self.windows[0].start_s) if self.windows else 0.0

    @property
    def rtf(self) -> float | None:
        return self.wall_s / self.media_s if self.media_s > 0 else None


@lru_cache(maxsize=2)
def _sample_file(name: str) -> str:
    """A generated stream sample written once per process (ShapesWorld scenes as an H.264 file)."""
    from workbench.stream.synthetic import write_shapes_stream
    kind, arg = STREAM_SAMPLES[name]
    STREAM_ROOT.mkdir(parents=True, exist_ok=True)
    path, _ = write_shapes_stream(STREAM_ROOT / f"sample-{uuid.uuid4().hex[:6]}.mp4", arg, frames_per_scene=50,
                                  fps=25.0)
    return str(path)


def _source(upload: str | None, sample: str | None) -> tuple[str, str, bool]:
    """(what open_stream reads, display name, generated?)"""
    if upload:
        p = Path(upload)
        if not p.is_file():
            raise InputError(p.name, "the upload did not arrive (no such file); please upload it again")
        check_upload(p, LIMITS)
        return str(p), p.name, False
    if sample in STREAM_SAMPLES:
        kind, arg = STREAM_SAMPLES[sample]
        return (_sample_file(sample) if kind == "shapes" else arg), sample, True
    raise InputError("input", "upload a video or an event file, or pick a generated stream")


def analyse_stream(upload: str | None, sample: str | None, spec: StreamSpec, model_name: str = "tinyvlm-shapes",
                   progress: Callable | None = None, anc_module=None) -> StreamAnalysis:
    """Stream the input under `spec` (see the module docstring). Damage mid-stream keeps the windows before it
    and is reported in `error`; bad input before the first frame raises InputError."""
    from workbench.ui.callbacks import get_model
    progress = progress or (lambda *a, **k: None)
    source, name, generated = _source(upload, sample)
    model = get_model(model_name)
    t0 = time.perf_counter()
    try:
        src = open_stream(source, fps=spec.fps, fit=spec.fit)
    except InputError as e:  # name the file the user uploaded, never gradio's temporary path
        raise type(e)(name, e.reason.replace(source, name)) from None
    info = src.info
    probe = Clip(frames=np.zeros((1, 2 if info.modality == "events" else 3, 8, 8), np.float32),
                 modality=info.modality, sample_id=name,
                 patch_event_rate=np.zeros((1, 1, 1), np.float32) if info.modality == "events" else None)
    method = build_method(spec.method, model, probe, anc_module)
    total = int(info.duration_s * info.fps) if info.duration_s else None
    log = FrameLog(keep_masks=True)
    windows, error = [], None

    def tick(n: int) -> None:
        if total and n % 25 == 0:
            progress(min(n / total, 0.99), desc=f"frame {n} of ~{total}")
    try:
        for w in caption_stream(model, src, method, StreamConfig(window=spec.window, stride=spec.stride), log, tick):
            windows.append(w)
    except InputError as e:
        if not windows:
            raise type(e)(name, e.reason.replace(source, name)) from None
        error = f"{name}: {e.reason.replace(source, name)}"
    wall = time.perf_counter() - t0
    fuse = bool(getattr(getattr(method, "cfg", None), "fuse", False) or getattr(getattr(method, "sttf", None), "fuse", False))
    a = StreamAnalysis(source, name, info, spec, model_name, windows, log,
                       log_trace(log, windows, f"stream-{uuid.uuid4().hex[:8]}", info.sample_id), fuse, wall, error)
    a.notes = list(info.meta.get("notes", [])) + ([] if generated else [REAL_FOOTAGE_NOTE])
    folder = STREAM_ROOT / uuid.uuid4().hex[:8]
    folder.mkdir(parents=True, exist_ok=True)
    a.subtitles = str(write_subtitles(folder / f"{Path(name).stem}.vtt", windows))
    a.video = source if info.modality == "rgb" and not source.startswith(("shapes:", "gesture:")) else \
        _event_video(a, folder)
    progress(1.0, desc="done")
    return a


def _event_video(a: StreamAnalysis, folder: Path) -> str:
    """The model's view of a non-video stream (event frames: OFF blue, ON red) as a playable H.264 file."""
    from workbench.data.video_write import write_video
    from workbench.viz.style import to_rgb_image
    frames = (to_rgb_image(f.pixels) for f in open_stream(a.source, fps=a.spec.fps, fit=a.spec.fit))
    return str(write_video(folder / "stream.mp4", frames, fps=a.info.fps))


def frame_pixels(a: StreamAnalysis, t: int) -> np.ndarray:
    """The model's input frame t (C, 112, 112), decoded again by seeking (event streams: re-binned, so its
    brightness is normalised without the stream's history)."""
    step = 1.0 / a.info.fps
    if a.source.startswith(("shapes:", "gesture:")):
        return next(f for i, f in enumerate(open_stream(a.source)) if i == t).pixels
    src = open_stream(a.source, fps=a.info.fps, fit=a.spec.fit, start_s=t * step, duration_s=step)
    return next(iter(src)).pixels


@dataclass
class StreamViews:
    timeline: go.Figure
    overlay: go.Figure


def stream_views(a: StreamAnalysis, frame: int = 0) -> StreamViews:
    """The stream timeline with the scrubber at `frame`, and the patch overlay of that frame."""
    from workbench.ui.callbacks import get_model
    t = int(np.clip(int(frame or 0), 0, a.num_frames - 1))
    n = get_model(a.model_name).cfg.num_patches
    rows = patch_rows(a.log, t, n, a.fuse, a.trace["run_id"][0], a.info.sample_id)
    w = next((w for w in a.windows if w.first_frame <= t < w.end_frame), a.windows[-1])
    overlay = patch_overlay(frame_pixels(a, t), rows, t, view="decision",
                            title=f"frame {t} ({a.log.start_s[t]:.2f} s) · window {w.index} · "
                                  f"{int(a.log.computed[t])} of {n} patches computed")
    return StreamViews(stream_timeline(frames_table(a.trace), windows_table(a), t, n), overlay)


def windows_table(a: StreamAnalysis) -> pl.DataFrame:
    """One row per window: start, end, caption (gesture), tokens per frame to the decoder, computed per frame."""
    return pl.DataFrame({"start_s": [round(w.start_s, 2) for w in a.windows],
                         "end_s": [round(w.end_s, 2) for w in a.windows],
                         "caption": [w.caption + (f"  [gesture: {w.gesture}]" if w.gesture else "") for w in a.windows],
                         "tokens_per_frame": [round(w.tokens_per_frame, 1) for w in a.windows],
                         "computed_per_frame": [round(w.tokens_computed / w.n_frames, 1) for w in a.windows]})


def summary_markdown(a: StreamAnalysis) -> str:
    """What ran, how fast, and what to keep in mind when reading the captions."""
    i, s = a.info, a.spec
    frames = a.num_frames
    tok = sum(w.tokens_to_decoder for w in a.windows) / max(frames, 1)
    comp = sum(w.tokens_computed for w in a.windows) / max(frames, 1)
    rtf = f"{a.rtf:.3f}" if a.rtf is not None else "–"
    lines = [f"**stream** `{a.name}` · {i.modality} · {frames} frames at {i.fps:.3g} fps "
             f"({'native' if s.fps is None else 'resampled'}) · {a.media_s:.2f} s · {len(a.windows)} windows of ≤ "
             f"{s.window} frames (stride {s.stride or s.window})",
             f"**method** {s.method.label()} · {tok:.1f} visual tokens per frame to the decoder, {comp:.1f} computed "
             f"by the encoder (dense: 196) · processed in {a.wall_s:.2f} s: real-time factor **{rtf}** "
             "(decoding, encoding and captioning ÷ media time)"]
    if a.error:
        lines.append(f"⚠ **the input broke mid-stream** — the windows above are the ones before the damage: {a.error}")
    lines += [f"_note: {n}_" for n in a.notes]
    return "\n\n".join(lines)
