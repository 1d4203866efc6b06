"""What the app accepts and how it turns it into a Clip: upload limits, content hashing, bundled samples.

No gradio here. An upload is checked against `UploadLimits` before anything is decoded (size; for videos the
resolution and duration from the container header), then read by `workbench.data.load.load_clip` — the one
door every input goes through. Every problem is an `InputError` whose message names the file the user
uploaded (never gradio's temporary path).

Uploads are identified by the SHA-256 of their content (`file_digest`), so re-running with new knobs — or
uploading the same file again — finds the decoded Clip in the session's cache (`session.SessionCache`).

    >>> sample_clip("fast motion", 8).frames.shape
    (8, 3, 112, 112)
    >>> input_key(None, "fast motion", 8)
    'sample:fast motion:8'
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from workbench.data.clip import Clip
from workbench.data.load import load_clip
from workbench.data.samples import SAMPLES, load_sample
from workbench.errors import InputError, InputTooLargeError, UnsupportedFormatError

__all__ = ["UploadLimits", "LIMITS", "SAMPLE_NAMES", "FRAME_CHOICES", "file_digest", "input_key", "check_upload",
           "load_upload", "sample_clip"]

SAMPLE_NAMES = list(SAMPLES)
FRAME_CHOICES = (8, 16)
VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".ogv", ".gif")


@dataclass(frozen=True)
class UploadLimits:
    """The app's limits (stricter than the readers', which guard the library: 2 GiB, 8K, 3 h)."""

    max_mb: float = 200.0  # also handed to gradio's `max_file_size`, so bigger uploads never reach us
    max_duration_s: float = 600.0  # videos: 10 minutes (16 frames are sampled from the whole length)
    max_long_side: int = 3840  # videos: 4K UHD in either orientation
    max_short_side: int = 2160


LIMITS = UploadLimits()


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of the file's content (hex, first 16 characters)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def input_key(upload_digest: str | None, sample: str | None, n_frames: int) -> str:
    """Cache key of an input: the upload's content hash, else the sample's name, with the frame count."""
    return f"upload:{upload_digest}:{n_frames}" if upload_digest else f"sample:{sample}:{n_frames}"


def _probe_video(path: Path) -> tuple[int, int, float | None] | None:
    """(width, height, duration s) from the container header, or None when PyAV cannot open it (the reader
    then says precisely what is wrong)."""
    import av
    try:
        with av.open(str(path), metadata_errors="ignore") as c:
            if not c.streams.video:
                return None
            s = c.streams.video[0]
            w, h = int(s.codec_context.width or 0), int(s.codec_context.height or 0)
            dur = None
            if c.duration:
                dur = c.duration / 1e6  # av.time_base (µs)
            elif s.duration and s.time_base:
                dur = float(s.duration * s.time_base)
            return w, h, dur
    except Exception:  # noqa: BLE001 - any failure here is reported by read_video with a proper message
        return None


def check_upload(path: str | os.PathLike, limits: UploadLimits = LIMITS) -> None:
    """Raise InputTooLargeError when the upload breaks a limit (checked without decoding any frame)."""
    p = Path(path)
    size = p.stat().st_size
    if size > limits.max_mb * 2**20:
        raise InputTooLargeError(p.name, f"{size / 2**20:.0f} MB exceeds the app's {limits.max_mb:.0f} MB upload limit")
    from workbench.data.readers import sniff_format
    try:
        sniff_format(p)
        return  # an event file: the size limit applies; the app reads a 2 s window of it
    except UnsupportedFormatError:
        pass
    except InputError:
        return  # a damaged event file: read_events reports it
    probe = _probe_video(p)
    if probe is None:
        return
    w, h, dur = probe
    if max(w, h) > limits.max_long_side or min(w, h) > limits.max_short_side:
        raise InputTooLargeError(p.name, f"the video is {w}×{h}; the app accepts up to "
                                         f"{limits.max_long_side}×{limits.max_short_side} (either orientation)")
    if dur is not None and dur > limits.max_duration_s:
        raise InputTooLargeError(p.name, f"the video lasts {dur / 60:.1f} min; the app accepts up to "
                                         f"{limits.max_duration_s / 60:.0f} min")


def load_upload(path: str | os.PathLike, n_frames: int = 16, limits: UploadLimits = LIMITS,
                fit: str = "crop") -> Clip:
    """Check the limits, then read the upload (video or event file) as a Clip of `n_frames` frames.

    `clip.meta["note"]` (shown by the dashboard next to the captions) says how a non-square input was fitted
    (`fit`: crop / pad / stretch) and that the embedded model knows only its procedural world.
    """
    from workbench.stream.captions import REAL_FOOTAGE_NOTE
    p = Path(path)
    if not p.is_file():
        raise InputError(p.name, "the upload did not arrive (no such file); please upload it again")
    try:
        check_upload(p, limits)
        clip = load_clip(p, n_frames=n_frames, fit=fit)
    except InputError as e:  # show the name the user uploaded, never gradio's temp path
        raise type(e)(p.name, e.reason.replace(str(p), p.name)) from None
    notes = list(clip.meta.get("notes", [])) + [REAL_FOOTAGE_NOTE]
    clip.meta["note"] = "; ".join(n[0].upper() + n[1:] for n in notes if n)
    return clip


def sample_clip(name: str, n_frames: int = 16) -> Clip:
    """A bundled sample with `n_frames` frames: the cached 16-frame sample, or the same scene / gesture
    generated again at the requested length (ShapesWorld scenes and gestures are defined by their seed)."""
    if name not in SAMPLES:
        raise InputError("sample", f"unknown sample {name!r}; choose one of {', '.join(SAMPLE_NAMES)}")
    base = load_sample(name)
    if n_frames == base.num_frames:
        return base
    from workbench.data.gestures import make_gesture_clip
    from workbench.data.shapesworld import make_clip, make_scene_cut_clip
    meta = base.meta
    if base.modality == "events":
        return make_gesture_clip(int(meta["seed"]), label=base.label, n_frames=n_frames)
    if "scene_cut_at" in meta:
        return make_scene_cut_clip(int(meta["first_scene_seed"]), int(meta["seed"]), cut=n_frames // 2,
                                   num_frames=n_frames)
    return make_clip(int(meta["seed"]), n_frames)
