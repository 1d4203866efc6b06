"""`workbench caption SOURCE`: caption a video, an event file or a generated clip (dense or compressed).

Two modes: a short look (default: `--frames` frames sampled from the whole input, one caption) and a stream
(`--fps R` or `--fps native`, also implied by `--window`, `--stride`, `--srt`, `--vtt`: the input read frame by
frame at that rate, any length, one timestamped caption per window; see `cli/stream.py`).
"""
from __future__ import annotations

import json
import sys

from workbench.cli.common import add_model
from workbench.cli.validate import fps_value, model_limit


def is_stream(args) -> bool:
    return any(getattr(args, k) is not None for k in ("fps", "window", "stride", "srt", "vtt"))


def is_seed(source) -> bool:
    from workbench.data.load import _SEED
    return bool(_SEED.match(str(source).strip()))


def cmd_caption(args) -> int:
    from workbench.models.registry import create_model
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    import time
    t0 = time.perf_counter()
    model = create_model(args.model)
    method = _method(model, args.method, args.tau)
    if is_stream(args):
        from workbench.cli.stream import run_stream
        return run_stream(args, model, method, load_s=time.perf_counter() - t0)
    from workbench.data.load import load_clip
    from workbench.pipeline import describe
    from workbench.stream.captions import gesture_caption
    from workbench.trace import write_trace
    model_limit(args.model, args.frames, model.cfg.max_frames, "--frames")
    clip = load_clip(args.source, n_frames=args.frames, start_s=args.start, duration_s=args.duration, fit=args.fit)
    d = describe(model, clip, method, trace=bool(args.trace))
    if args.trace:
        write_trace(d.trace, args.trace, d.run)
    caption, said = gesture_caption(d.caption, d.gesture, model.cfg.gesture_classes)
    out = {"source": str(args.source), "modality": clip.modality, "frames": clip.num_frames,
           "caption": caption, "gesture": d.gesture, "tokens_per_frame": d.tokens_per_frame,
           "encode_ms": round(d.timings_ms["encode_ms"], 1), "decode_ms": round(d.timings_ms["decode_ms"], 1)}
    if said is not None:
        out["decoder_caption"] = said
    if clip.meta.get("format"):
        out["detected_format"] = clip.meta["format"]
    out["notes"] = input_notes(clip.meta, generated=is_seed(args.source))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(caption)
    if d.gesture:
        print(f"gesture: {d.gesture} (p={d.gesture_probs[d.gesture]:.2f})")
    detail = f"[{clip.modality}, {clip.num_frames} frames"
    detail += f", format {out['detected_format']}" if "detected_format" in out else ""
    print(detail + f", {d.tokens_per_frame:.0f} tokens/frame, encode {out['encode_ms']} ms, "
          f"decode {out['decode_ms']} ms]", file=sys.stderr)
    for note in out["notes"] + ([f"the decoder wrote {said!r}, which contradicts the gesture head; the caption "
                                 "above is the head's class"] if said else []):
        print(f"note: {note}", file=sys.stderr)
    return 0


def input_notes(meta: dict, generated: bool) -> list[str]:
    """What a user should know about the input: how it was fitted, and that the model knows only the
    procedural world when the input is real footage."""
    from workbench.stream.captions import REAL_FOOTAGE_NOTE
    return list(meta.get("notes", [])) + ([] if generated else [REAL_FOOTAGE_NOTE])


def _method(model, name: str, tau: float):
    """dense | sttf | anc | sttf+anc (ANC needs the shipped router: CheckpointError otherwise)."""
    from workbench.pipeline import Dense
    if name == "dense":
        return Dense()
    from workbench.methods.sttf import STTF, STTFConfig
    if name == "sttf":
        return STTF(STTFConfig(tau=tau))
    from workbench.methods.anc import ANC, ANCConfig, shipped_path
    from workbench.methods.anc_modules import load_anc
    anc = ANC(load_anc(shipped_path(model)), ANCConfig())
    if name == "anc":
        return anc
    from workbench.methods.combined import STTFANC
    return STTFANC(anc, STTFConfig(tau=tau))


def add_parser(sub) -> None:
    c = sub.add_parser("caption", help="caption a video, an event file or a generated clip (or stream it: --fps)")
    c.add_argument("source", help="video file, event file, or seed ('shapes:7', 'gesture:3', '7')")
    add_model(c)
    c.add_argument("--frames", type=int, default=16,
                   help="short look: frames sampled from the whole input / event bins (default 16)")
    c.add_argument("--start", type=float, default=0.0, help="window start in seconds (default 0)")
    c.add_argument("--duration", type=float, default=None,
                   help="seconds to read (short look at a video: whole file; events: 2 s, as in training; "
                        "stream: to the end)")
    c.add_argument("--fit", choices=("crop", "pad", "stretch"), default="crop",
                   help="how a non-square video or sensor meets the square model input: crop (centre square, "
                        "default), pad (letterbox) or stretch (squash)")
    c.add_argument("--trace", metavar="PARQUET", help="short look: write the run's trace table to this Parquet file")
    c.add_argument("--json", action="store_true", help="print a JSON record instead of text")
    c.add_argument("--method", choices=("dense", "sttf", "anc", "sttf+anc"), default="dense",
                   help="compression method (default dense; anc needs the shipped router weights)")
    c.add_argument("--tau", type=float, default=0.05, help="STTF change threshold (default 0.05)")
    s = c.add_argument_group("streams (any length; one timestamped caption per window)")
    s.add_argument("--fps", type=fps_value, default=None,
                   help="stream at R frames per second (video: resampled; events: bins per second) or 'native' "
                        "(the video's own rate; events: 8 per second, as in training)")
    s.add_argument("--window", type=int, default=None,
                   help="frames per caption window (default 16, the training clip length; ≤ the model's max_frames)")
    s.add_argument("--stride", type=int, default=None,
                   help="frames between window starts (default = --window: back to back; smaller overlaps)")
    s.add_argument("--srt", metavar="FILE", help="write the window captions as SubRip subtitles")
    s.add_argument("--vtt", metavar="FILE", help="write the window captions as WebVTT subtitles")
    s.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's; 1 is fastest for streams on a busy 2-core machine)")
    c.set_defaults(func=cmd_caption)
