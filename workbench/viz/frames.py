"""Frames as displayable images: RGB frames as they are, event frames as red (ON) / blue (OFF) on black.

    >>> import numpy as np
    >>> from workbench.data.clip import Clip
    >>> c = Clip(np.zeros((2, 2, 112, 112), np.float32), "events", "e")
    >>> frame_image(c, 0).shape, frame_image(c, 0).dtype
    ((112, 112, 3), dtype('uint8'))
"""
from __future__ import annotations

import numpy as np

from workbench.data.clip import Clip


def frame_image(clip: Clip, t: int, scale: int = 1) -> np.ndarray:
    """(H·scale, W·scale, 3) uint8 image of frame t."""
    f = clip.frames[t]
    if clip.modality == "rgb":
        img = f.transpose(1, 2, 0)
    else:  # OFF → blue, ON → red, both → magenta
        img = np.stack([f[1], np.zeros_like(f[0]), f[0]], -1)
    img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    if scale > 1:
        img = img.repeat(scale, 0).repeat(scale, 1)
    return img


def frame_strip(clip: Clip, scale: int = 2) -> list[tuple[np.ndarray, str]]:
    """All frames as (image, label) pairs for a gallery."""
    times = clip.frame_times_us
    labels = [f"frame {t}" + (f" · {times[t] / 1e6:.2f} s" if times is not None else "") for t in range(clip.num_frames)]
    return [(frame_image(clip, t, scale), labels[t]) for t in range(clip.num_frames)]
