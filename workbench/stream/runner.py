"""Caption a stream window by window: frames in, timestamped captions out, state carried throughout.

    caption_stream(model, source, method, cfg) → an iterator of `Window`s, each yielded as soon as its last frame
    is encoded and its caption decoded (so a consumer can print, write subtitles or draw progress live).

Per frame: read (`stream.reader`), encode with the method's per-stream state (`stream.encoders`), remember
the frame's carried output in a buffer of one window (`stream.window`); when a window is complete its visual
tokens are built from that buffer and `model.generate` captions it (and the gesture head names a gesture on
event input, the caption made consistent with it: `stream.captions`). Memory holds one window of encoder
tokens plus the method's state, whatever the stream's length; `FrameLog` (optional) keeps a few numbers per
frame (and the recompute masks, packed, when asked) for timelines and benchmarks.

When the input breaks mid-stream the frames read before the damage still make their window (marked
`partial`), then the reader's `CorruptFileError` is raised: the consumer keeps every window it got.

    >>> from workbench.models.registry import create_model
    >>> from workbench.stream.reader import open_stream
    >>> model = create_model("tinyvlm-debug")
    >>> ws = list(caption_stream(model, open_stream("shapes:3"), None, StreamConfig(window=8)))
    >>> [(w.first_frame, w.end_frame, w.start_s, w.end_s) for w in ws]
    [(0, 8, 0.0, 1.0), (8, 16, 1.0, 2.0)]
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from workbench.errors import InputError
from workbench.methods.anc_modules import BRANCHES
from workbench.models.tinyvlm import TinyVLM
from workbench.pipeline import Dense
from workbench.stream.captions import gesture_caption
from workbench.stream.encoders import FrameOut, as_tensor, frame_encoder
from workbench.stream.reader import FrameSource
from workbench.stream.window import DEFAULT_WINDOW, FrameBuffer, Window, WindowSchedule, window_tokens


@dataclass(frozen=True)
class StreamConfig:
    """Windowing and decoding knobs of a stream run."""

    window: int = DEFAULT_WINDOW  # frames per caption (≤ the model's max_frames)
    stride: int | None = None  # frames between window starts (None = window: back to back)
    prompt: str | None = None  # None = the model's caption prompt
    max_new_tokens: int = 48

    def schedule(self) -> WindowSchedule:
        return WindowSchedule(self.window, self.stride)


@dataclass
class FrameLog:
    """A few numbers per frame of a stream run (for the dashboard's timeline and the benchmarks)."""

    keep_masks: bool = False
    start_s: list = field(default_factory=list)
    end_s: list = field(default_factory=list)
    computed: list = field(default_factory=list)  # patches through the encoder
    key: list = field(default_factory=list)
    branch: list = field(default_factory=list)
    flops: list = field(default_factory=list)
    encode_ms: list = field(default_factory=list)
    read_ms: list = field(default_factory=list)
    masks: list = field(default_factory=list)  # packed (N,) recompute masks (np.packbits), when keep_masks

    def add(self, start_s: float, end_s: float, out: FrameOut, read_ms: float) -> None:
        self.start_s.append(start_s)
        self.end_s.append(end_s)
        self.computed.append(int(out.computed.sum()))
        self.key.append(bool(out.key))
        self.branch.append(int(out.branch))
        self.flops.append(float(out.flops))
        self.encode_ms.append(float(out.ms))
        self.read_ms.append(read_ms)
        if self.keep_masks:
            self.masks.append(np.packbits(out.computed.cpu().numpy()))

    def __len__(self) -> int:
        return len(self.start_s)

    def mask(self, frame: int, n: int) -> np.ndarray:
        """The recompute mask (n,) bool of one frame (needs keep_masks)."""
        return np.unpackbits(self.masks[frame], count=n).astype(bool)


def check_window(model: TinyVLM, cfg: StreamConfig) -> None:
    """InputError when the window does not fit the model (its time embedding has max_frames positions)."""
    limit = model.cfg.max_frames
    if cfg.window > limit:
        raise InputError("--window", f"{cfg.window} frames exceed the model's max_frames={limit}; use --window ≤ {limit}")
    cfg.schedule()  # stride within 1..window (ValueError → caught by callers' validation first)


@torch.no_grad()
def caption_stream(model: TinyVLM, source: FrameSource, method=None, cfg: StreamConfig = StreamConfig(),
                   log: FrameLog | None = None, on_frame: Callable[[int], None] | None = None) -> Iterator[Window]:
    """Windows of `source` captioned under `method` (default dense), with the method's state carried across
    the whole stream (see the module docstring). `on_frame(n)` is called after each frame (progress bars)."""
    check_window(model, cfg)
    model.eval()
    modality = source.info.modality
    method = method or Dense()
    enc = frame_encoder(method, model, modality)
    state = enc.start()
    sched = cfg.schedule()
    buf = FrameBuffer(cfg.window)
    frames = iter(source)
    n_seen, n_windows = 0, 0
    waiting: list[tuple[float, float, float]] = []  # (start_s, end_s, read_ms) of frames read, not yet encoded

    def take(outs) -> None:  # encoded frames, in order, into the window buffer (and the log)
        for out in outs:
            start_s, end_s, read_ms = waiting.pop(0)
            buf.push(start_s, end_s, out, read_ms)
            if log is not None:
                log.add(start_s, end_s, out, read_ms)

    while True:
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                f = next(frames, None)
        except InputError:
            first = sched.tail(n_seen)
            if first is not None and n_seen:
                with torch.inference_mode():
                    take(enc.flush(state))
                yield _caption(model, buf, first, n_windows, enc.fuse, cfg, modality, partial=True)
            raise
        read_ms = (time.perf_counter() - t0) * 1e3
        if f is None:
            break
        waiting.append((f.start_s, f.end_s, read_ms))
        with torch.inference_mode():
            take(enc.push(state, as_tensor(f.pixels), None if f.patch_rate is None else as_tensor(f.patch_rate)))
        n_seen += 1
        if on_frame is not None:
            on_frame(n_seen)
        if sched.ends_window(n_seen):
            with torch.inference_mode():
                take(enc.flush(state))  # a window is captioned from encoded frames only
            yield _caption(model, buf, (n_seen - cfg.window, n_seen), n_windows, enc.fuse, cfg, modality)
            n_windows += 1
    with torch.inference_mode():
        take(enc.flush(state))
    tail = sched.tail(n_seen)
    if tail is not None:
        yield _caption(model, buf, tail, n_windows, enc.fuse, cfg, modality, partial=True)
    elif n_seen == 0:
        raise InputError(source.info.source, "the stream holds no frame in the chosen window")


def _caption(model: TinyVLM, buf: FrameBuffer, span: tuple[int, int], index: int, fuse: bool, cfg: StreamConfig,
             modality: str, partial: bool = False) -> Window:
    first, end = span
    items = buf.last(end - first)  # the buffer ends at the stream's latest frame, which is `end - 1`
    outs = [o for _, _, o, _ in items]
    vt, per_frame = window_tokens(outs, fuse)
    t0 = time.perf_counter()
    gen = model.generate(vt, cfg.prompt, max_new_tokens=cfg.max_new_tokens)
    decode_ms = (time.perf_counter() - t0) * 1e3
    caption, gesture, prob, said = gen.texts[0], None, None, None
    if modality == "events" and gen.gesture_logits is not None:
        p = gen.gesture_logits[0].softmax(-1)
        k = int(p.argmax())
        gesture, prob = model.cfg.gesture_classes[k], float(p[k])
        caption, said = gesture_caption(caption, gesture, model.cfg.gesture_classes)
    branches: dict[str, int] = {}
    for o in outs:
        if o.branch >= 0:
            branches[BRANCHES[o.branch]] = branches.get(BRANCHES[o.branch], 0) + 1
    total = int(per_frame.sum())
    return Window(index, first, end, items[0][0], items[-1][1], caption, total, total / len(outs),
                  int(sum(int(o.computed.sum()) for o in outs)), float(sum(o.ms for o in outs)), decode_ms,
                  float(sum(r for *_, r in items)), gesture, prob, said, branches, int(sum(o.key for o in outs)),
                  partial or len(outs) < cfg.window)
