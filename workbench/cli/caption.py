"""`workbench caption SOURCE`: caption a video, an event file or a generated clip (dense or compressed)."""
from __future__ import annotations

import json
import sys

from workbench.cli.common import add_model


def cmd_caption(args) -> int:
    from workbench.data.load import load_clip
    from workbench.models.registry import create_model
    from workbench.pipeline import describe
    from workbench.trace import write_trace
    clip = load_clip(args.source, n_frames=args.frames, start_s=args.start, duration_s=args.duration, fps=args.fps)
    model = create_model(args.model)
    d = describe(model, clip, _method(model, args.method, args.tau), trace=bool(args.trace))
    if args.trace:
        write_trace(d.trace, args.trace, d.run)
    out = {"source": str(args.source), "modality": clip.modality, "frames": clip.num_frames,
           "caption": d.caption, "gesture": d.gesture, "tokens_per_frame": d.tokens_per_frame,
           "encode_ms": round(d.timings_ms["encode_ms"], 1), "decode_ms": round(d.timings_ms["decode_ms"], 1)}
    if clip.meta.get("format"):
        out["detected_format"] = clip.meta["format"]
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(d.caption)
        if d.gesture:
            print(f"gesture: {d.gesture} (p={d.gesture_probs[d.gesture]:.2f})")
        detail = f"[{clip.modality}, {clip.num_frames} frames"
        detail += f", format {out['detected_format']}" if "detected_format" in out else ""
        print(detail + f", {d.tokens_per_frame:.0f} tokens/frame, encode {out['encode_ms']} ms, "
              f"decode {out['decode_ms']} ms]", file=sys.stderr)
    return 0


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
    c = sub.add_parser("caption", help="caption a video, an event file or a generated clip")
    c.add_argument("source", help="video file, event file, or seed ('shapes:7', 'gesture:3', '7')")
    add_model(c)
    c.add_argument("--frames", type=int, default=16, help="frames to sample / event bins (default 16)")
    c.add_argument("--start", type=float, default=0.0, help="window start in seconds (default 0)")
    c.add_argument("--duration", type=float, default=None,
                   help="window length in seconds (video: whole file; events: 2 s, as in training)")
    c.add_argument("--fps", type=float, default=None, help="sample video at this rate instead of a frame count")
    c.add_argument("--trace", metavar="PARQUET", help="write the run's trace table to this Parquet file")
    c.add_argument("--json", action="store_true", help="print a JSON record instead of text")
    c.add_argument("--method", choices=("dense", "sttf", "anc", "sttf+anc"), default="dense",
                   help="compression method (default dense; anc needs the shipped router weights)")
    c.add_argument("--tau", type=float, default=0.05, help="STTF change threshold (default 0.05)")
    c.set_defaults(func=cmd_caption)
