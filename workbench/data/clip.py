"""`Clip`: what every reader produces and every model/method consumes.

A clip is T frames on the model grid — RGB frames (3 channels, values in [0, 1]) or event frames
(2 polarity channels, OFF/ON, normalised counts in [0, 1]) — plus whatever ground truth the source has.

    >>> import numpy as np
    >>> c = Clip(frames=np.zeros((16, 3, 112, 112), np.float32), modality="rgb", sample_id="demo")
    >>> c.num_frames, c.grid
    (16, 14)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

IMAGE_SIZE = 112  # model input side in pixels
PATCH_SIZE = 8  # ViT patch side → a 14×14 grid, 196 tokens per frame as in the papers
GRID = IMAGE_SIZE // PATCH_SIZE
NUM_PATCHES = GRID * GRID

Modality = Literal["rgb", "events"]


@dataclass
class Clip:
    """T frames on the model grid plus optional ground truth and provenance.

    frames: float32 (T, C, H, W); C = 3 for rgb, 2 for events (channel 0 OFF, 1 ON).
    frame_times_us: (T + 1,) window edges in µs (frame t covers [edges[t], edges[t+1])).
    events: raw events (EVENT_DTYPE) on the model grid, when the clip came from events.
    patch_event_rate: (T, GRID, GRID) events per pixel per patch and frame, for event-driven change scores.
    motion_mask: (T, GRID, GRID) bool ground truth "an object moved in this patch since the last frame".
    captions: reference captions; qa: (question, answer) pairs; label: gesture class index.
    """

    frames: np.ndarray
    modality: Modality
    sample_id: str
    fps: float = 8.0
    frame_times_us: np.ndarray | None = None
    events: np.ndarray | None = None
    patch_event_rate: np.ndarray | None = None
    motion_mask: np.ndarray | None = None
    captions: list[str] = field(default_factory=list)
    qa: list[tuple[str, str]] = field(default_factory=list)
    label: int | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        f = self.frames
        want_c = 3 if self.modality == "rgb" else 2
        if f.ndim != 4 or f.shape[1] != want_c:
            raise ValueError(f"{self.modality} frames must be (T, {want_c}, H, W), got {f.shape}")
        if f.dtype != np.float32:
            self.frames = f.astype(np.float32)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def grid(self) -> int:
        return int(self.frames.shape[-1]) // PATCH_SIZE

    @property
    def duration_s(self) -> float:
        if self.frame_times_us is not None:
            return float(self.frame_times_us[-1] - self.frame_times_us[0]) / 1e6
        return self.num_frames / self.fps
