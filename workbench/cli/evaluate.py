"""`workbench eval`: caption metrics on the ShapesWorld test split, gesture accuracy (synthetic or DVS128), and
`eval qa`: exact-match question answering under any method beside dense.

    workbench eval --limit 100
    workbench eval qa --method sparsevlm --keep 0.22 --seeds 0:60 --json
    workbench eval qa --method sttf+sparsevlm --tau 0.05 --keep 0.33 --seeds 0:20
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from workbench.cli.common import add_method_args, add_model, method_from_args, seed_range


def cmd_eval(args) -> int:
    from workbench.models.registry import create_model
    model = create_model(args.model)
    safe = model.cfg.name.replace("hf:", "hf-").replace("/", "_").replace(".", "")  # hf:./x → hf-_x
    out = Path(args.out or f"data/generated/eval/{safe}")
    if hasattr(model, "input_frames") and args.which in ("all", "gesture"):  # a Hugging Face VLM: no gesture head
        if args.which == "gesture":
            from workbench.errors import InputError
            raise InputError("eval gesture", f"{model.cfg.name} has no gesture head (TinyVLM's); use eval captions "
                                             "or eval qa")
        args.which = "captions"
    if args.which == "qa":
        return _qa(args, model, out)
    from workbench.eval.evaluate import run_eval
    if args.which == "gesture" and args.root:
        from workbench.eval.dvs_gesture import run_dvs_gesture_eval
        res = run_dvs_gesture_eval(model, args.root, out, limit=args.limit)
    else:
        res = run_eval(model, out, args.which, args.limit, method=method_from_args(args, model))
    summary = {k: v for k, v in res.get("captions", {}).items() if k in ("bleu4", "meteor", "rouge_l", "cider", "spice_status")}
    if summary:
        print("captions:", json.dumps(summary))
    if "gesture" in res:
        print(f"gesture accuracy: {res['gesture']['accuracy']:.4f} on {res['gesture']['n']} clips")
    print(f"results written to {out}/results.json")
    return 0


def _qa(args, model, out: Path) -> int:
    import torch

    from workbench.eval.qa import qa_eval
    method = method_from_args(args, model)  # bad knobs fail here, before any clip is made
    seeds = args.seeds if args.seeds is not None else range(0, args.limit or 60)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    r = qa_eval(model, seeds, method, progress=not args.json)
    rec = {"method": method.name, "model": model.cfg.name, "seeds": f"{seeds.start}:{seeds.stop}", **r.to_dict(),
           "config": method.config() if hasattr(method, "config") else {}}
    out.mkdir(parents=True, exist_ok=True)
    name = f"qa-{method.name}-{seeds.start}-{seeds.stop}".replace("+", "_")
    r.per_question.write_parquet(out / f"{name}.parquet")
    (out / f"{name}.json").write_text(json.dumps(rec, indent=2, default=str))
    if args.json:
        print(json.dumps(rec, indent=2, default=str))
        return 0
    print(f"{method.name}: accuracy {r.accuracy:.3f} on {r.n} questions (dense {r.dense_accuracy:.3f}); "
          f"prefill FLOPs × {r.prefill_flops_ratio:.3f} of dense; kept {r.decoder_keep:.3f} of the visual tokens "
          f"(paper's count), {r.last_layer_tokens_per_frame:.1f} per frame at the last layer")
    for t, a in r.by_type.items():
        print(f"  {t:10s} {a:.3f}   (dense {r.dense_by_type.get(t, float('nan')):.3f})")
    print(f"per-question results written to {out}/{name}.parquet", file=sys.stderr)
    return 0


def add_parser(sub) -> None:
    e = sub.add_parser("eval", help="caption metrics (BLEU-4, METEOR, ROUGE-L, CIDEr), gesture accuracy, or "
                                    "question answering (eval qa) under a method")
    e.add_argument("which", nargs="?", choices=("all", "captions", "gesture", "qa"), default="all")
    add_model(e)
    e.add_argument("--limit", type=int, default=None, help="first N clips of each test split (default: all; qa: 60)")
    e.add_argument("--seeds", type=seed_range, default=None, metavar="A:B",
                   help="qa: the ShapesWorld seeds A..B−1 (test split: 0:500; default 0:60)")
    e.add_argument("--out", help="output folder (default data/generated/eval/<model>)")
    e.add_argument("--root", help="with 'gesture': a local copy of the real DVS128 Gesture dataset")
    e.add_argument("--json", action="store_true", help="qa: print the result record as JSON")
    add_method_args(e)
    e.set_defaults(func=cmd_eval)
