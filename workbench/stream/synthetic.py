"""Long ShapesWorld streams as real video files: scene after scene at 25–30 fps, with their reference captions.

A ShapesWorld scene's motion is defined over the clip's length (frame t of T moves an object t/(T−1) of its
way), so rendering a seed with `frames_per_scene` frames plays the same 2-second scene at
`frames_per_scene / 2` frames per second. `write_shapes_stream` renders scenes one at a time and encodes them
into one file (a hard cut between scenes), so the stream is decoded like any user's video; `scenes` says which
seed covers which seconds, for caption checks per window.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "s.mp4")
    >>> path, scenes = write_shapes_stream(p, seeds=[0, 1], frames_per_scene=10, fps=5.0)
    >>> [(s.seed, s.start_s, s.end_s) for s in scenes]
    [(0, 0.0, 2.0), (1, 2.0, 4.0)]
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.data.video_write import write_video


@dataclass(frozen=True)
class Scene:
    seed: int
    start_s: float
    end_s: float
    captions: list = field(default_factory=list, compare=False)
    motion_level: str = ""


def write_shapes_stream(path: str | os.PathLike, seeds, frames_per_scene: int = 50, fps: float = 25.0,
                        crf: int = 18) -> tuple[Path, list[Scene]]:
    """Render ShapesWorld `seeds` one after another into a video file at `fps` (H.264 by default)."""
    from workbench.data.shapesworld import make_clip
    scenes: list[Scene] = []

    def frames():
        t = 0.0
        for seed in seeds:
            clip = make_clip(int(seed), frames_per_scene)
            dur = frames_per_scene / fps
            scenes.append(Scene(int(seed), round(t, 6), round(t + dur, 6), list(clip.captions),
                                clip.meta["motion_level"]))
            t += dur
            for f in clip.frames:  # (3, H, W) float → (H, W, 3) uint8
                yield (np.clip(f.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)
    out = write_video(path, frames(), fps=fps, crf=crf)
    return out, scenes
