"""The sweep runner (`workbench/sweep/`, `workbench sweep`): real spawned process pool, real local Ray, real files.

One small sweep (debug model, 8-frame clips, one ShapesWorld seed and one gesture seed) is run locally, then
resumed, then run again as Ray tasks: the Parquet content must be identical (timings aside), a rerun must skip
every finished cell, and a deleted cell must be the only one run again.
"""
from __future__ import annotations

import json
import sys

import polars as pl
import pytest

from workbench.cli import main
from workbench.errors import InputError
from workbench.sweep import SweepSpec, run_sweep
from workbench.sweep.executors import ray_module
from workbench.sweep.results import cell_path, without_timings

SPEC = SweepSpec(("tome", "fastv"), (49.0,), range(0, 1), range(0, 1), frames=8, model="tinyvlm-debug", repeats=1)
CELLS = 6  # (dense + 2 methods) × (1 ShapesWorld clip + 1 gesture clip)


@pytest.fixture(scope="module")
def local(tmp_path_factory, one_torch_thread):
    out = tmp_path_factory.mktemp("sweep-local")
    return out, run_sweep(SPEC, out, workers=2)


def test_every_cell_is_one_row_with_the_accounting(local):
    out, r = local
    assert r.ran == CELLS and r.skipped == 0
    res = pl.read_parquet(out / "results.parquet")
    assert res.height == CELLS and len(list((out / "cells").glob("*.parquet"))) == CELLS
    assert set(res["task"]) == {"captions", "gesture"}
    qa = res.filter(pl.col("task") == "captions")
    assert (qa["qa_n"] > 0).all() and qa["cider"].null_count() == 0
    assert res.filter(pl.col("task") == "gesture")["gesture_correct"].null_count() == 0
    tome = res.filter(pl.col("method") == "tome")
    assert tome["tokens_per_frame"].to_list() == [98.0] * 2  # 1 encoder block: ToMe's floor, reported as hit
    fastv = res.filter(pl.col("method") == "fastv")
    assert fastv["tokens_per_frame"].to_list() == pytest.approx([49.0] * 2, abs=0.5)
    assert (fastv["decoder_input_per_frame"] == 196).all() and (fastv["last_layer_per_frame"] <= 49).all()
    audited = res.filter(pl.col("encoder_flops_analytic").is_not_null())
    assert audited.height == CELLS  # dense and both methods state their analytic count
    for a, b in ((audited["encoder_flops"], audited["encoder_flops_analytic"]),
                 (res["prefill_flops"], res["prefill_flops_analytic"])):
        assert ((a - b).abs() <= 0.02 * b).all()
    assert (res["latency_ms"] > 0).all() and (res["dense_latency_ms"] > 0).all()
    s = {rec["method"]: rec for rec in r.records()}
    assert s["dense"]["flops_ratio"] == 1.0 and s["tome"]["encoder_flops_ratio"] < 1.0
    assert s["fastv"]["encoder_flops_ratio"] == 1.0 and s["fastv"]["prefill_flops_ratio"] < 1.0


def test_resume_skips_finished_cells_and_reruns_only_what_is_missing(local):
    out, first = local
    again = run_sweep(SPEC, out, workers=2)
    assert again.ran == 0 and again.skipped == CELLS
    victim = next(c for c in first.cells if c.method == "fastv")
    cell_path(out, victim.id).unlink()
    third = run_sweep(SPEC, out, workers=0)  # in this process: the same numbers as the pool's
    assert third.ran == 1
    assert without_timings(third.results).equals(without_timings(first.results))


def test_ray_gives_the_same_parquet_content(local, tmp_path):
    pytest.importorskip("ray")  # installed by the test extra; CI exercises it
    out, first = local
    r = run_sweep(SPEC, tmp_path, ray=True, workers=2)
    assert r.ran == CELLS
    a = without_timings(pl.read_parquet(out / "results.parquet"))
    b = without_timings(pl.read_parquet(tmp_path / "results.parquet"))
    assert a.equals(b)


def test_cli_json_and_a_knob_grid_spec(local, capsys, tmp_path):
    out, _ = local
    grid = tmp_path / "grid.toml"
    grid.write_text('[tome]\nschedule = ["constant", "decreasing"]\n')
    code = main(["sweep", "--methods", "tome,fastv", "--budget", "49", "--seeds", "0:1", "--gesture-seeds", "0:1",
                 "--frames", "8", "--model", "tinyvlm-debug", "--out", str(out), "--repeats", "1", "--spec",
                 str(grid), "--json", "--workers", "2"])
    recs = json.loads(capsys.readouterr().out)
    assert code == 0
    tome = [r for r in recs if r["method"] == "tome"]
    assert len(tome) == 2 and {json.loads(r["knobs"])["schedule"] for r in tome} == {"constant", "decreasing"}
    for r in recs:
        assert {"method", "tokens_per_frame", "flops_ratio", "cider", "latency_ratio"} <= set(r)


def test_without_ray_the_flag_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does where it is not installed
    with pytest.raises(InputError, match="pip install"):
        ray_module()
    assert main(["sweep", "--methods", "tome", "--budget", "31", "--ray", "--model", "tinyvlm-debug"]) == 2


def test_bad_sweeps_are_one_line_errors(capsys):
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--methods", "tome,nope", "--budget", "31"])
    assert e.value.code == 2 and "--methods must" in capsys.readouterr().err
    assert main(["sweep", "--seeds", "0:2", "--model", "tinyvlm-debug"]) == 2  # no methods, no budget
