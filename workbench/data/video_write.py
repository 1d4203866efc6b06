"""Frames → a video file on PyAV (the inverse of `workbench.data.video.read_video`): browser-playable H.264 mp4
by default, any container/codec FFmpeg writes otherwise. Used to save traced clips for the app and to make
test videos of every container the reader supports."""
from __future__ import annotations

import math
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_video(path: str | os.PathLike, frames, fps: float, *, codec: str = "libx264", crf: int = 23,
                preset: str = "veryfast", pix_fmt: str = "yuv420p", options: dict[str, str] | None = None) -> Path:
    """Encode frames to a video file; the defaults give a browser-playable H.264 mp4 (yuv420p, faststart).

    frames: float (T, 3, H, W) in [0, 1], uint8 (T, H, W, 3), or an iterable of per-frame arrays
    ((3, H, W) float / (H, W, 3) uint8) so long videos need not be held in memory. Odd sizes are padded by
    one edge pixel (yuv420p needs even sides). The container follows the extension (.mp4, .mkv, .mov, .avi,
    .webm with codec="libvpx-vp9", …). `crf` / `preset` apply to libx264 / libx265 only.

        >>> import numpy as np, tempfile, os
        >>> p = write_video(os.path.join(tempfile.mkdtemp(), "a.mp4"), np.zeros((4, 3, 32, 48), np.float32), fps=8)
        >>> p.suffix, p.stat().st_size > 0
        ('.mp4', True)
    """
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, not {fps!r}")
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    opts = {"crf": str(crf), "preset": preset} if codec in ("libx264", "libx265") else {}
    opts.update(options or {})
    container_opts = {"movflags": "+faststart"} if path.suffix.lower() in (".mp4", ".mov", ".m4v") else {}
    try:
        _encode(path, frames, rate, codec, pix_fmt, opts, container_opts)
    except BaseException:
        path.unlink(missing_ok=True)  # no half-written file
        raise
    return path


def _encode(path: Path, frames, rate: Fraction, codec: str, pix_fmt: str, opts: dict, container_opts: dict):
    with av.open(str(path), mode="w", options=container_opts) as out:
        stream, count = None, 0
        for img in _iter_frames_hwc(frames):
            if stream is None:
                h, w = img.shape[0] + img.shape[0] % 2, img.shape[1] + img.shape[1] % 2
                stream = out.add_stream(codec, rate=rate, options=opts)
                stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
            if img.shape[0] % 2 or img.shape[1] % 2:
                img = np.pad(img, ((0, img.shape[0] % 2), (0, img.shape[1] % 2), (0, 0)), mode="edge")
            if img.shape[:2] != (stream.height, stream.width):
                raise ValueError(f"frame {count} is {img.shape[1]}×{img.shape[0]}, the video is "
                                 f"{stream.width}×{stream.height}")
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts, vf.time_base = count, 1 / rate
            out.mux(stream.encode(vf))
            count += 1
        if stream is None:
            raise ValueError("write_video needs at least one frame")
        out.mux(stream.encode(None))


def _iter_frames_hwc(frames) -> Iterable[np.ndarray]:
    """Yield uint8 (H, W, 3) contiguous frames from any accepted layout."""
    if hasattr(frames, "detach"):  # a torch tensor (not imported here: torch is slow to import)
        frames = frames.detach().cpu().numpy()
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        frames = iter(frames)
    elif isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be (T, 3, H, W) float or (T, H, W, 3) uint8, got shape {frames.shape}")
    for f in frames:
        f = np.asarray(f.detach().cpu().numpy() if hasattr(f, "detach") else f)
        if f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3:
            yield np.ascontiguousarray(f)
        elif np.issubdtype(f.dtype, np.floating) and f.ndim == 3 and f.shape[0] == 3:
            f = np.nan_to_num(f.astype(np.float32, copy=False), nan=0.0)
            yield np.ascontiguousarray((np.clip(f, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0))
        else:
            raise ValueError(f"each frame must be (3, H, W) float in [0, 1] or (H, W, 3) uint8, "
                             f"got {f.dtype} {f.shape}")
