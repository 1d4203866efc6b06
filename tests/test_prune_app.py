"""The dashboard's question tab (decoder-side pruning): callbacks without a browser, then a real Gradio server
driven by gradio_client — answers, the decoder-layer overlay, bad knobs as messages, the server keeps serving."""
from __future__ import annotations

import json

import pytest

from workbench.errors import InputError
from workbench.ui import prune_callbacks as pc
from workbench.ui.prune_tab import sample_questions
from workbench.ui.session import SessionCache

MODEL, N = "tinyvlm-debug", 8


def title(fig) -> str:
    return fig.layout.title.text


def test_callbacks_answer_and_draw_every_layer():
    cache = SessionCache()
    q = sample_questions("slow motion")[0]
    assert q.startswith("what color is the ")
    a = pc.analyse_prune(None, "slow motion", pc.PruneSpec("sparsevlm", q, keep=0.6), cache, MODEL, N)
    assert a.truth is not None and a.words[0] == "<bos>" and a.words[-1] == "<sep>"
    md = pc.answer_markdown(a)
    assert "**dense**" in md and "kept 60" in md and "prefill FLOPs" in md
    for layer in (-1, 0):
        v = pc.prune_views(a, 3, layer)
        assert title(v.overlay).startswith("frame 3 ·")
    assert "kept" in title(pc.prune_views(a, 3, 0).overlay) and "pruned" in title(pc.prune_views(a, 3, 0).overlay)
    assert "raters" in title(v.raters) and "sublayer" in title(v.layers)
    # a second run with another method reuses the decoded input and the dense answer
    before = dict(cache.counters)
    b = pc.analyse_prune(None, "slow motion", pc.PruneSpec("fastv", q, keep=0.6), cache, MODEL, N)
    assert cache.counters["decodes"] == before["decodes"] and cache.counters["run_hits"] == before["run_hits"] + 1
    assert b.dense is a.dense and "no decoder-side" not in title(pc.prune_views(b, 0, 0).overlay)


@pytest.mark.parametrize("knobs, says", [
    (dict(question="   "), "type a question"),
    (dict(keep=0.3), "out of reach"),  # the 1-layer debug decoder cannot go below 1/2
    (dict(counts="99999"), "above the"),
    (dict(counts="1,x"), "whole numbers"),
])
def test_bad_knobs_are_messages(knobs, says):
    base = dict(label="SparseVLM", question="what color is the background", keep=0.6, rule="fixed", recycle=True,
                K=0.5, tau=0.05, counts="")
    with pytest.raises(InputError, match=says):
        spec = pc.PruneSpec.from_ui(**{**base, **knobs})
        pc.analyse_prune(None, "slow motion", spec, SessionCache(), MODEL, N)


@pytest.fixture(scope="module")
def server(dashboard_server):
    return dashboard_server  # tests/conftest.py: the dashboard on tinyvlm-debug, served for this module


def test_question_tab_over_a_real_server(server):
    from gradio_client import Client
    c = Client(server.local_url, verbose=False)
    args = [None, "fast motion", N, "STTF + SparseVLM", "what color is the background", 0.6, "fixed", True, 0.5, 0.05,
            "", 0, 0, "decision"]
    out = c.predict(*args, api_name="/prune")
    answers, slider, overlay, layers, raters, per_frame = out
    assert "STTF + SparseVLM" in answers and slider["maximum"] == N - 1
    assert json.loads(overlay["plot"])["layout"]["title"]["text"].startswith("frame 0 ·")
    views = c.predict(4, -1, "score", api_name="/prune_frame")
    assert json.loads(views[0]["plot"])["layout"]["title"]["text"].startswith("frame 4 · decoder input")
    bad = list(args)
    bad[4] = ""
    with pytest.raises(Exception, match="type a question"):
        c.predict(*bad, api_name="/prune")
    again = c.predict(*args[:3], "FastV", *args[4:], api_name="/prune")  # the server keeps serving
    assert "FastV" in again[0]
