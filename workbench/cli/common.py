"""Arguments and helpers shared by the subcommands."""
from __future__ import annotations

import argparse

DEFAULT_MODEL = "tinyvlm-shapes"


def add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"model preset name or path to a .safetensors checkpoint (default: {DEFAULT_MODEL})")
