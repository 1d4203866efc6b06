"""STTF + ANC combined mode on the debug TinyVLM: exactness, real skipping, accounting, tracing."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from workbench.data import gestures, shapesworld
from workbench.methods.anc import ANC, ANCConfig
from workbench.methods.anc_modules import BRANCHES, ANCModule
from workbench.methods.combined import STTFANC
from workbench.methods.sttf import STTF, STTFConfig
from workbench.models.registry import create_model
from workbench.pipeline import Dense, describe
from workbench.trace import tracing
from workbench.trace.schema import DECISIONS


@pytest.fixture(scope="module")
def model():
    return create_model("tinyvlm-debug")


@pytest.fixture(scope="module")
def module(model):
    m = ANCModule.for_model(model, seed=1)
    with torch.no_grad():  # non-trivial adapters so light/medium differ from identity
        for p in list(m.light.fc2.parameters()) + list(m.medium.fc2.parameters()):
            p.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
    return m


@pytest.fixture(scope="module")
def clip():
    return shapesworld.make_clip(0, num_frames=8)  # high motion: partial frames


def frames_of(c):
    return torch.from_numpy(c.frames)[None]  # (1, T, C, H, W)


def test_forced_full_tau_zero_is_exactly_dense(model, module, clip):
    m = STTFANC(ANC(module, ANCConfig(forced="full")), STTFConfig(tau=0.0))
    vt, stats = m.visual_tokens(model, frames_of(clip), clip.modality, clip)
    dense, _ = Dense().visual_tokens(model, frames_of(clip), clip.modality, clip)
    assert torch.equal(vt.embeds, dense.embeds)
    assert (stats.tokens_computed == 196).all()
    assert describe(model, clip, m).caption == describe(model, clip, Dense()).caption


@pytest.mark.parametrize("branch", ["light", "medium", "full"])
@pytest.mark.parametrize("tau", [0.02, 0.08])
def test_only_gated_tokens_are_computed(model, module, clip, branch, tau):
    """Tokens computed = STTF's recompute mask; the first block sees only those tokens (dense frames: all)."""
    m = STTFANC(ANC(module, ANCConfig(forced=branch, first_frame=branch)), STTFConfig(tau=tau))
    m.anc.costs(model, clip.modality)  # measured once per model (runs every branch once): not part of the clip
    seen = []
    ln1 = model.encoder.blocks[0].ln1  # runs on exactly the tokens the block computes
    hook = ln1.register_forward_pre_hook(lambda mod, a: seen.append(a[0].shape[1]))
    try:
        with tracing("r", clip.sample_id) as rec:
            vt, stats = m.visual_tokens(model, frames_of(clip), clip.modality, clip)
    finally:
        hook.remove()
    df = rec.to_polars()
    dec = df.filter((df["site"] == "sttf.gate") & (df["kind"] == "decision"))
    per_frame = dec.group_by("frame").agg((pl.col("value") == DECISIONS["recomputed"]).sum().alias("n")).sort("frame")
    assert per_frame["n"].to_list() == stats.tokens_computed.tolist()
    assert stats.tokens_computed[0] == 196 and stats.tokens_computed[1:].max() < 196
    assert vt.counts()[0] == stats.tokens_to_decoder.sum()
    if branch == "light":
        assert seen == []  # the light branch runs no encoder block
    else:
        assert seen[0] == 196 and sorted(seen[1:]) == sorted(int(k) for k in stats.tokens_computed[1:] if k)


def test_fewer_tokens_than_either_method_alone(model, module, clip):
    anc = ANC(module, ANCConfig())
    both = STTFANC(anc, STTFConfig(tau=0.05))
    _, s_both = both.visual_tokens(model, frames_of(clip), clip.modality, clip)
    _, s_anc = anc.visual_tokens(model, frames_of(clip), clip.modality, clip)
    _, s_sttf = STTF(STTFConfig(tau=0.05)).visual_tokens(model, frames_of(clip), clip.modality, clip)
    assert s_both.tokens_computed.sum() <= s_anc.tokens_computed.sum()
    route = anc.route(model, frames_of(clip), clip.modality)
    skip = route.choices == BRANCHES.index("skip")
    assert (s_both.tokens_computed[skip] == 0).all()
    assert s_both.tokens_computed[~skip].sum() <= s_sttf.tokens_computed[~skip].sum() + 196 * (~skip).sum()


def test_counted_flops_match_the_real_run_and_analytic_estimate(model, module, clip):
    m = STTFANC(ANC(module, ANCConfig(forced="medium", first_frame="full")), STTFConfig(tau=0.05))
    vt_c, counted = m.visual_tokens(model, frames_of(clip), clip.modality, clip, count=True)
    vt, est = m.visual_tokens(model, frames_of(clip), clip.modality, clip)
    assert torch.equal(vt_c.embeds, vt.embeds)  # counting never changes the output
    assert np.array_equal(counted.tokens_computed, est.tokens_computed)
    rel = np.abs(counted.encoder_flops - est.encoder_flops) / counted.encoder_flops
    assert rel.max() < 0.25, rel  # analytic estimate ∝ tokens; attention over cached keys is the gap


def test_event_source_and_trace_is_output_neutral(model, module):
    c = gestures.make_gesture_clip(1, n_frames=8)
    m = STTFANC(ANC(module, ANCConfig()), STTFConfig(source="events", tau=0.2))
    plain = describe(model, c, m)
    traced = describe(model, c, m, trace=True)
    assert plain.caption == traced.caption and plain.gesture == traced.gesture
    kinds = set(traced.trace["kind"].unique())
    assert {"route_prob", "route_choice", "change_score", "decision", "ref_age"} <= kinds
    probs = traced.trace.filter(traced.trace["kind"] == "route_prob")
    sums = probs.group_by("frame").agg(pl.col("value").sum().alias("s"))["s"].to_numpy()
    assert np.allclose(sums, 1.0, atol=1e-5)


def test_frame_with_no_changed_patch_costs_nothing(model, module):
    c = shapesworld.make_clip(1, num_frames=6)  # a static clip: nothing changes after frame 0
    m = STTFANC(ANC(module, ANCConfig(forced="full")), STTFConfig(tau=0.05))
    vt, stats = m.visual_tokens(model, frames_of(c), c.modality, c, count=True)
    assert stats.tokens_computed[0] == 196 and (stats.tokens_computed[1:] == 0).all()
    router = m.anc.costs(model, c.modality)["router"]
    assert np.allclose(stats.encoder_flops[1:], router)
    assert vt.counts()[0] == 196  # every run fused into frame 0's tokens
