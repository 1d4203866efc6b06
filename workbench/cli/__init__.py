"""The `workbench` command: one module per subcommand (`caption`, `eval`, `train`, `app`, `models`).

    workbench caption clip.mp4                 # a video (any container ffmpeg reads)
    workbench caption recording.aedat4         # an event file (format sniffed from content)
    workbench caption shapes:7                 # a ShapesWorld seed (or gesture:3)
    workbench eval --limit 100                 # BLEU/METEOR/ROUGE-L/CIDEr + gesture accuracy → JSON + Parquet
    workbench train                            # reproduce the shipped weights (stage 1)
    workbench app                              # the Gradio dashboard
    workbench sweep --methods tome,sparsevlm --budget 31 --seeds 0:40   # every method at matched budgets

Each subcommand module has `add_parser(subparsers)`, which registers its arguments and sets `func`. Bad inputs
print one clear line and exit with status 2 (a missing or broken checkpoint: status 3).
"""
from __future__ import annotations

import argparse
import sys

import workbench  # noqa: F401  (offline environment first)
from workbench.errors import CheckpointError, InputError

SUBCOMMANDS = ("caption", "eval", "train", "app", "models", "cloud", "adapt", "sweep")


def build_parser() -> argparse.ArgumentParser:
    from workbench.cli import app, caption, cloud, evaluate, sweep, train
    p = argparse.ArgumentParser(prog="workbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for module in (caption, evaluate, train, app, cloud, sweep):
        module.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from workbench.cli.validate import check_args
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)  # every knob of every subcommand, before any work: exit 2 with one line
    try:
        return args.func(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
