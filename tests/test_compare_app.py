"""The dashboard's compare tab: the callbacks render for every method (panels on the frame grid, costs, outputs),
the Pareto plot of a sweep on disk, bad knobs as messages — then a real Gradio server driven by gradio_client."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from workbench.errors import InputError
from workbench.methods.visionzip import VisionZipConfig
from workbench.trace.schema import DECISIONS
from workbench.ui import compare_callbacks as cc
from workbench.viz.compare import method_grid

MODEL, N = "tinyvlm-debug", 8
EVERY = ("sttf", "eventful", "tome", "visionzip", "random", "pool", "fastv", "sparsevlm", "random-prune")


@pytest.fixture(scope="module")
def analysis(one_torch_thread):
    return cc.analyse_compare(None, "slow motion", 49, EVERY, "", MODEL, N)


def test_the_compare_view_renders_for_every_method(analysis, tmp_path):
    a = analysis
    assert [r["method"] for r in a.rows] == ["dense", *EVERY]
    v = cc.compare_views(a, 5)
    titles = [x.text for x in v.tokens.layout.annotations]
    assert len(titles) == 1 + len(EVERY) and all(t.split(" · ")[0] in ("dense", *EVERY) for t in titles)
    for name, d in a.runs.items():  # each panel shows that method's own decisions on the grid
        g = method_grid(d.trace, 5)
        assert g.codes.shape == (14, 14), name
        if name in ("random", "visionzip"):
            kept = int((g.codes == DECISIONS["kept"]).sum())
            assert kept == (49 if name == "random" else VisionZipConfig(budget=49).split(196)[0]), name
        if name == "pool":
            assert len(np.unique(g.targets)) == 49
    assert [t.name for t in v.costs.data] == ["encoder FLOPs", "prefill FLOPs", "latency"]
    assert list(v.costs.data[0].x) == ["dense", *EVERY]
    md = cc.outputs_markdown(a)
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert len(rows) == 1 + len(EVERY) and "**captions**" in md
    a.sweep_dir = tmp_path
    assert "no sweep" in cc.compare_views(a, 5).pareto.layout.annotations[0].text
    summary = pl.DataFrame({"method": ["dense", "tome"], "budget": [None, 49.0], "knobs": ["{}", "{}"],
                            "flops_ratio": [1.0, 0.6], "cider": [0.9, 0.7], "qa_accuracy": [0.5, 0.4]})
    summary.write_parquet(tmp_path / "summary.parquet")
    fig = cc.last_sweep_figure(tmp_path)
    assert {t.name for t in fig.data} >= {"tome", "dense", "Pareto frontier"}


def test_questions_are_answered_and_marked(one_torch_thread):
    from workbench.ui.inputs import sample_clip
    q, truth = sample_clip("slow motion", N).qa[0]
    a = cc.analyse_compare(None, "slow motion", 98, ("tome", "fastv"), q, MODEL, N)
    assert a.truth == truth and all(r["correct"] in (True, False) for r in a.rows)
    assert f"**question** {q}" in cc.outputs_markdown(a)


@pytest.mark.parametrize("kw, says", [(dict(methods=()), "at least one method"), (dict(methods=("nope",)), "unknown"),
                                      (dict(budget=0), "budget"), (dict(n_frames=5), "frames")])
def test_bad_knobs_are_messages(kw, says):
    args = dict(upload=None, sample="slow motion", budget=31, methods=("tome",), question="", model_name=MODEL,
                n_frames=N)
    with pytest.raises(InputError, match=says):
        cc.analyse_compare(**{**args, **kw})


@pytest.fixture(scope="module")
def server(dashboard_server):
    return dashboard_server  # tests/conftest.py: the dashboard on tinyvlm-debug, served for this module


def test_compare_tab_over_a_real_server(server):
    from gradio_client import Client
    c = Client(server.local_url, verbose=False)
    out = c.predict(None, "fast motion", N, 31, ["tome", "sparsevlm", "pool"], "", api_name="/compare")
    md, slider, tokens, costs, pareto = out
    assert "| tome |" in md and "| sparsevlm |" in md and slider["maximum"] == N - 1
    panels = json.loads(tokens["plot"])["layout"]["annotations"]
    assert [p["text"].split(" · ")[0] for p in panels] == ["dense", "tome", "sparsevlm", "pool"]
    frame = c.predict(6, api_name="/compare_frame")
    assert json.loads(frame["plot"])["layout"]["title"]["text"].startswith("frame 6")
    with pytest.raises(Exception, match="at least one method"):
        c.predict(None, "fast motion", N, 31, [], "", api_name="/compare")
    again = c.predict(None, "fast motion", N, 49, ["random"], "", api_name="/compare")  # still serving
    assert "| random |" in again[0]
