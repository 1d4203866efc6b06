"""The dashboard's figure functions (viz: overlay, timeline, costs, events_view, summary) on real traces.

Traces come from real runs of the debug TinyVLM on an 8-frame sample; every expected value is recomputed
independently here (from STTF.run / ANC.route / the Description's stats / the clip), never copied from the
figure under test.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl
import pytest
import torch

from workbench.data.events import make_events
from workbench.methods.anc import ANC, ANCConfig
from workbench.methods.anc_modules import BRANCHES, ANCModule
from workbench.methods.ops.routing import FEATURE_NAMES
from workbench.methods.sttf import STTF, STTFConfig
from workbench.models.registry import create_model
from workbench.pipeline import Dense, describe
from workbench.trace.schema import DECISIONS, TRACE_SCHEMA
from workbench.ui.inputs import sample_clip
from workbench.viz.costs import cost_series, flops_per_frame, tokens_per_frame
from workbench.viz.events_view import bin_events, event_frames_figure, time_surface, time_surface_figure
from workbench.viz.overlay import decision_grid, patch_overlay
from workbench.viz.summary import summary_table
from workbench.viz.timeline import BRANCH_NAMES, route_table, router_timeline

CFG = STTFConfig(tau=0.05)


@pytest.fixture(scope="module")
def model():
    return create_model("tinyvlm-debug")


@pytest.fixture(scope="module")
def clip():
    return sample_clip("fast motion", 8)


@pytest.fixture(scope="module")
def runs(model, clip):
    """(dense Description, STTF Description, STTFRun computed separately without a recorder)."""
    dense = describe(model, clip, method=Dense(), trace=True)
    sttf = describe(model, clip, method=STTF(CFG), trace=True)
    frames = torch.from_numpy(clip.frames)[None]
    ref = STTF(CFG).run(model, frames, clip.modality, clip)
    return dense, sttf, ref


def heat(fig: go.Figure) -> go.Heatmap:
    return next(t for t in fig.data if t.type == "heatmap")


# ---- overlay ---------------------------------------------------------------------------------------------------

def test_decision_overlay_matches_the_gate_mask_at_every_frame(runs, clip):
    _, sttf, ref = runs
    mask = ref.mask[0].numpy()  # (T, N)
    assert 0 < mask[1:].mean() < 1, "the sample should have both recomputed and reused patches"
    for t in range(clip.num_frames):
        want = np.where(mask[t], DECISIONS["recomputed"], DECISIONS["fused"]).reshape(14, 14)
        dg = decision_grid(sttf.trace, t)
        assert dg.source == "sttf.fusion"
        np.testing.assert_array_equal(dg.codes, want)
        fig = patch_overlay(clip.frames[t], sttf.trace, t)
        np.testing.assert_array_equal(np.asarray(heat(fig).z), want)
        n_rec = int(mask[t].sum())
        assert f"{n_rec} recomputed" in fig.layout.title.text
        assert ("keyframe" in fig.layout.title.text) == bool(ref.key[0, t])
        legend = {tr.name for tr in fig.data if tr.type == "scatter" and tr.showlegend is not False}
        if n_rec < 196:
            assert f"fused ({196 - n_rec})" in legend and "outline: fused groups" in legend
    np.testing.assert_allclose(decision_grid(sttf.trace, 3).score.ravel(), ref.score[0, 3].numpy(), rtol=1e-6)
    np.testing.assert_array_equal(decision_grid(sttf.trace, 3).ref_age.ravel(), ref.ref_age[0, 3].numpy())


def test_fused_tokens_carry_their_run_in_the_hover(runs):
    _, sttf, ref = runs
    t = next(t for t in range(1, 8) if (~ref.mask[0, t]).any())
    tok = ref.token_index[t].numpy()  # decoder token of each patch at frame t
    dg = decision_grid(sttf.trace, t)
    np.testing.assert_array_equal(dg.targets.ravel(), tok)
    i = int(np.flatnonzero(~ref.mask[0, t].numpy())[0])
    run_len = int((ref.token_index.numpy() == tok[i]).sum())
    fig = patch_overlay(np.zeros((3, 112, 112), np.float32), sttf.trace, t)
    assert f"→ decoder token {tok[i]} (run of {run_len} frames)" in heat(fig).text[i // 14][i % 14]


def _outline_segments(fig: go.Figure) -> int:
    tr = next(t for t in fig.data if t.name and t.name.startswith("outline"))
    return sum(1 for x in tr.x if x is None)


def test_fused_outline_is_the_boundary_of_the_fused_region():
    g = 6
    codes = np.full((g, g), DECISIONS["fused"])
    codes[2:4, 2:4] = DECISIONS["recomputed"]  # a 2×2 hole in a fused frame
    df = pl.DataFrame({"run_id": "r", "sample_id": "s", "frame": 0, "layer": -1, "site": "sttf.fusion",
                       "token": np.arange(g * g), "kind": "decision", "value": codes.ravel().astype(float),
                       "target": np.arange(g * g)}, schema=TRACE_SCHEMA)
    fig = patch_overlay(np.zeros((3, 48, 48), np.float32), df, 0)
    assert _outline_segments(fig) == 4 * g + 8  # the image border + the hole's 8 unit edges
    # cells fused into one shared token (spatial merging) are outlined as a group
    df2 = df.with_columns(pl.when(pl.col("token").is_in([0, 1])).then(99).otherwise(pl.col("target")).alias("target"))
    fig2 = patch_overlay(np.zeros((3, 48, 48), np.float32), df2.cast({"target": pl.Int32}), 0)
    # + the group's edges against the other fused cells: right of (0, 1), below (0, 0) and (0, 1)
    assert _outline_segments(fig2) == 4 * g + 8 + 3


def test_change_score_and_motion_views(runs, clip):
    _, sttf, ref = runs
    t = 4
    fig = patch_overlay(clip.frames[t], sttf.trace, t, view="change_score")
    np.testing.assert_allclose(np.asarray(heat(fig).z, float).ravel(), ref.score[0, t].numpy(), rtol=1e-6)
    fig = patch_overlay(clip.frames[t], sttf.trace, t, view="motion", motion_mask=clip.motion_mask)
    truth = clip.motion_mask[t]
    np.testing.assert_array_equal(np.asarray(heat(fig).z), truth.astype(float))
    computed = ref.mask[0, t].numpy().reshape(14, 14)
    if truth.any():
        assert f"{(computed & truth).sum() / truth.sum():.0%} of {int(truth.sum())} moving" in fig.layout.title.text
    with pytest.raises(ValueError, match="view must be"):
        patch_overlay(clip.frames[t], sttf.trace, t, view="nope")


def test_dense_and_anc_traces_have_frame_level_overlays(runs, model, clip):
    dense, _, _ = runs
    fig = patch_overlay(clip.frames[0], dense.trace, 0)
    assert "196 recomputed (dense)" in fig.layout.title.text
    assert "no change scores" in patch_overlay(clip.frames[0], dense.trace, 0, view="change_score").layout.title.text
    assert "no ground-truth" in patch_overlay(clip.frames[0], dense.trace, 0, view="motion").layout.title.text
    anc = ANC(ANCModule.for_model(model), ANCConfig(forced="skip"))
    d = describe(model, clip, method=anc, trace=True)
    assert decision_grid(d.trace, 0).source == "anc.route_choice = full"  # frame 0 is never a skip
    dg = decision_grid(d.trace, 1)
    assert dg.source == "anc.route_choice = skip" and (dg.codes == DECISIONS["reused"]).all()


# ---- router timeline -------------------------------------------------------------------------------------------

def test_router_timeline_shows_the_route_the_router_took(model, clip):
    assert BRANCH_NAMES == BRANCHES
    anc = ANC(ANCModule.for_model(model, seed=1), ANCConfig(hysteresis=0.0, first_frame=None))
    d = describe(model, clip, method=anc, trace=True)
    route = anc.route(model, torch.from_numpy(clip.frames), clip.modality)
    choices, probs = route_table(d.trace)
    np.testing.assert_array_equal(choices, route.choices)
    np.testing.assert_allclose(probs, route.probs, rtol=1e-6)
    fig = router_timeline(d.trace, frame_index=2, fps=clip.fps)
    np.testing.assert_array_equal(np.asarray(fig.data[0].y), route.choices)
    stacked = [t for t in fig.data if getattr(t, "stackgroup", None) == "pi"]
    assert [t.name for t in stacked] == list(BRANCHES)
    np.testing.assert_allclose(np.sum([np.asarray(t.y) for t in stacked], 0), 1.0, atol=1e-5)
    energy = next(t for t in fig.data if t.name == "energy vs previous frame")
    np.testing.assert_allclose(np.asarray(energy.y), route.features[:, FEATURE_NAMES.index("prev_mean")], rtol=1e-6)
    switches = int((np.diff(route.choices) != 0).sum())
    assert fig.layout.title.text.startswith(f"router: {switches} switches in 8 frames")
    assert any(s.x0 == 2 for s in fig.layout.shapes)  # the scrubber's frame


def test_router_timeline_without_a_router_falls_back_to_change_scores(runs):
    _, sttf, ref = runs
    fig = router_timeline(sttf.trace)
    assert fig.layout.title.text == "router timeline: no router in this run"
    line = next(t for t in fig.data if t.name == "mean change score")
    np.testing.assert_allclose(np.asarray(line.y), ref.score[0].numpy().mean(1), rtol=1e-5)


# ---- costs and summary -----------------------------------------------------------------------------------------

def test_tokens_and_flops_per_frame_follow_the_runs_stats(runs):
    dense, sttf, _ = runs
    fig = tokens_per_frame(dense.trace, sttf.trace, frame_index=1)
    bars = {t.name: np.asarray(t.y, float) for t in fig.data if t.type == "bar"}
    np.testing.assert_array_equal(bars["dense"], dense.stats.tokens_to_decoder)
    np.testing.assert_array_equal(bars["compressed"], sttf.stats.tokens_to_decoder)
    saving = next(t for t in fig.data if t.name == "cumulative saving")
    want = 1 - sttf.stats.tokens_to_decoder.sum() / dense.stats.tokens_to_decoder.sum()
    assert abs(float(saving.y[-1]) / 100 - want) < 1e-9
    assert f"(−{want:.0%})" in fig.layout.title.text
    fl = flops_per_frame(dense.trace, sttf.trace)
    bars = {t.name: np.asarray(t.y, float) for t in fl.data if t.type == "bar"}
    np.testing.assert_allclose(bars["compressed"], sttf.stats.encoder_flops / 1e6)
    assert (sttf.stats.encoder_flops[1:] < dense.stats.encoder_flops[1:]).any()
    d, c, s = cost_series(None, sttf.trace, "encoder_flops")
    assert len(d) == 0 and len(s) == 0 and len(c) == 8
    assert "no dense baseline" in tokens_per_frame(None, sttf.trace).layout.title.text


def test_summary_table(runs):
    dense, sttf, ref = runs
    t = summary_table(dense.trace, sttf.trace, fps=8.0)
    assert t.schema == {"metric": pl.Utf8, "dense": pl.Float64, "compressed": pl.Float64, "ratio": pl.Float64}
    row = dict(zip(t["metric"], t.iter_rows()))
    assert row["visual tokens to the decoder per frame"][1:3] == (196.0, sttf.tokens_per_frame)
    assert row["STTF recompute rate (patch-frames)"][2] == pytest.approx(ref.recompute_rate)
    assert row["STTF keyframes"][2] == float(ref.key.sum())
    assert row["encoder MFLOPs, whole clip"][3] == pytest.approx(sttf.stats.encoder_flops.sum()
                                                                / dense.stats.encoder_flops.sum())


# ---- events ----------------------------------------------------------------------------------------------------

def _random_events(n=500, w=9, h=7, seed=0):
    rng = np.random.default_rng(seed)
    return make_events(rng.integers(0, w, n), rng.integers(0, h, n), np.sort(rng.integers(0, 10_000, n)),
                       rng.integers(0, 2, n))


def test_bin_events_and_time_surface_against_brute_force():
    ev, size = _random_events(), (9, 7)
    edges = [0, 2500, 5000, 10_000]
    counts = bin_events(ev, size, edges)
    want = np.zeros((3, 2, 7, 9), np.int64)
    for e in ev:
        b = 2 if e["t"] == edges[-1] else int(np.searchsorted(edges, e["t"], side="right") - 1)
        want[b, int(e["p"]), e["y"], e["x"]] += 1
    np.testing.assert_array_equal(counts, want)
    surf = time_surface(ev, size, 6000, 1000.0)
    last = np.full((2, 7, 9), -np.inf)
    for e in ev[ev["t"] <= 6000]:
        last[int(e["p"]), e["y"], e["x"]] = max(last[int(e["p"]), e["y"], e["x"]], e["t"])
    np.testing.assert_allclose(surf, np.where(np.isfinite(last), np.exp(-(6000 - last) / 1000.0), 0))
    assert isinstance(time_surface_figure(ev, size, 6000, 1000.0), go.Figure)


def test_event_view_of_the_gesture_sample():
    c = sample_clip("gesture events", 8)
    t = 3
    lo, hi = int(c.frame_times_us[t]), int(c.frame_times_us[t + 1])
    n = int(((c.events["t"] >= lo) & (c.events["t"] < hi)).sum())
    fig = event_frames_figure(c.events, (112, 112), c.frame_times_us, t, model_frame=c.frames[t])
    assert f"{n:,} events" in fig.layout.title.text and n > 0
    assert [tr.type for tr in fig.data] == ["image", "image"]
    fig = event_frames_figure(c.events, (112, 112), c.frame_times_us, t, view="time_surface")
    assert "time surface" in fig.layout.title.text and len(fig.data) == 1
    with pytest.raises(ValueError, match="outside"):
        event_frames_figure(c.events, (112, 112), c.frame_times_us, 8)
    assert "no event stream" in event_frames_figure(None, (112, 112)).layout.annotations[0].text
