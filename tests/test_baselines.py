"""The encoder-side baselines (ToMe, Eventful, VisionZip, random selection, uniform pooling) and the budget
matching of every method (`methods/budget.py`): exact at zero compression, budgets met or the achieved one
reported, ToMe's sizes and sources consistent, FLOPs counted = analytic, savings real, deterministic."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from workbench.data.shapesworld import make_clip
from workbench.methods.baseline import measured
from workbench.methods.budget import at_budget, method_from_config
from workbench.methods.eventful import Eventful, EventfulConfig, k_for_budget
from workbench.methods.ops.spatial import grid_for_budget
from workbench.methods.pooling import Pool, PoolConfig
from workbench.methods.random_select import RandomSelect, RandomSelectConfig
from workbench.methods.tome import ToMe, ToMeConfig
from workbench.methods.visionzip import VisionZip, VisionZipConfig
from workbench.models.registry import create_model
from workbench.models.tinyvlm import TinyVLM
from workbench.pipeline import Dense, describe

T = 8
N = 196


@pytest.fixture(scope="module")
def debug(one_torch_thread):
    return create_model("tinyvlm-debug")


@pytest.fixture(scope="module")
def deep(one_torch_thread):
    """A random TinyVLM with 4 encoder blocks (ToMe needs depth to reach low budgets) and 4 decoder layers."""
    torch.manual_seed(0)
    cfg = replace(create_model("tinyvlm-debug").cfg, enc_depth=4, dec_depth=4, name="tinyvlm-debug-deep")
    return TinyVLM(cfg).eval()


@pytest.fixture(scope="module")
def clip():
    return make_clip(3, T)


def frames_of(clip):
    return torch.from_numpy(np.ascontiguousarray(clip.frames))[None]


ZERO = [ToMe(ToMeConfig(r=0)), ToMe(ToMeConfig(budget=N, schedule="decreasing")), Eventful(EventfulConfig(k=N)),
        Eventful(EventfulConfig(policy="threshold", tau=0.0)), VisionZip(VisionZipConfig(budget=N)),
        RandomSelect(RandomSelectConfig(budget=N)), RandomSelect(RandomSelectConfig(budget=N, where="input")),
        Pool(PoolConfig(budget=N))]


@pytest.mark.parametrize("method", ZERO, ids=lambda m: f"{m.name}-{'-'.join(str(v) for v in m.config().values())}")
def test_zero_compression_is_dense_bit_for_bit(method, deep, clip):
    fr = frames_of(clip)
    dense, _ = Dense().visual_tokens(deep, fr, "rgb")
    vt, stats = method.visual_tokens(deep, fr, "rgb")
    for name in ("embeds", "patch", "t_start", "t_end", "size"):
        assert torch.equal(getattr(vt, name), getattr(dense, name)), name
    assert describe(deep, clip, method).caption == describe(deep, clip, Dense()).caption
    assert stats.tokens_to_decoder.tolist() == [N] * T


@pytest.mark.parametrize("budget", [98, 49, 31, 16])
def test_budgets_are_met_or_the_achieved_one_is_what_is_reported(budget, deep, clip):
    rows, cols = grid_for_budget(14, budget)
    temporal = (N + (T - 1) * k_for_budget(budget, T, N)) / T  # frame 0 dense, k per later frame
    expect = {"tome": budget, "visionzip": budget, "random": budget, "pool": rows * cols, "eventful": temporal,
              "sttf": temporal}
    for name, want in expect.items():
        d = describe(deep, clip, at_budget(name, budget, deep, frames=T))
        assert d.tokens_per_frame == pytest.approx(want), name
        assert d.stats.tokens_to_decoder.sum() == d.tokens_to_decoder  # what the decoder got, per frame
    tome = at_budget("tome", budget, deep, {"schedule": "decreasing"})
    assert describe(deep, clip, tome).tokens_per_frame == budget
    for name in ("fastv", "sparsevlm", "random-prune"):  # the paper's count: mean over decoder sublayers
        d = describe(deep, clip, at_budget(name, budget, deep))
        assert d.decoder_keep * d.tokens_per_frame == pytest.approx(budget, abs=0.6), name
        assert d.last_layer_tokens_per_frame <= budget
    # one encoder block can merge at most half: ToMe reports the 98 it reached, not the budget asked for
    assert describe(create_model("tinyvlm-debug"), clip, ToMe(ToMeConfig(budget=budget))).tokens_per_frame == 98


def test_tome_sizes_sum_to_the_tokens_and_sources_agree(deep, clip):
    run, _, _ = measured(lambda: ToMe(ToMeConfig(budget=31)).work(deep, frames_of(clip), "rgb"), False)
    size = run.vt.size[0]
    assert float(size.sum()) == T * N
    per_frame = torch.bincount(run.vt.t_start[0], weights=size)
    assert per_frame.tolist() == [float(N)] * T
    owned = torch.bincount(run.owner.flatten(), minlength=run.vt.num_tokens).float()
    assert torch.equal(owned, size)  # every token's size = the patches whose merge source it is
    assert int(run.codes.eq(2).sum()) == int((size[run.owner.flatten()] > 1).sum())
    # a merged token sits at one of its own patches, and every patch's token is in its own frame
    rows = run.owner // 31
    assert torch.equal(rows, torch.arange(T)[:, None].expand(-1, N))
    for tok in range(0, run.vt.num_tokens, 17):
        f, p = int(run.vt.t_start[0, tok]), int(run.vt.patch[0, tok])
        assert run.owner[f, p] == tok


@pytest.mark.parametrize("method", [ToMe(ToMeConfig(budget=31)), ToMe(ToMeConfig(budget=16, schedule="decreasing")),
                                    Eventful(EventfulConfig(budget=31)), Eventful(EventfulConfig(policy="threshold", tau=1.0)),
                                    VisionZip(VisionZipConfig(budget=31)), RandomSelect(RandomSelectConfig(budget=31)),
                                    RandomSelect(RandomSelectConfig(budget=31, where="input")), Pool(PoolConfig(budget=31))],
                         ids=lambda m: m.name)
def test_flopcounter_equals_the_analytic_count_and_savings_are_real(method, deep, clip):
    fr = frames_of(clip)
    run, flops, _ = measured(lambda: method.work(deep, fr, "rgb"), True)
    analytic = run.analytic.sum()
    assert abs(flops - analytic) <= 0.02 * analytic, (flops, analytic)
    _, dense_stats = Dense().visual_tokens(deep, fr, "rgb", count=True)
    dense = dense_stats.encoder_flops.sum()
    if method.name in ("tome", "eventful") or getattr(method.cfg, "where", "") == "input":
        assert flops < 0.75 * dense  # merged / gated / dropped tokens are not computed
    elif method.name == "visionzip":
        assert dense < flops < 1.1 * dense  # the encoder runs densely, plus its scoring
    else:
        assert flops == dense


def test_same_seed_same_tokens_other_seed_other_tokens(deep, clip):
    fr = frames_of(clip)
    a = RandomSelect(RandomSelectConfig(budget=31, seed=1)).visual_tokens(deep, fr, "rgb")[0]
    b = RandomSelect(RandomSelectConfig(budget=31, seed=1)).visual_tokens(deep, fr, "rgb")[0]
    c = RandomSelect(RandomSelectConfig(budget=31, seed=2)).visual_tokens(deep, fr, "rgb")[0]
    assert torch.equal(a.embeds, b.embeds) and not torch.equal(a.patch, c.patch)
    for m in (ToMe(ToMeConfig(budget=31)), VisionZip(VisionZipConfig(budget=31)), Eventful(EventfulConfig(budget=31))):
        x, y = m.visual_tokens(deep, fr, "rgb")[0], m.visual_tokens(deep, fr, "rgb")[0]
        assert torch.equal(x.embeds, y.embeds) and torch.equal(x.size, y.size), m.name


def test_trace_has_decisions_and_tokens_per_encoder_layer(deep, clip):
    d = describe(deep, clip, ToMe(ToMeConfig(budget=31)), trace=True)
    tr = d.trace
    dec = tr.filter((tr["kind"] == "decision") & (tr["site"] == "tome.tokens"))
    assert dec.height == T * N and set(dec["value"].unique().to_list()) <= {2.0, 4.0}
    tin = tr.filter((tr["kind"] == "tokens_in") & (tr["site"] == "tome.encoder")).sort(["layer", "frame"])
    tout = tr.filter((tr["kind"] == "tokens_out") & (tr["site"] == "tome.encoder")).sort(["layer", "frame"])
    assert tin.height == 4 * T and tout.filter(tout["layer"] == 3)["value"].to_list() == [31.0] * T
    assert tin.filter(tin["layer"] == 0)["value"].to_list() == [float(N)] * T
    vz = describe(deep, clip, VisionZip(VisionZipConfig(budget=16)), trace=True).trace
    codes = vz.filter((vz["kind"] == "decision") & (vz["site"] == "visionzip.tokens"))["value"]
    assert int((codes == 4).sum()) == T * VisionZipConfig(budget=16).split(N)[0]


def test_configs_round_trip_through_the_sweep_rebuild(deep):
    for name in ("sttf", "tome", "eventful", "visionzip", "random", "pool", "fastv", "sparsevlm", "random-prune"):
        m = at_budget(name, 31, deep, frames=T)
        assert method_from_config(name, m.config()).config() == m.config(), name


def test_the_baselines_run_on_a_hugging_face_tower_through_the_same_interface(hf_tiny_models, clip):
    """SigLIP (LLaVA-OneVision, tiny random): every baseline at zero compression is the unmodified HF tower bit for
    bit, and compresses at a budget; towers the baselines cannot serve say why (Qwen2-VL's 2-D RoPE rows for ToMe,
    CLIP's CLS token)."""
    from workbench.pipeline import model_frames
    m = hf_tiny_models["onevision"]
    fr = model_frames(m, clip)
    n = m.cfg.num_patches
    dense, _ = Dense().visual_tokens(m, fr, "rgb")
    for name in ("tome", "eventful", "visionzip", "random", "pool"):
        vt, _ = at_budget(name, n, m, frames=fr.shape[1]).visual_tokens(m, fr, "rgb")
        assert torch.equal(vt.embeds, dense.embeds), name
        small, _ = at_budget(name, n // 4, m, frames=fr.shape[1]).visual_tokens(m, fr, "rgb")
        assert small.num_tokens < dense.num_tokens, name
    with pytest.raises(ValueError, match="RoPE"):
        q = hf_tiny_models["qwen2vl"]
        at_budget("tome", 4, q).visual_tokens(q, model_frames(q, clip), "rgb")
    with pytest.raises(ValueError, match="CLS"):
        v = hf_tiny_models["llava"]
        at_budget("visionzip", 4, v).visual_tokens(v, model_frames(v, clip), "rgb")


def test_a_budget_below_the_keyframe_floor_is_as_close_as_sttf_gets(deep, clip):
    for knobs in ({}, {"policy": "budget"}):  # top-k (k = 0) and the calibrated threshold (only keyframes)
        d = describe(deep, clip, at_budget("sttf", 16, deep, knobs, frames=T))  # 8 frames: frame 0 alone is 24.5
        assert d.tokens_per_frame == pytest.approx(N / T), knobs
