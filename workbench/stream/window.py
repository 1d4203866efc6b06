"""Windows over a stream: which frames get a caption together, and their visual tokens from the carried state.

A window is `window` consecutive frames (default 16, the clip length the model was trained on; at most the
model's `max_frames`, whose time embedding it needs); consecutive windows start `stride` frames apart
(default = window: back to back, every frame captioned once; a smaller stride overlaps them). The stream's
last frames form a final, shorter window when they do not fill one (`WindowSchedule`).

A window's decoder tokens come from the stream's carried state, never from a fresh encode: each frame's
`FrameOut` holds its N encoder tokens (reused patches: their cached outputs) and which patches were computed.
With temporal fusion (STTF) a patch contributes one token per run of frames in which it was not recomputed; a
run carried in from before the window starts a token at the window's first frame (the cached output — the
same token the run had before), so the first frame of a window costs the decoder N tokens but the encoder
only what changed. Without fusion (dense, ANC) the decoder gets all N tokens of every frame.

When every patch of every frame is computed (compression off) the tokens are exactly `VisualTokens.dense` of
the frames — what the same frames give as a separate clip.

    >>> s = WindowSchedule(window=4, stride=4)
    >>> [s.ends_window(n) for n in range(1, 9)], s.tail(10)
    ([False, False, False, True, False, False, False, True], (8, 10))
"""
from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from workbench.methods.ops.fusion import fuse_runs
from workbench.models.visual_tokens import VisualTokens
from workbench.stream.encoders import FrameOut

DEFAULT_WINDOW = 16


@dataclass(frozen=True)
class WindowSchedule:
    """Window length and stride in frames (stride None = window)."""

    window: int = DEFAULT_WINDOW
    stride: int | None = None

    def __post_init__(self):
        if not (isinstance(self.window, int) and self.window >= 1):
            raise ValueError(f"window must be a whole number of frames ≥ 1, not {self.window!r}")
        if self.stride is not None and not (isinstance(self.stride, int) and 1 <= self.stride <= self.window):
            raise ValueError(f"stride must be a whole number in 1–{self.window} (the window), not {self.stride!r}")

    @property
    def step(self) -> int:
        return self.stride or self.window

    def ends_window(self, n_seen: int) -> bool:
        """True when the `n_seen`-th frame (1-based) completes a window."""
        return n_seen >= self.window and (n_seen - self.window) % self.step == 0

    def tail(self, n_seen: int) -> tuple[int, int] | None:
        """(first, end) frames of the final window once the stream ended after `n_seen` frames, or None when
        the last window already ended at the last frame."""
        if n_seen == 0:
            return None
        if n_seen < self.window:
            return 0, n_seen
        last_end = self.window + (n_seen - self.window) // self.step * self.step
        if last_end == n_seen:
            return None
        if self.step == self.window:
            return last_end, n_seen  # back to back: the frames after the last window
        return n_seen - self.window, n_seen  # overlapping: the last `window` frames


@dataclass
class Window:
    """One captioned window of a stream."""

    index: int
    first_frame: int
    end_frame: int  # exclusive
    start_s: float
    end_s: float
    caption: str
    tokens_to_decoder: int
    tokens_per_frame: float  # visual tokens entering the decoder per frame of the window
    tokens_computed: int  # patch tokens that went through the encoder in the window's frames
    encode_ms: float  # method work of the window's frames (gate, router, encoder)
    decode_ms: float  # the decoder's caption (and gesture head)
    read_ms: float = 0.0  # reading the window's frames (demux, decode, fit to the grid)
    gesture: str | None = None
    gesture_prob: float | None = None
    decoder_caption: str | None = None  # the decoder's own words when the caption was replaced (see captions.py)
    branches: dict = field(default_factory=dict)  # ANC: frames per branch
    keyframes: int = 0  # frames encoded densely
    partial: bool = False  # shorter than the window: the stream's end, or damage

    @property
    def n_frames(self) -> int:
        return self.end_frame - self.first_frame

    def record(self) -> dict:
        """JSON-ready dict (times rounded to ms)."""
        d = asdict(self)
        for k in ("start_s", "end_s"):
            d[k] = round(d[k], 3)
        for k in ("tokens_per_frame", "encode_ms", "decode_ms", "read_ms"):
            d[k] = round(d[k], 2)
        if d["gesture_prob"] is not None:
            d["gesture_prob"] = round(d["gesture_prob"], 4)
        return d


class FrameBuffer:
    """The last `size` frames' (start_s, end_s, FrameOut, read_ms): what a window needs, nothing older (flat
    memory)."""

    def __init__(self, size: int):
        self.items: deque = deque(maxlen=size)

    def push(self, start_s: float, end_s: float, out: FrameOut, read_ms: float = 0.0) -> None:
        self.items.append((start_s, end_s, out, read_ms))

    def last(self, n: int) -> list:
        return list(self.items)[-n:]


def window_tokens(outs: list[FrameOut], fuse: bool) -> tuple[VisualTokens, np.ndarray]:
    """Decoder tokens of a window from its frames' carried outputs: (VisualTokens, tokens to the decoder per
    frame (W,)). See the module docstring.

        >>> n = 4
        >>> o = [FrameOut(torch.full((n, 2), float(i)), torch.tensor([i == 0] * n), i == 0) for i in range(3)]
        >>> vt, per = window_tokens(o[1:], fuse=True)   # a window starting after the stream's first frame
        >>> vt.num_tokens, per.tolist(), vt.size[0].tolist()
        (4, [4, 0], [2.0, 2.0, 2.0, 2.0])
    """
    enc = torch.stack([o.tokens for o in outs])[None]  # (1, W, N, D)
    w, n = enc.shape[1], enc.shape[2]
    if not fuse:
        return VisualTokens.dense(enc), np.full(w, n)
    runs = torch.stack([o.computed for o in outs])  # (W, N)
    runs[0] = True  # every patch starts a run at the window's first frame (carried runs: their cached token)
    return fuse_runs(enc, runs[None]), runs.sum(1).cpu().numpy()
