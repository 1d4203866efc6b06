"""Arguments and helpers shared by the subcommands."""
from __future__ import annotations

import argparse

DEFAULT_MODEL = "tinyvlm-shapes"


def add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"model preset name, path to a .safetensors checkpoint, or hf:NAME_OR_PATH (a Hugging Face "
                        f"LLaVA-1.5 / Qwen2-VL / LLaVA-OneVision folder or local-cache name) (default: {DEFAULT_MODEL})")


def number_list(kind=float):
    """argparse type: '0.5,1.5,2.5' → (0.5, 1.5, 2.5)."""
    def parse(text: str):
        try:
            vals = tuple(kind(x) for x in text.replace(" ", "").split(",") if x)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, not {text!r}") from None
        if not vals:
            raise argparse.ArgumentTypeError("expected at least one number")
        return vals
    return parse


def seed_range(text: str) -> range:
    """argparse type: 'A:B' → range(A, B) of ShapesWorld seeds (B excluded), or 'N' → range(0, N); whether the
    range makes sense (0 ≤ A < B) is checked with the other knobs (cli/validate.RULES["seeds"])."""
    try:
        a, b = (int(x) for x in text.split(":")) if ":" in text else (0, int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds as A:B (e.g. 0:60), not {text!r}") from None
    return range(a, b)


def add_method_args(p: argparse.ArgumentParser, default: str = "dense") -> None:
    """--method and every method's knobs (encoder side: STTF τ; decoder side: SparseVLM / FastV / random)."""
    from workbench.methods.build import method_names
    g = p.add_argument_group("method", "encoder side (dense, sttf, anc, sttf+anc), decoder side (sparsevlm, fastv, "
                                       "random-prune), or both joined by '+' (e.g. sttf+sparsevlm)")
    g.add_argument("--method", choices=method_names(), default=default, metavar="METHOD",
                   help=f"compression method (default {default}); one of {', '.join(method_names())}")
    g.add_argument("--tau", type=float, default=0.05, help="STTF change threshold (default 0.05)")
    g.add_argument("--chunk", type=int, default=None,
                   help="STTF: frames encoded per call, layer-major against the carried state (default: a stream's "
                        "stride — the frames a caption waits for anyway; 1 for a short look: each frame alone)")
    g.add_argument("--keep", type=float, default=None,
                   help="decoder side: fraction of visual tokens kept, the SparseVLM paper's count (mean over "
                        "decoder sublayers of the visual tokens entering them); default: the method's (0.33)")
    g.add_argument("--rule", choices=("fixed", "rank"), default="fixed",
                   help="SparseVLM: fixed per-depth budgets or the adaptive rank(P) rule (default fixed)")
    g.add_argument("--points", type=number_list(float), default=None, metavar="K,K,…",
                   help="pruning depths in layers (0.5 = after layer 0's attention; default 0.5,1.5,2.5 on 4 layers)")
    g.add_argument("--budgets", type=number_list(float), default=None, metavar="F,F,…",
                   help="fractions of the visual tokens present after each depth (replace --keep)")
    g.add_argument("--counts", type=number_list(int), default=None, metavar="N,N,…",
                   help="visual tokens present after each depth (replace --keep)")
    g.add_argument("--no-recycle", dest="recycle", action="store_false", help="SparseVLM without token recycling")
    g.add_argument("--K", dest="fastv_k", type=float, default=0.5, help="FastV pruning depth (default 0.5)")
    g.add_argument("--R", dest="fastv_r", type=float, default=0.5,
                   help="FastV fraction pruned at K (default 0.5; --keep replaces it)")
    g.add_argument("--prune-seed", dest="prune_seed", type=int, default=0, help="random-prune's seed (default 0)")


def method_from_args(args, model):
    """The method object the parsed `add_method_args` knobs describe (InputError on impossible knobs)."""
    from workbench.methods.build import MethodKnobs, build_method
    knobs = MethodKnobs(tau=args.tau, keep=args.keep, rule=args.rule, points=args.points, budgets=args.budgets,
                        counts=args.counts, recycle=args.recycle, K=args.fastv_k, R=args.fastv_r,
                        seed=args.prune_seed, chunk=getattr(args, "chunk", None) or 1)
    return build_method(args.method, model, knobs)
