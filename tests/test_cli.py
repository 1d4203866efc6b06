"""The `workbench` command, run as a real subprocess (what a user types), and the pipeline/trace contract."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from workbench.data.shapesworld import make_clip
from workbench.models.registry import create_model
from workbench.pipeline import Dense, attach, describe, detach
from workbench.trace import read_trace, write_trace

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def wb(*args, check=True):
    """Run `workbench ARGS` in a subprocess; return the CompletedProcess."""
    p = subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True, text=True, env=ENV,
                       timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"workbench {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return p


def test_help_explains_every_subcommand():
    out = wb("--help").stdout
    for sub in ("caption", "eval", "train", "app", "models"):
        assert sub in out
    assert "--limit" in wb("eval", "--help").stdout
    assert "--steps" in wb("train", "--help").stdout


def test_caption_a_seed_writes_a_trace(tmp_path):
    trace = tmp_path / "t.parquet"
    p = wb("caption", "shapes:4", "--model", "tinyvlm-debug", "--json", "--trace", str(trace))
    rec = json.loads(p.stdout)
    assert rec["frames"] == 16 and rec["tokens_per_frame"] == 196.0 and rec["modality"] == "rgb"
    df, run = read_trace(trace)
    assert run["sample_id"] == "shapes-4" and run["method"] == "dense"
    per_frame = df.filter(pl.col("kind") == "tokens_to_decoder")
    assert per_frame.height == 16 and per_frame["value"].sum() == 3136


@pytest.mark.parametrize("name", ["tree.avi", "bikes.mp4"])
def test_caption_real_video(real_data, name):
    rec = json.loads(wb("caption", str(real_data / "video" / name), "--model", "tinyvlm-debug", "--json").stdout)
    assert rec["modality"] == "rgb" and rec["frames"] == 16


@pytest.mark.parametrize("name,fmt", [("dvxplorer_sample.aedat4", "aedat4"), ("prophesee_evt3_sample.raw", "evt3"),
                                      ("dvs128_walking.aedat", "aedat2"), ("nmnist_sample.bin", "nmnist")])
def test_caption_real_event_files(real_data, name, fmt):
    rec = json.loads(wb("caption", str(real_data / "events" / name), "--model", "tinyvlm-debug", "--json").stdout)
    assert rec["modality"] == "events" and rec["detected_format"] == fmt and rec["gesture"]


def test_bad_inputs_exit_2_with_one_clear_line(tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(os.urandom(4096))
    p = wb("caption", str(bad), "--model", "tinyvlm-debug", check=False)
    assert p.returncode == 2 and "corrupt.mp4" in p.stderr and "Traceback" not in p.stderr
    p = wb("caption", str(tmp_path / "missing.mp4"), "--model", "tinyvlm-debug", check=False)
    assert p.returncode == 2 and "no such file" in p.stderr
    p = wb("caption", "shapes:1", "--model", "no-such-model", check=False)
    assert p.returncode == 3 and "unknown model" in p.stderr


@pytest.mark.slow
def test_eval_writes_json_and_parquet(tmp_path):
    wb("eval", "--model", "tinyvlm-debug", "--limit", "3", "--out", str(tmp_path))
    res = json.loads((tmp_path / "results.json").read_text())
    caps = res["captions"]
    for k in ("bleu4", "meteor", "rouge_l", "cider"):
        assert 0.0 <= caps[k] <= 10.0
    assert caps["spice"] is None and "unavailable" in caps["spice_status"]
    assert res["gesture"]["n"] == 3 and len(res["gesture"]["confusion"]) == 11
    assert pl.read_parquet(tmp_path / "captions.parquet").height == 3
    assert pl.read_parquet(tmp_path / "gestures.parquet").height == 3


def test_tracing_never_changes_outputs_and_round_trips(tmp_path):
    model = create_model("tinyvlm-debug")
    clip = make_clip(8)
    plain = describe(model, clip)
    traced = describe(model, clip, trace=True)
    assert traced.caption == plain.caption and traced.run_id == plain.run_id
    assert np.array_equal(traced.stats.tokens_to_decoder, plain.stats.tokens_to_decoder)
    flops = traced.trace.filter(pl.col("kind") == "encoder_flops")["value"]
    assert flops.len() == 16 and flops.min() > 0
    write_trace(traced.trace, tmp_path / "x.parquet", traced.run)
    df, run = read_trace(tmp_path / "x.parquet")
    assert df.equals(traced.trace) and run == json.loads(json.dumps(traced.run, default=str))


def test_same_input_same_trace():
    model = create_model("tinyvlm-debug")
    a = describe(model, make_clip(2), trace=True).trace
    b = describe(model, make_clip(2), trace=True).trace
    drop_time = pl.col("kind").is_in(["latency_ms", "decode_ms"]).not_()
    assert a.filter(drop_time).equals(b.filter(drop_time))


def test_attach_and_detach_a_method():
    model = create_model("tinyvlm-debug")

    class Half(Dense):
        name = "half"

        def visual_tokens(self, model, frames, modality, clip=None, count=False):
            vt, stats = super().visual_tokens(model, frames, modality, clip, count)
            import torch
            return vt.select(torch.arange(0, vt.num_tokens, 2)[None]), stats

    attach(model, Half())
    assert describe(model, make_clip(1)).tokens_to_decoder == 16 * 98
    assert "compression" not in dict(model.named_modules()) and not any("compression" in k for k in model.state_dict())
    detach(model)
    assert describe(model, make_clip(1)).tokens_to_decoder == 16 * 196
