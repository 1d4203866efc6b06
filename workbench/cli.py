"""The `workbench` command: caption, eval, train, app, models.

    workbench caption clip.mp4                 # a video (any container ffmpeg reads)
    workbench caption recording.aedat4         # an event file (format sniffed from content)
    workbench caption shapes:7                 # a ShapesWorld seed (or gesture:3)
    workbench eval --limit 100                 # BLEU/METEOR/ROUGE-L/CIDEr + gesture accuracy → JSON + Parquet
    workbench train                            # reproduce the shipped weights (stage 1)
    workbench app                              # the Gradio dashboard

Bad inputs print one clear line and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import workbench  # noqa: F401  (offline environment first)
from workbench.errors import CheckpointError, InputError

DEFAULT_MODEL = "tinyvlm-shapes"


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"model preset name or path to a .safetensors checkpoint (default: {DEFAULT_MODEL})")


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


def cmd_eval(args) -> int:
    from workbench.eval.evaluate import run_eval
    from workbench.models.registry import create_model
    model = create_model(args.model)
    out = Path(args.out or f"data/generated/eval/{model.cfg.name}")
    if args.which == "gesture" and args.root:
        from workbench.eval.dvs_gesture import run_dvs_gesture_eval
        res = run_dvs_gesture_eval(model, args.root, out, limit=args.limit)
    else:
        res = run_eval(model, out, args.which, args.limit)
    summary = {k: v for k, v in res.get("captions", {}).items() if k in ("bleu4", "meteor", "rouge_l", "cider", "spice_status")}
    if summary:
        print("captions:", json.dumps(summary))
    if "gesture" in res:
        print(f"gesture accuracy: {res['gesture']['accuracy']:.4f} on {res['gesture']['n']} clips")
    print(f"results written to {out}/results.json")
    return 0


def cmd_train(args) -> int:
    from dataclasses import fields, replace

    import torch

    from workbench.models.registry import model_path, weights_dir
    over = {k: v for k, v in {"steps": args.steps, "batch_size": args.batch_size, "threads": args.threads,
                              "eval_every": args.eval_every, "seed": args.seed, "device": args.device,
                              "workers": args.workers}.items() if v is not None}
    base = model_path(DEFAULT_MODEL)
    if args.stage == 1:
        from workbench.training.stage1 import Stage1Config, train_stage1
        out = Path(args.out) if args.out else base
        rec = train_stage1(replace(Stage1Config(), **over), out, resume=not args.fresh)
    elif args.stage == 2:
        from workbench.training.stage2 import Stage2Config, train_stage2
        cfg = Stage2Config()
        cfg = replace(cfg, **{k: v for k, v in over.items() if k in {f.name for f in fields(cfg)}})
        torch.set_num_threads(args.threads or 2)
        out = Path(args.out) if args.out else weights_dir() / "tinyvlm-shapes-sttf.safetensors"
        rec = train_stage2(cfg, base, out)
    else:
        from workbench.training.stage3 import main as stage3_main
        argv = ["--base", str(base)] + (["--out", args.out] if args.out else []) + \
               (["--steps", str(args.steps)] if args.steps else []) + (["--nostab"] if args.nostab else []) + \
               (["--device", args.device] if args.device else []) + (["--workers", str(args.workers)] if args.workers else [])
        return stage3_main(argv)
    last = (rec.get("decoder_fit") or {}).get("last_eval") or rec  # stage 1: the last phase's val metrics
    print(json.dumps({k: v for k, v in last.items() if "acc" in k or "loss" in k}, indent=2))
    print(f"checkpoint written to {out}")
    return 0


def cmd_app(args) -> int:
    from workbench.ui.layout import build_demo, launch
    launch(build_demo(model_name=args.model), args.host, args.port)
    return 0


def cmd_models(args) -> int:
    from workbench.models.registry import list_models
    for name, desc in list_models().items():
        print(f"{name:18s} {desc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{caption,eval,train,app,models}")

    c = sub.add_parser("caption", help="caption a video, an event file or a generated clip")
    c.add_argument("source", help="video file, event file, or seed ('shapes:7', 'gesture:3', '7')")
    _add_model(c)
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

    e = sub.add_parser("eval", help="caption metrics (BLEU-4, METEOR, ROUGE-L, CIDEr) + gesture accuracy")
    e.add_argument("which", nargs="?", choices=("all", "captions", "gesture"), default="all")
    _add_model(e)
    e.add_argument("--limit", type=int, default=None, help="first N clips of each test split (default: all)")
    e.add_argument("--out", help="output folder (default data/generated/eval/<model>)")
    e.add_argument("--root", help="with 'gesture': a local copy of the real DVS128 Gesture dataset")
    e.set_defaults(func=cmd_eval)

    t = sub.add_parser("train", help="reproduce the shipped weights (stage 1 pre-training, 2 STTF, 3 ANC)")
    t.add_argument("--stage", type=int, choices=(1, 2, 3), default=1,
                   help="1: compression-aware pre-training (tinyvlm-shapes: main loop, phase b gesture head, "
                        "phase c language side on the frozen encoder); 2: STTF fine-tune "
                        "(tinyvlm-shapes-sttf); 3: ANC router + branches (anc-tinyvlm-shapes)")
    t.add_argument("--nostab", action="store_true", help="stage 3: the unregularised comparison router (λ_stab = 0)")
    t.add_argument("--steps", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--threads", type=int)
    t.add_argument("--eval-every", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--device", help="cpu (default) or cuda: where the training steps run")
    t.add_argument("--workers", type=int, help="processes building batches ahead (default 0: in the training process)")
    t.add_argument("--out", help="checkpoint path (default: the shipped file of that stage in data/weights/)")
    t.add_argument("--fresh", action="store_true", help="stage 1: start over instead of resuming from --out")
    t.set_defaults(func=cmd_train)

    a = sub.add_parser("app", help="launch the Gradio dashboard (offline)")
    _add_model(a)
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=7860)
    a.set_defaults(func=cmd_app)

    m = sub.add_parser("models", help="list model presets")
    m.set_defaults(func=cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
