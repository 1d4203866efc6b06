"""Every knob of every subcommand checked up front: one clear line and exit status 2, never a traceback.

argparse already rejects what its `type=` / `choices=` cannot parse ("--frames abc"). What parses but makes no
sense ("--frames 0", "--tau -1", "--port 70000", "--limit 0") is checked here, right after parsing and before
any model is loaded or file is read, by one table of rules keyed by the argparse `dest` — so a subcommand
module only declares its arguments (`add_parser`) and every subcommand gets the same checks. A knob that can
only be checked against the model (frames ≤ the model's `max_frames`) is checked by the subcommand once the
model is loaded, with an `InputError` (also exit 2).

    >>> import argparse
    >>> check_value("frames", 0)
    'must be a whole number ≥ 1, not 0'
    >>> check_value("tau", 0.05) is None, check_value("port", 70000)
    (True, 'must be a port number in 1–65535, not 70000')

`server_address(host, port)` resolves where the app listens: flags first, then gradio's own environment
variables `GRADIO_SERVER_NAME` / `GRADIO_SERVER_PORT` (how gradio apps are run in containers and on shared
hosts), then 127.0.0.1:7860.

    >>> server_address(None, None, env={"GRADIO_SERVER_PORT": "8080"})
    ('127.0.0.1', 8080)
    >>> server_address(None, 9000, env={"GRADIO_SERVER_PORT": "8080"})
    ('127.0.0.1', 9000)
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import InputError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860
MAX_WINDOW = 4096  # frames; the model's own max_frames is checked once it is loaded


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class Rule:
    """A knob's check: `ok(value)` is True for good values; `says` completes "--knob must …"."""

    ok: Callable[[object], bool]
    says: str


def whole(lo: int, hi: int | None = None) -> Rule:
    if hi is None:
        return Rule(lambda v: _int(v) and v >= lo, f"be a whole number ≥ {lo}")
    return Rule(lambda v: _int(v) and lo <= v <= hi, f"be a whole number in {lo}–{hi}")


def positive() -> Rule:
    return Rule(lambda v: _num(v) and v > 0, "be a number > 0")


def nonnegative() -> Rule:
    return Rule(lambda v: _num(v) and v >= 0, "be a number ≥ 0")


def existing_file(says: str) -> Rule:
    """A path that must name an existing file ("name an existing TOML file")."""
    return Rule(lambda v: isinstance(v, str) and Path(v).is_file(), says)


def _not_a_folder(v) -> bool:
    return isinstance(v, str) and v.strip() != "" and not Path(v).is_dir()


def _device(v) -> bool:
    if not isinstance(v, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", v):
        return False
    if v.startswith("cuda"):
        import torch
        return torch.cuda.is_available()
    return True


def _fps(v) -> bool:
    return v == "native" or (_num(v) and 0 < v <= 1000)


RULES: dict[str, Rule] = {
    # caption / streams
    "frames": whole(1),
    "start": nonnegative(),
    "duration": positive(),
    "fps": Rule(_fps, "be a frame rate in (0, 1000] per second or 'native'"),
    "chunk": whole(1, 256),
    "tau": nonnegative(),
    "window": whole(1, MAX_WINDOW),
    "stride": whole(1, MAX_WINDOW),
    "max_words": whole(1, 64),
    "trace": Rule(_not_a_folder, "name a file, not a folder"),
    "srt": Rule(_not_a_folder, "name a file, not a folder"),
    "vtt": Rule(_not_a_folder, "name a file, not a folder"),
    # methods (cli/common.add_method_args)
    "keep": Rule(lambda v: _num(v) and 0 < v <= 1, "be a fraction in (0, 1]"),
    "fastv_k": Rule(lambda v: _num(v) and v >= 0 and (v * 2) % 1 == 0, "be a depth ≥ 0 in steps of 0.5"),
    "fastv_r": Rule(lambda v: _num(v) and 0 <= v < 1, "be a fraction in [0, 1)"),
    "points": Rule(lambda v: all(_num(x) and x >= 0 and (x * 2) % 1 == 0 for x in v), "be depths ≥ 0 in steps of 0.5"),
    "budgets": Rule(lambda v: all(_num(x) and 0 < x <= 1 for x in v), "be fractions in (0, 1]"),
    "counts": Rule(lambda v: all(_int(x) and x >= 1 for x in v), "be token counts ≥ 1"),
    "prune_seed": whole(0),
    "prompt": Rule(lambda v: isinstance(v, str) and v.strip() != "", "be a non-empty question or instruction"),
    "max_new_tokens": whole(1, 60),
    # eval
    "seeds": Rule(lambda v: isinstance(v, range) and v.start >= 0 and len(v) > 0, "be seeds A:B with 0 ≤ A < B"),
    "limit": whole(1),
    "root": Rule(lambda v: isinstance(v, str) and Path(v).is_dir(), "name an existing folder"),
    "out": Rule(lambda v: isinstance(v, str) and v.strip() != "", "name a path"),
    # train
    "steps": whole(1),
    "batch_size": whole(1),
    "threads": whole(1, 1024),
    "eval_every": whole(1),
    "seed": whole(0),
    "workers": whole(0, 256),
    "device": Rule(_device, "be cpu or cuda[:N] (cuda only where torch sees a GPU)"),
    # app
    "port": whole(1, 65535),
    "host": Rule(lambda v: isinstance(v, str) and v.strip() != "" and " " not in v, "be a host name or address"),
    "model": Rule(lambda v: isinstance(v, str) and v.strip() not in ("", "hf:"),
                  "name a model preset, a .safetensors file or hf:NAME_OR_PATH"),
}
_SAYS_OVERRIDE = {"port": "be a port number in 1–65535"}


def check_value(dest: str, value) -> str | None:
    """The complaint about `value` for knob `dest` ("must …, not X"), or None when it is fine (or unchecked)."""
    rule = RULES.get(dest)
    if rule is None or value is None or rule.ok(value):
        return None
    return f"must {_SAYS_OVERRIDE.get(dest, rule.says)}, not {value!r}"


def flag_name(parser: argparse.ArgumentParser, dest: str) -> str:
    """The longest option string of `dest` in `parser` ("--batch-size"), or the dest itself."""
    for a in parser._actions:  # noqa: SLF001 - argparse has no public accessor
        if a.dest == dest and a.option_strings:
            return max(a.option_strings, key=len)
    return dest


def subparser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost (sub)subcommand's own parser chosen by `args` ("cloud serve"), for its usage line and
    option names."""
    while True:
        chosen = next((a.choices[getattr(args, a.dest)] for a in parser._actions  # noqa: SLF001
                       if isinstance(a, argparse._SubParsersAction)  # noqa: SLF001
                       and getattr(args, a.dest, None) in a.choices), None)
        if chosen is None:
            return parser
        parser = chosen


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check every parsed knob against `RULES`; on the first bad one print the subcommand's usage and one line
    naming the option, then exit with status 2 (argparse's own convention for bad arguments)."""
    sub = subparser(parser, args)
    for dest, value in vars(args).items():
        problem = check_value(dest, value)
        if problem:
            sub.error(f"{flag_name(sub, dest)} {problem}")
    window, stride = getattr(args, "window", None), getattr(args, "stride", None)
    if window is not None and stride is not None and stride > window:
        sub.error(f"--stride must be ≤ --window ({window}), not {stride} (frames would be skipped)")


def fps_value(text: str):
    """argparse type for --fps: a number, or 'native' (the video's own frame rate)."""
    if text.strip().lower() == "native":
        return "native"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a frame rate (e.g. 25) or 'native', not {text!r}") from None


def model_limit(name: str, value: int, limit: int, knob: str) -> None:
    """InputError when `value` frames exceed what the loaded model can take (its `max_frames`)."""
    if value > limit:
        raise InputError(knob, f"{value} frames exceed the model's max_frames={limit}; use at most {limit} "
                               "(for longer inputs stream them: --fps R or --fps native)")


def server_address(host: str | None, port: int | None, env: Mapping[str, str] | None = None) -> tuple[str, int]:
    """(host, port) for the app: flags first, then GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, then defaults.
    A bad environment value is an InputError naming the variable."""
    env = os.environ if env is None else env
    if host is None:
        host = env.get("GRADIO_SERVER_NAME") or DEFAULT_HOST
    if port is None:
        raw = env.get("GRADIO_SERVER_PORT")
        if raw:
            try:
                port = int(raw)
            except ValueError:
                raise InputError("GRADIO_SERVER_PORT", f"must be a port number in 1–65535, not {raw!r}") from None
            if not 1 <= port <= 65535:
                raise InputError("GRADIO_SERVER_PORT", f"must be a port number in 1–65535, not {port}")
        else:
            port = DEFAULT_PORT
    return host, int(port)


def exit_on_input_error(fn: Callable[[], object]) -> object:
    """Run fn(); an InputError becomes one line on stderr and exit status 2 (for scripts such as app.py)."""
    try:
        return fn()
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
