"""Fitting a decoded picture to the square model input: centre crop, letterbox or squash — and saying which.

Videos are rarely square; the model's input is 112×112. `fit_frame` applies one of three fits (after the
display rotation and the sample aspect ratio), and `aspect_note` is the sentence every front end shows next
to the result, so nobody mistakes a cropped or squashed picture for the whole frame.

    >>> aspect_note(640, 272, "crop")
    'the 640×272 picture (2.35:1) was centre-cropped to a square for the 112×112 model input (other fits: pad = letterbox, stretch = squash)'
    >>> aspect_note(112, 112, "crop") is None
    True
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

from workbench.data.clip import IMAGE_SIZE

Fit = Literal["crop", "pad", "stretch"]
FITS: tuple[str, ...] = ("crop", "pad", "stretch")
FIT_WORDS = {"crop": "centre-cropped to a square", "pad": "letterboxed (black bars) into a square",
             "stretch": "squashed to a square (aspect ratio not kept)"}
_SHORT = {"crop": "centre crop", "pad": "letterbox", "stretch": "squash"}


def aspect_note(width: int, height: int, fit: str, size: int = IMAGE_SIZE, what: str = "picture") -> str | None:
    """How a non-square width × height picture (or `what`: "sensor") met the square model input under `fit`
    (None when square)."""
    if not width or not height or width == height:
        return None
    others = ", ".join(f"{f} = {_SHORT[f]}" for f in FITS if f != fit)
    return (f"the {width}×{height} {what} ({width / height:.2f}:1) was {FIT_WORDS[fit]} for the "
            f"{size}×{size} model input (other fits: {others})")


def fit_frame(frame, fit: Fit, size: int, sar: float) -> np.ndarray:
    """One decoded frame → float32 (3, size, size) in [0, 1]: rotate per display matrix, crop/pad/stretch."""
    rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8
    quarter = int(round((frame.rotation or 0) / 90.0)) % 4
    if quarter:
        rgb = np.rot90(rgb, quarter)  # counter-clockwise, as the display matrix says
        sar = 1.0 / sar if quarter % 2 else sar
    h, w = rgb.shape[:2]
    disp_w = w * sar  # width in square display pixels
    if fit == "crop":
        if disp_w >= h:
            ch, cw = h, max(1, min(w, round(h / sar)))
        else:
            ch, cw = max(1, min(h, round(disp_w))), w
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        rgb = rgb[y0:y0 + ch, x0:x0 + cw]  # (ch, cw, 3)
        out_hw = (size, size)
    elif fit == "pad":
        scale = size / max(disp_w, h)
        out_hw = (max(1, min(size, round(h * scale))), max(1, min(size, round(disp_w * scale))))
    else:
        out_hw = (size, size)
    # Pillow's bilinear resize is antialiased (the filter widens with the scale factor, like
    # torch's interpolate(antialias=True)) and ~30× faster here than torch competing with decoder threads
    img = Image.fromarray(np.ascontiguousarray(rgb)).resize((out_hw[1], out_hw[0]), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)  # (3, h, w)
    if fit != "pad":
        return np.ascontiguousarray(x)
    out = np.zeros((3, size, size), np.float32)
    y0, x0 = (size - out_hw[0]) // 2, (size - out_hw[1]) // 2
    out[:, y0:y0 + out_hw[0], x0:x0 + out_hw[1]] = x
    return out
