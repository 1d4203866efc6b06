"""`workbench train [--stage 1|2|3]`: reproduce the shipped checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

from workbench.cli.common import DEFAULT_MODEL


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
    last = next((rec[k]["last_eval"] for k in ("qa_fit", "decoder_fit") if (rec.get(k) or {}).get("last_eval")),
                rec)  # stage 1: the last phase's val metrics
    print(json.dumps({k: v for k, v in last.items() if "acc" in k or "loss" in k}, indent=2))
    print(f"checkpoint written to {out}")
    return 0


def add_parser(sub) -> None:
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
