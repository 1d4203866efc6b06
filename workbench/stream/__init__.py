"""Streams: any-length video or event input, read frame by frame, captioned window by window.

    reader.py    open_stream(source, fps, fit) → frames one at a time (PyAV video, binned events, seeds)
    encoders.py  per-frame encoders of dense / STTF / ANC / STTF+ANC with per-stream state
    window.py    window schedule, carried-state window tokens, the `Window` record
    runner.py    caption_stream(model, source, method, cfg) → Windows as they complete; FrameLog
    captions.py  gesture captions consistent with the gesture head; the real-footage note
    subtitles.py windows → SRT / WebVTT
    trace.py     a stream run in the one trace schema (frame-level rows; per-patch rows on demand)
    synthetic.py long ShapesWorld streams written as video files (benchmarks, the dashboard's sample)

    >>> from workbench.models.registry import create_model
    >>> ws = list(caption_stream(create_model("tinyvlm-debug"), open_stream("shapes:1")))
    >>> len(ws), ws[0].n_frames
    (1, 16)
"""
from workbench.stream.reader import FrameSource, StreamFrame, StreamInfo, open_stream
from workbench.stream.runner import FrameLog, StreamConfig, caption_stream
from workbench.stream.window import Window, WindowSchedule

__all__ = ["open_stream", "FrameSource", "StreamFrame", "StreamInfo", "caption_stream", "StreamConfig", "FrameLog",
           "Window", "WindowSchedule"]
