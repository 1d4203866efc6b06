"""Every knob of every subcommand is checked up front: a bad value ends in one clear line and exit status 2.

The walk is over the real parser (`workbench.cli.build_parser`): every option of every subcommand must either
be a flag, offer fixed `choices`, or have a bad value listed in BAD below — so a knob added without a check in
`workbench/cli/validate.py` makes this test fail. Each bad value is then run through `workbench.cli.main`
(in-process: nothing loads before validation), and a few through a real subprocess to see no traceback.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from workbench.cli import build_parser, main
from workbench.cli.validate import RULES, check_value, server_address
from workbench.errors import InputError

# a value that parses but makes no sense, per argparse dest (strings, as typed on a command line)
BAD = {
    "frames": "0", "start": "-1", "duration": "0", "fps": "-5", "tau": "-1", "chunk": "0", "window": "0", "stride": "0",
    "trace": ".", "srt": ".", "vtt": ".", "threads": "0", "model": " ", "limit": "0", "root": "/no/such/folder",
    "out": " ", "replay": "-1", "drop": "1", "steps": "0", "batch_size": "0", "eval_every": "0", "seed": "-1", "workers": "-1",
    "device": "tpu", "port": "70000", "host": " ", "max_words": "0",
    # method knobs (cli/common.add_method_args) and eval qa
    "keep": "2", "fastv_k": "-1", "fastv_r": "1", "points": "-1", "budgets": "0", "counts": "0", "prune_seed": "-1",
    "prompt": " ", "seeds": "5:3",
    # workbench sweep
    "methods": "nope", "budget": "0", "gesture_seeds": "5:3", "repeats": "-1", "spec": "/no/such/grid.toml",
    # workbench cloud serve / workbench adapt
    "cloud": "ftp://x", "domain": "mars", "rounds": "0", "stream": "0", "eval_clips": "0", "retries": "0",
    "token_file": "/no/such/token", "pocket": "/no/such/pocket.safetensors", "teacher": "/no/such/t.safetensors",
    "state": __file__, "max_request_bytes": "10",
}
REQUIRED = {"caption": ["shapes:1"]}


def subcommands(parser: argparse.ArgumentParser | None = None, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every (sub)subcommand by its words ("caption", "cloud serve") → its parser."""
    parser = parser or build_parser()
    out = {}
    for sub in (a for a in parser._actions if isinstance(a, argparse._SubParsersAction)):
        for name, p in sub.choices.items():
            out[prefix + name] = p
            out.update(subcommands(p, prefix + name + " "))
    return out


def knobs():
    for cmd, p in subcommands().items():
        for a in p._actions:
            if a.option_strings and not isinstance(a, (argparse._HelpAction, argparse._StoreTrueAction,
                                                       argparse._StoreFalseAction)) and a.choices is None:
                yield cmd, a


def test_every_knob_has_a_check_and_a_bad_value_here():
    seen = list(knobs())
    assert len(seen) >= 20  # caption, eval, train and app all have knobs
    missing = [(c, a.dest) for c, a in seen if a.dest not in BAD or a.dest not in RULES]
    assert not missing, f"knobs without a check in cli/validate.RULES or a bad value in BAD: {missing}"


@pytest.mark.parametrize("cmd,action", list(knobs()), ids=lambda v: v if isinstance(v, str) else v.dest)
def test_a_bad_knob_exits_2_with_one_line_naming_it(cmd, action, capsys):
    flag = max(action.option_strings, key=len)
    with pytest.raises(SystemExit) as e:
        main([*cmd.split(), *REQUIRED.get(cmd, []), f"{flag}={BAD[action.dest]}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2
    assert err[-1].startswith(f"workbench {cmd}: error: {flag}") and "must" in err[-1], err[-1]


def test_unparseable_and_model_dependent_knobs_exit_2_without_a_traceback():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for args, says in ((["caption", "shapes:1", "--frames", "abc"], "invalid int value"),
                       (["caption", "shapes:1", "--model", "tinyvlm-debug", "--frames", "64"], "max_frames=32"),
                       (["caption", "shapes:1", "--model", "tinyvlm-debug", "--window", "40"], "max_frames=32"),
                       (["caption", "shapes:1", "--window", "8", "--stride", "9"], "--stride must be"),
                       (["caption", "shapes:1", "--fps", "fast"], "'native'"),
                       (["caption", "shapes:1", "--method", "sttf", "--tau", "-1"], "--tau must be")):
        p = subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True, text=True, env=env,
                           timeout=120)
        assert p.returncode == 2 and says in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)


def test_good_values_pass():
    for dest, value in (("frames", 16), ("tau", 0.0), ("fps", "native"), ("fps", 25.0), ("port", 7860),
                        ("device", "cpu"), ("workers", 0), ("seed", 0)):
        assert check_value(dest, value) is None, dest


def test_the_app_address_takes_flags_first_then_gradios_environment():
    env = {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "8123"}
    assert server_address(None, None, env) == ("0.0.0.0", 8123)
    assert server_address("127.0.0.1", 9000, env) == ("127.0.0.1", 9000)
    assert server_address(None, None, {}) == ("127.0.0.1", 7860)
    for bad in ("http", "0", "99999"):
        with pytest.raises(InputError, match="GRADIO_SERVER_PORT"):
            server_address(None, None, {"GRADIO_SERVER_PORT": bad})
