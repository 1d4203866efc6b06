"""`workbench sweep`: every method side by side at matched token budgets (issue 15).

    workbench sweep --methods sttf,tome,eventful,visionzip,random,pool,fastv,sparsevlm --budget 31 --seeds 0:40
    workbench sweep --methods tome,sparsevlm --budget 98,49,31,16 --seeds 0:20 --gesture-seeds 0:20 --json
    workbench sweep --spec grid.toml --seeds 0:10 --out data/generated/sweep-grid --ray

Each (method, knobs, budget, clip) cell → one row in DIR/cells/ (resumable: a rerun skips finished cells), then
DIR/results.parquet (+ CIDEr) and DIR/summary.{parquet,json}; `--json` prints one summary record per method and
budget (method, tokens_per_frame, flops_ratio, cider, latency_ratio, …). Cells run in a local process pool
(`--workers`, default 2), or as Ray tasks with `--ray` (on RAY_ADDRESS when set, else a local Ray for the run).
A spec file (TOML) gives knob grids per method: `[tome] schedule = ["constant", "decreasing"]`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from workbench.cli.common import add_model, number_list, seed_range
from workbench.cli.validate import RULES, Rule, existing_file, whole


def _names(text: str) -> tuple[str, ...]:
    names = tuple(x.strip().lower() for x in text.split(",") if x.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated method names")
    return names


def _known_methods(v) -> bool:
    from workbench.methods.budget import BUDGET_METHODS
    return isinstance(v, tuple) and len(v) > 0 and all(m in BUDGET_METHODS for m in v)


# this subcommand's knobs, checked up front like every other (cli/validate.check_args); "seeds", "frames",
# "model", "out" and "workers" already have their rules there
RULES.update({
    "methods": Rule(_known_methods, "name methods among dense, anc, sttf, eventful, tome, visionzip, random, pool, "
                                    "fastv, sparsevlm, random-prune"),
    "budget": Rule(lambda v: isinstance(v, tuple) and all(isinstance(x, float) and 0 < x <= 4096 for x in v),
                   "be token budgets per frame > 0"),
    "gesture_seeds": Rule(lambda v: isinstance(v, range) and v.start >= 0 and len(v) > 0,
                          "be seeds A:B with 0 ≤ A < B"),
    "repeats": whole(0, 100),
    "spec": existing_file("name an existing TOML file"),
})


def cmd_sweep(args) -> int:
    from workbench.sweep import SweepSpec, run_sweep, spec_from_file
    from workbench.sweep.executors import ray_module
    if args.ray:
        ray_module()  # say how to install Ray before any work
    extra = spec_from_file(args.spec) if args.spec else {"grids": {}}
    methods = args.methods or extra.get("methods")
    budgets = args.budget or extra.get("budgets")
    if not methods or not budgets:
        from workbench.errors import InputError
        raise InputError("workbench sweep", "give --methods and --budget (or a --spec file that lists them)")
    spec = SweepSpec(tuple(methods), tuple(float(b) for b in budgets), args.seeds,
                     args.gesture_seeds or range(0, 0), args.frames, args.model, extra["grids"], args.repeats,
                     args.traces)
    out = Path(args.out)

    def progress(i, n, cell):
        if not args.json:
            print(f"[{i}/{n}] {cell.method} budget={cell.budget} {cell.knobs} {cell.clip}", file=sys.stderr)

    r = run_sweep(spec, out, ray=args.ray, workers=args.workers, progress=progress)
    if args.json:
        print(json.dumps(r.records(), indent=2, default=str))
        return 0
    print(f"{r.ran} cells run, {r.skipped} already done, {r.seconds:.0f} s → {out}/results.parquet")
    cols = ("tokens_per_frame", "flops_ratio", "encoder_flops_ratio", "latency_ratio", "cider", "qa_accuracy",
            "gesture_accuracy")
    print(f"{'method':14s} {'budget':>6s} {'knobs':18s} " + " ".join(f"{c[:12]:>12s}" for c in cols))
    for rec in r.records():
        vals = " ".join("        —   " if rec[c] is None else f"{rec[c]:12.4g}" for c in cols)
        b = "—" if rec["budget"] is None else f"{rec['budget']:g}"
        print(f"{rec['method']:14s} {b:>6s} {rec['knobs'][:18]:18s} {vals}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="every method side by side at matched token budgets (local pool or Ray)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", type=_names, default=None, metavar="LIST",
                   help="comma-separated: dense, anc, sttf, eventful, tome, visionzip, random, pool, fastv, "
                        "sparsevlm, random-prune (dense is always run: it is the baseline)")
    p.add_argument("--budget", type=number_list(float), default=None, metavar="B[,B2…]",
                   help="visual tokens per frame reaching the decoder (decoder side: the paper's mean over layers)")
    p.add_argument("--seeds", type=seed_range, default=range(0, 20), metavar="A:B",
                   help="ShapesWorld test seeds A..B−1: captions + QA (default 0:20)")
    p.add_argument("--gesture-seeds", dest="gesture_seeds", type=seed_range, default=None, metavar="A:B",
                   help="synthetic gesture seeds A..B−1: gesture accuracy (default none)")
    p.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    add_model(p)
    p.add_argument("--out", default="data/generated/sweep", help="results folder (default data/generated/sweep)")
    p.add_argument("--workers", type=int, default=2, help="processes (local) or CPUs (a local Ray) (default 2)")
    p.add_argument("--repeats", type=int, default=3,
                   help="latency: method and dense alternated this many times per cell, median (0 = no timing)")
    p.add_argument("--spec", default=None, help="TOML file: methods, budgets and knob grids per method")
    p.add_argument("--traces", action="store_true", help="also write every cell's trace (DIR/traces/)")
    p.add_argument("--ray", action="store_true", help="run the cells as Ray tasks (RAY_ADDRESS, else a local Ray)")
    p.add_argument("--json", action="store_true", help="print one summary record per method and budget as JSON")
    p.set_defaults(func=cmd_sweep)
