"""`workbench eval`: caption metrics on the ShapesWorld test split, gesture accuracy (synthetic or DVS128)."""
from __future__ import annotations

import json
from pathlib import Path

from workbench.cli.common import add_model


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


def add_parser(sub) -> None:
    e = sub.add_parser("eval", help="caption metrics (BLEU-4, METEOR, ROUGE-L, CIDEr) + gesture accuracy")
    e.add_argument("which", nargs="?", choices=("all", "captions", "gesture"), default="all")
    add_model(e)
    e.add_argument("--limit", type=int, default=None, help="first N clips of each test split (default: all)")
    e.add_argument("--out", help="output folder (default data/generated/eval/<model>)")
    e.add_argument("--root", help="with 'gesture': a local copy of the real DVS128 Gesture dataset")
    e.set_defaults(func=cmd_eval)
