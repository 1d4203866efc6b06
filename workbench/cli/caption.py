"""`workbench caption SOURCE`: caption a video, an event file or a generated clip (dense or compressed).

Two modes: a short look (default: `--frames` frames sampled from the whole input, one caption) and a stream
(`--fps R` or `--fps native`, also implied by `--window`, `--stride`, `--srt`, `--vtt`: the input read frame by
frame at that rate, any length, one timestamped caption per window; see `cli/stream.py`).
"""
from __future__ import annotations

import json
import sys

from workbench.cli.common import add_method_args, add_model, method_from_args
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
    method = method_from_args(args, model)  # bad method knobs fail here, before any input is read
    hf = hasattr(model, "input_frames")  # a Hugging Face VLM (models/hf): short looks only
    if is_stream(args) and hf:
        from workbench.errors import InputError
        raise InputError("--fps/--window", "stream mode runs on TinyVLM; caption a short look with a Hugging Face "
                                           "model (--frames N)")
    if is_stream(args):
        from workbench.cli.stream import run_stream
        return run_stream(args, model, method, load_s=time.perf_counter() - t0)
    from workbench.data.load import load_clip
    from workbench.pipeline import describe
    from workbench.stream.captions import gesture_caption
    from workbench.trace import write_trace
    model_limit(args.model, args.frames, getattr(model.cfg, "max_video_frames", model.cfg.max_frames), "--frames")
    clip = load_clip(args.source, n_frames=args.frames, start_s=args.start, duration_s=args.duration, fit=args.fit)
    d = describe(model, clip, method, prompt=args.prompt, trace=bool(args.trace))
    if args.trace:
        write_trace(d.trace, args.trace, d.run)
    caption, said = gesture_caption(d.caption, d.gesture, model.cfg.gesture_classes)
    out = {"source": str(args.source), "modality": clip.modality, "frames": clip.num_frames,
           "caption": caption, "gesture": d.gesture, "tokens_per_frame": d.tokens_per_frame,
           "tokens_computed_per_frame": round(float(d.stats.tokens_computed.sum()) / max(clip.num_frames, 1), 2),
           "encode_ms": round(d.timings_ms["encode_ms"], 1), "decode_ms": round(d.timings_ms["decode_ms"], 1),
           "method": method.name, "prompt": d.run["prompt"]}
    if d.decoder is not None and method.name != "dense":
        out |= {"decoder_keep": round(d.decoder_keep, 4),
                "last_layer_tokens_per_frame": round(d.last_layer_tokens_per_frame, 2),
                "visual_tokens_per_layer": d.decoder.visual_in[0].tolist(),
                "prefill_ms": round(d.timings_ms["prefill_ms"], 1)}
    if said is not None:
        out["decoder_caption"] = said
    if clip.meta.get("format"):
        out["detected_format"] = clip.meta["format"]
    if hf:  # the model's name, family and patch grid; its notes replace TinyVLM's
        out |= model.details()
        out["notes"] = list(clip.meta.get("notes", [])) + model.notes()
    else:
        out["notes"] = input_notes(clip.meta, generated=is_seed(args.source)) + prompt_notes(model, args.prompt)
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


def prompt_notes(model, prompt: str | None) -> list[str]:
    """A question with words the model never saw is still answered (they become <unk>): say so."""
    from workbench.models.tokenizer import normalise_text
    unknown = [w for w in normalise_text(prompt or "").split() if w not in model.tokenizer.index]
    return [f"the model does not know the words {', '.join(map(repr, unknown))} (read as <unk>); it was trained "
            "on ShapesWorld's questions (colour, shape, count, motion)"] if unknown else []


def input_notes(meta: dict, generated: bool) -> list[str]:
    """What a user should know about the input: how it was fitted, and that the model knows only the
    procedural world when the input is real footage."""
    from workbench.stream.captions import REAL_FOOTAGE_NOTE
    return list(meta.get("notes", [])) + ([] if generated else [REAL_FOOTAGE_NOTE])


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
    c.add_argument("--prompt", default=None,
                   help="a question or instruction instead of the caption prompt (e.g. 'what color is the star'); "
                        "decoder-side methods (sparsevlm, fastv) keep the visual tokens it needs")
    add_method_args(c)
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
