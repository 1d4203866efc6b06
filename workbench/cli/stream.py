"""The streaming side of `workbench caption`: any length, timestamped window captions, JSON, SRT / WebVTT.

    workbench caption clip.mp4 --fps native                 # every frame, one caption per 16 frames
    workbench caption clip.mp4 --fps 25 --method sttf --srt clip.srt
    workbench caption recording.aedat4 --fps 8 --json       # events: 8 bins per second, a gesture per window

Text mode prints each window as soon as it is captioned (`[start → end] caption`), then one summary line on
stderr. `--json` prints one record at the end: `windows` (start_s, end_s, caption, tokens_per_frame, …), `rtf`
(real-time factor = wall time from opening the input to the last caption ÷ media duration: decoding, encoding
and captioning; model loading excluded and reported apart as `load_s`), the stream's description and notes.
A stream that breaks mid-way keeps its windows (printed, in the JSON and in the subtitle files) and then ends
with the reader's message and exit status 2.
"""
from __future__ import annotations

import json
import sys
import time

from workbench.errors import InputError
from workbench.stream.subtitles import timestamp


def _clock(seconds: float) -> str:
    """MM:SS.mmm (HH:MM:SS.mmm past an hour)."""
    t = timestamp(seconds, ".")
    return t[3:] if t.startswith("00:") else t


def stream_config(args):
    from workbench.stream import StreamConfig
    from workbench.stream.window import DEFAULT_WINDOW
    return StreamConfig(window=args.window or DEFAULT_WINDOW, stride=args.stride)


def chunked(method, chunk: int):
    """STTF encoding `chunk` frames per call (other methods unchanged): a stream's windows are captioned when
    their last frame is in, so encoding a stride of frames at once adds no caption latency."""
    from dataclasses import replace
    from workbench.methods.sttf import STTF
    return STTF(replace(method.cfg, chunk=chunk)) if type(method) is STTF and method.cfg.chunk != chunk else method


def run_stream(args, model, method, load_s: float = 0.0) -> int:
    """Stream `args.source` through `method` and report (see the module docstring). Returns the exit status."""
    from workbench.cli.caption import input_notes, is_seed
    from workbench.stream import caption_stream, open_stream
    from workbench.stream.runner import check_window
    from workbench.stream.subtitles import write_subtitles
    cfg = stream_config(args)
    check_window(model, cfg)
    method = chunked(method, cfg.schedule().step if getattr(args, "chunk", None) is None else args.chunk)
    t0 = time.perf_counter()
    src = open_stream(args.source, fps=args.fps, fit=args.fit, start_s=args.start, duration_s=args.duration)
    info = src.info
    windows, error = [], None
    try:
        for w in caption_stream(model, src, method, cfg):
            windows.append(w)
            if not args.json:
                gesture = f" [gesture: {w.gesture} p={w.gesture_prob:.2f}]" if w.gesture else ""
                print(f"[{_clock(w.start_s)} → {_clock(w.end_s)}] {w.caption}{gesture}", flush=True)
    except InputError as e:
        error = e
    wall = time.perf_counter() - t0
    media = (windows[-1].end_s - windows[0].start_s) if windows else 0.0
    rtf = wall / media if media > 0 else None
    frames = windows[-1].end_frame if windows else 0
    computed = sum(w.tokens_computed for w in windows)
    tok = sum(w.tokens_to_decoder for w in windows)
    notes = input_notes(info.meta, generated=is_seed(args.source))
    for path, kind in ((args.srt, "srt"), (args.vtt, "vtt")):
        if path and windows:
            write_subtitles(path, windows, kind)
    if args.json:
        rec = {"source": str(args.source), "modality": info.modality, "fps": round(info.fps, 4),
               "native_fps": info.meta.get("fps"), "frames": frames, "window": cfg.window,
               "stride": cfg.schedule().step, "method": method.name, "method_config": method.config(),
               "windows": [w.record() for w in windows], "rtf": None if rtf is None else round(rtf, 4),
               "wall_s": round(wall, 3), "media_s": round(media, 3), "load_s": round(load_s, 3),
               "tokens_per_frame": round(tok / frames, 3) if frames else None,
               "tokens_computed_per_frame": round(computed / frames, 3) if frames else None,
               "notes": notes, "error": None if error is None else str(error)}
        if info.meta.get("format"):
            rec["detected_format"] = info.meta["format"]
        print(json.dumps(rec, indent=2))
    else:
        rate = "native" if args.fps in (None, "native") else f"{info.fps:g}"
        summary = (f"[{info.modality} stream, {frames} frames at {info.fps:.3g} fps ({rate}), {len(windows)} windows "
                   f"of ≤ {cfg.window} frames, {method.name}: {tok / max(frames, 1):.1f} tokens/frame to the decoder, "
                   f"{computed / max(frames, 1):.1f} computed; {wall:.2f} s for {media:.2f} s of media")
        summary += f", real-time factor {rtf:.3f}]" if rtf is not None else "]"
        print(summary, file=sys.stderr)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    if error is not None:
        kept = f" ({len(windows)} windows before it were kept)" if windows else ""
        print(f"error: {error}{kept}", file=sys.stderr)
        return 2
    return 0
