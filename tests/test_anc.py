"""ANC on the debug TinyVLM: exactness of `full`, FLOPs accounting, routing, tracing, checkpoints, stage 3."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.data import gestures, shapesworld
from workbench.errors import CheckpointError
from workbench.eval.flops import count_flops
from workbench.methods.anc import ANC, ANCConfig, apply, route_clip, shipped_path
from workbench.methods.anc_modules import (BRANCHES, FULL, SKIP, ANCModule, BranchCache, load_anc,
                                           read_anc_metadata, run_branch, save_anc)
from workbench.models.config import TinyVLMConfig
from workbench.models.registry import create_model
from workbench.models.tinyvlm import TinyVLM
from workbench.pipeline import Dense, describe, detach
from workbench.trace import read_trace, write_trace, tracing


@pytest.fixture(scope="module")
def model():
    return create_model("tinyvlm-debug")


@pytest.fixture(scope="module")
def module(model):
    m = ANCModule.for_model(model, seed=1)
    with torch.no_grad():  # non-trivial adapters (fc2 starts at zero) so light/medium differ from identity
        for p in list(m.light.fc2.parameters()) + list(m.medium.fc2.parameters()):
            p.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
    return m


@pytest.fixture(scope="module")
def clip():
    return shapesworld.make_clip(1, num_frames=8)


@pytest.fixture(scope="module")
def event_clip():
    return gestures.make_gesture_clip(0, n_frames=8)


def frames_of(c):
    return torch.from_numpy(c.frames)[None]  # (1, T, C, H, W)


# ---- exactness -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["clip", "event_clip"])
def test_forced_full_is_exactly_dense(model, module, which, request):
    c = request.getfixturevalue(which)
    anc = ANC(module, ANCConfig(forced="full"))
    vt, stats = anc.visual_tokens(model, frames_of(c), c.modality, c)
    dense, _ = Dense().visual_tokens(model, frames_of(c), c.modality, c)
    assert torch.equal(vt.embeds, dense.embeds)
    assert torch.equal(vt.patch, dense.patch) and torch.equal(vt.t_start, dense.t_start)
    assert describe(model, c, method=anc).caption == describe(model, c).caption
    assert (stats.tokens_computed == model.cfg.num_patches).all()


def test_forced_skip_reuses_frame_zero(model, module, clip):
    vt, stats = ANC(module, ANCConfig(forced="skip")).visual_tokens(model, frames_of(clip), "rgb", clip)
    enc = vt.embeds.view(clip.num_frames, model.cfg.num_patches, -1)
    assert torch.equal(enc[0], model.encode(frames_of(clip)[:, :1], "rgb")[0, 0])  # frame 0 in full
    assert all(torch.equal(enc[t], enc[0]) for t in range(1, clip.num_frames))
    assert stats.tokens_computed.tolist() == [196] + [0] * (clip.num_frames - 1)
    assert stats.tokens_to_decoder.tolist() == [196] * clip.num_frames


@pytest.mark.parametrize("name", ["light", "medium"])
def test_forced_branch_matches_run_branch_per_frame(model, module, clip, name):
    vt, _ = ANC(module, ANCConfig(forced=name)).visual_tokens(model, frames_of(clip), "rgb", clip)
    one, n = run_branch(model, module, name, frames_of(clip)[0, 3:4], "rgb")
    assert n == 196
    assert torch.allclose(vt.embeds.view(clip.num_frames, 196, -1)[3], one[0], atol=1e-5)


def test_partial_branch_computes_only_selected_tokens(model, module, clip):
    f0, f1 = frames_of(clip)[0, :1], frames_of(clip)[0, 5:6]
    cache = BranchCache.empty(len(model.encoder.blocks))
    prev, n0 = run_branch(model, module, "full", f0, "rgb", cache=cache)
    assert torch.equal(prev, model.encoder(f0, "rgb"))  # the cache-filling dense path is exact too
    idx = torch.tensor([0, 17, 100])
    for name in ("light", "medium", "full"):
        out, k = run_branch(model, module, name, f1, "rgb", prev, idx, cache=BranchCache(list(cache.k), list(cache.v)))
        rest = torch.ones(196, dtype=torch.bool)
        rest[idx] = False
        assert k == 3 and torch.equal(out[:, rest], prev[:, rest])
    light_all, _ = run_branch(model, module, "light", f1, "rgb")
    light_part, _ = run_branch(model, module, "light", f1, "rgb", prev, idx)
    assert torch.allclose(light_part[:, idx], light_all[:, idx], atol=1e-5)  # token-wise branch: exact per token
    # recomputing every token of the same frame over its own cache reproduces the dense frame
    full_again, _ = run_branch(model, module, "full", f0, "rgb", prev, torch.arange(196), cache=cache)
    assert torch.allclose(full_again, prev, atol=1e-5)
    # without a cache, blocks cannot run partially: falls back to a dense run
    out, k = run_branch(model, module, "full", f1, "rgb", prev, idx)
    assert k == 196 and torch.equal(out, model.encoder(f1, "rgb"))
    assert run_branch(model, module, "skip", f1, "rgb", prev)[1] == 0
    with pytest.raises(ValueError):
        run_branch(model, module, "skip", f1, "rgb")


# ---- routing -------------------------------------------------------------------------------------------------

@settings(max_examples=12, deadline=None)
@given(temperature=st.sampled_from([0.05, 0.2, 0.5, 1.0, 2.0, 10.0]), seed=st.integers(0, 3))
def test_router_outputs_valid_distributions(temperature, seed):
    model = create_model("tinyvlm-debug")
    module = ANCModule.for_model(model, seed=seed)
    frames = torch.from_numpy(shapesworld.make_clip(seed, num_frames=5).frames)
    r = route_clip(module, frames, "rgb", ANCConfig(temperature=temperature))
    assert np.isfinite(r.probs).all() and (r.probs >= 0).all()
    assert np.allclose(r.probs.sum(1), 1.0, atol=1e-5)
    assert r.probs[0, SKIP] == 0.0 and r.choices[0] != SKIP  # never skip frame 0
    assert r.features.shape == (5, module.cfg.n_features)


def test_routing_is_deterministic_and_hysteresis_freezes_decisions(model, module, clip, event_clip):
    for c in (clip, event_clip):
        x = frames_of(c)[0]
        a = route_clip(module, x, c.modality)
        b = route_clip(module, x, c.modality)
        assert np.array_equal(a.choices, b.choices) and np.array_equal(a.probs, b.probs)
        frozen = route_clip(module, x, c.modality, ANCConfig(hysteresis=1.0))
        assert len(set(frozen.choices.tolist())) == 1 and frozen.choices[0] == a.choices[0]


def test_cost_bias_moves_routing_towards_cheap_branches(model, module, clip):
    anc = ANC(module)
    base = anc.route(model, frames_of(clip), "rgb")
    cheap = anc.with_config(cost_bias=100.0, hysteresis=0.0, first_frame=None).route(model, frames_of(clip), "rgb")
    assert (cheap.choices[1:] == SKIP).all() and cheap.choices[0] == BRANCHES.index("light")
    assert base.choices[0] == FULL  # the default keyframe
    assert base.choices.shape == cheap.choices.shape


def test_config_validation():
    with pytest.raises(ValueError):
        ANCConfig(temperature=0)
    with pytest.raises(ValueError):
        ANCConfig(hysteresis=-1)
    with pytest.raises(ValueError):
        ANCConfig(forced="huge")


# ---- FLOPs accounting ----------------------------------------------------------------------------------------

def _full_size_model() -> TinyVLM:
    torch.manual_seed(0)
    return TinyVLM(TinyVLMConfig(vocab=("a", "b"), gesture_classes=tuple(gestures.GESTURE_CLASSES))).eval()


@pytest.mark.parametrize("size", ["debug", "full"])
@pytest.mark.parametrize("modality", ["rgb", "events"])
def test_branch_flops_match_flop_counter_and_analytic(size, modality, model):
    m = model if size == "debug" else _full_size_model()
    anc = ANC(ANCModule.for_model(m))
    measured, analytic = anc.costs(m, modality), anc.analytic_costs(m, modality)
    for name in (*BRANCHES, "router"):
        assert measured[name] == pytest.approx(analytic[name], rel=0.01), name
    c = 3 if modality == "rgb" else 2
    frame = torch.rand(1, c, 112, 112)
    assert measured["full"] == count_flops(m.encoder, frame, modality)[1]  # same as the dense encoder
    if size == "full":  # the design targets on the full-size model
        assert 0.07 < measured["light"] / measured["full"] < 0.12
        assert 0.45 < measured["medium"] / measured["full"] < 0.6


def test_counted_run_flops_follow_the_route(model, module, clip):
    anc = ANC(module)
    vt, stats = anc.visual_tokens(model, frames_of(clip), "rgb", clip, count=True)
    route = anc.route(model, frames_of(clip), "rgb")
    costs = anc.costs(model, "rgb")
    want = np.array([costs[BRANCHES[k]] + costs["router"] for k in route.choices], dtype=float)
    assert np.allclose(stats.encoder_flops, want, rtol=1e-6)
    _, uncounted = anc.visual_tokens(model, frames_of(clip), "rgb", clip, count=False)
    assert np.allclose(uncounted.encoder_flops, want, rtol=1e-6)
    assert stats.tokens_computed.tolist() == [0 if k == SKIP else 196 for k in route.choices]


# ---- tracing -------------------------------------------------------------------------------------------------

def test_trace_round_trip_and_trace_is_read_only(model, module, clip, tmp_path):
    anc = ANC(module, ANCConfig(hysteresis=0.0))
    plain = describe(model, clip, method=anc)
    traced = describe(model, clip, method=anc, trace=True)
    assert traced.caption == plain.caption
    with tracing("r", clip.sample_id):
        vt_on, _ = anc.visual_tokens(model, frames_of(clip), "rgb", clip)
    vt_off, _ = anc.visual_tokens(model, frames_of(clip), "rgb", clip)
    assert torch.equal(vt_on.embeds, vt_off.embeds)
    path = tmp_path / "anc.parquet"
    write_trace(traced.trace, path, traced.run)
    df, run = read_trace(path)
    assert df.equals(traced.trace) and run["method"] == "anc"
    t_len, k = clip.num_frames, len(BRANCHES)
    probs = df.filter(df["kind"] == "route_prob").sort("frame", "target")
    assert probs.height == t_len * k
    assert np.allclose(probs["value"].to_numpy().reshape(t_len, k).sum(1), 1.0, atol=1e-5)
    choice = df.filter(df["kind"] == "route_choice").sort("frame")
    route = anc.route(model, frames_of(clip), "rgb")
    assert choice["target"].to_list() == route.choices.tolist()
    feats = df.filter(df["kind"] == "router_feature")
    assert feats.height == t_len * module.cfg.n_features and feats["token"].max() == module.cfg.n_features - 1
    assert df.filter(df["kind"] == "flops").height == t_len
    assert set(df.filter(df["kind"] == "latency_ms")["site"].to_list()) >= {"anc.router", "anc.branch"}


# ---- apply / checkpoints -------------------------------------------------------------------------------------

def test_apply_attaches_and_needs_weights(model, module, clip):
    try:
        assert apply(model, ANCConfig(forced="full"), module=module) is model
        m1 = model.compression
        apply(model, ANCConfig(forced="full"), module=module)  # safe twice: replaces
        assert isinstance(model.compression, ANC) and model.compression is not m1
        assert describe(model, clip).method == "anc"
        assert "anc" not in "".join(model.state_dict())  # the router never leaks into the base checkpoint
    finally:
        detach(model)
    assert not shipped_path(model).is_file()
    with pytest.raises(CheckpointError):
        apply(model)
    wrong = ANCModule.for_model(_full_size_model())
    with pytest.raises(CheckpointError):
        apply(model, module=wrong)
    detach(model)


def test_save_load_round_trip(model, module, clip, tmp_path):
    path = tmp_path / "anc.safetensors"
    save_anc(module, path, {"steps": 7})
    back = load_anc(path)
    assert back.cfg == module.cfg
    sd0, sd1 = module.state_dict(), back.state_dict()
    assert sd0.keys() == sd1.keys() and all(torch.equal(sd0[k], sd1[k]) for k in sd0)
    meta = read_anc_metadata(path)
    assert meta["steps"] == 7 and meta["config"]["enc_dim"] == model.cfg.enc_dim
    a, _ = ANC(module).visual_tokens(model, frames_of(clip), "rgb", clip)
    b, _ = ANC(back).visual_tokens(model, frames_of(clip), "rgb", clip)
    assert torch.equal(a.embeds, b.embeds)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        load_anc(bad)
    with pytest.raises(CheckpointError):
        load_anc(tmp_path / "missing.safetensors")


# ---- stage 3 -------------------------------------------------------------------------------------------------

def test_stage3_two_step_smoke(tmp_path):
    from workbench.training.stage3 import Stage3Config, train_stage3
    model = create_model("tinyvlm-debug")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = Stage3Config(steps=2, batch_size=2, num_frames=4, gesture_every=2, eval_every=2, eval_clips=2,
                       threads=1, progress=False)
    out = tmp_path / "anc-debug.safetensors"
    rec = train_stage3(cfg, model, out)
    assert out.is_file() and rec["step"] == 2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # base stays frozen
    module = load_anc(out)
    meta = read_anc_metadata(out)
    assert meta["stage"] == 3 and meta["train_config"]["lam_stab"] == cfg.lam_stab
    init = ANCModule.for_model(model, seed=cfg.seed)
    assert not torch.equal(init.router.net[0].weight, module.router.net[0].weight)  # the router trained
    rows = [json.loads(line) for line in out.with_suffix(".log.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    assert len(train) == 2 and {r["modality"] for r in train} == {"rgb", "events"}
    assert all(np.isfinite(r["loss"]) for r in train)
    assert "gesture" in rec["routing"] and 0 <= rec["routing"]["gesture"]["flops_frac"] <= 1.5



def test_stage3_router_phase_freezes_adapters_and_skips_the_decoder(tmp_path):
    """Phase b: a fresh router on phase a's adapters; adapters unchanged, no task loss, oracle term logged."""
    from workbench.training.stage3 import Stage3Config, router_phase, train_stage3
    model = create_model("tinyvlm-debug")
    cfg = Stage3Config(steps=2, router_steps=3, batch_size=2, num_frames=4, gesture_every=2, eval_clips=2,
                       threads=1, progress=False, max_minutes=None)
    a = tmp_path / "a.safetensors"
    train_stage3(cfg, model, a)
    phase_b = router_phase(cfg, a)
    assert phase_b.router_only and phase_b.reset_router and phase_b.lam_task == 0 and phase_b.steps == 3
    b = tmp_path / "b.safetensors"
    train_stage3(phase_b, model, b, log_path=tmp_path / "b.router.log.jsonl")
    ma, mb = load_anc(a), load_anc(b)
    for name in ("light", "medium"):
        sa, sb = getattr(ma, name).state_dict(), getattr(mb, name).state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(ma.router.net[0].weight, mb.router.net[0].weight)
    rows = [json.loads(line) for line in (tmp_path / "b.router.log.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    assert len(train) == 3 and all(r["task"] == 0.0 and r["oracle"] > 0 for r in train)


@pytest.mark.parametrize("explore", [True, False])
def test_stage3_oracle_term_is_the_cross_entropy_to_the_cheapest_branch(explore):
    """λ_oracle only adds its term; with explore=False the chain follows the router's argmax."""
    from workbench.training.stage3 import Stage3Config, batch_for_step, losses
    from workbench.methods.anc import ANC, relative_costs
    model = create_model("tinyvlm-debug")
    module = ANCModule.for_model(model, seed=0)
    cfg = Stage3Config(batch_size=2, num_frames=4, gesture_every=2, lam_task=0.0, explore=explore)
    batch = batch_for_step(cfg, model, 0)
    rel = relative_costs(ANC(module).costs(model, batch.modality))
    run = lambda c: losses(model, module, batch, c, rel, torch.Generator().manual_seed(0))  # noqa: E731
    with_o, without = run(cfg), run(replace(cfg, lam_oracle=0.0))
    assert float(with_o["oracle"]) > 0 and float(without["oracle"]) == 0
    expect = float(without["loss"]) + cfg.lam_oracle * float(with_o["oracle"])
    assert abs(float(with_o["loss"]) - expect) < 1e-5 * max(1.0, abs(expect))
    if not explore:  # deterministic: no Gumbel noise reaches the decisions
        assert run(cfg)["mix"] == with_o["mix"]

# ---- shipped weights -----------------------------------------------------------------------------------------

def _shipped():
    from workbench.models.registry import weights_dir
    return (weights_dir() / "tinyvlm-shapes.safetensors").is_file() and \
        (weights_dir() / "anc-tinyvlm-shapes.safetensors").is_file()


@pytest.mark.skipif(not _shipped(), reason="shipped tinyvlm-shapes + anc-tinyvlm-shapes weights not present yet")
def test_shipped_router_is_cheap_on_static_and_expensive_on_motion():
    model = create_model("tinyvlm-shapes")
    anc = apply(model).compression
    try:
        levels: dict[str, list] = {"static": [], "high": []}
        for seed in shapesworld.split_seeds("test", 80):
            c = shapesworld.make_clip(seed)
            lvl = c.meta["motion_level"]
            if lvl in levels and len(levels[lvl]) < 4:
                levels[lvl].append(anc.route(model, frames_of(c), "rgb").choices)
        static = np.concatenate([ch[1:] for ch in levels["static"]])
        high = np.concatenate([ch[1:] for ch in levels["high"]])
        cheap = lambda ch: np.isin(ch, [SKIP, BRANCHES.index("light")]).mean()  # noqa: E731
        costly = lambda ch: np.isin(ch, [BRANCHES.index("medium"), FULL]).mean()  # noqa: E731
        assert cheap(static) > 0.5
        assert costly(high) > costly(static)
    finally:
        detach(model)


@pytest.mark.skipif(not _shipped(), reason="shipped tinyvlm-shapes + anc-tinyvlm-shapes weights not present yet")
def test_shipped_router_full_probability_grows_with_motion():
    """The shipped router's probability of the full branch is higher on high-motion clips than on static ones."""
    model = create_model("tinyvlm-shapes")
    anc = apply(model).compression
    try:
        p_full: dict[str, list] = {"static": [], "high": []}
        for seed in shapesworld.split_seeds("test", 80):
            c = shapesworld.make_clip(seed)
            lvl = c.meta["motion_level"]
            if lvl in p_full and len(p_full[lvl]) < 4:
                p_full[lvl].append(anc.route(model, frames_of(c), "rgb").probs[1:, FULL].mean())
        assert np.mean(p_full["high"]) > 2 * np.mean(p_full["static"])
    finally:
        detach(model)


@pytest.mark.skipif(not _shipped(), reason="shipped tinyvlm-shapes + anc-tinyvlm-shapes weights not present yet")
def test_shipped_router_keeps_caption_quality_on_low_motion():
    """What the phase-c decoder loses to stale frames (README, ANC): the shipped router (staleness oracle) refreshes
    a moving clip within its budget and keeps CIDEr on low-motion test clips. The router it replaced reused frame 0
    for the whole clip (longest skip run 15) at 0.80 of dense CIDEr on these ten clips; this one scores 1.03."""
    from workbench.eval.evaluate import caption_eval
    model = create_model("tinyvlm-shapes")
    anc = ANC(load_anc(shipped_path(model)), ANCConfig())
    clips = [c for c in (shapesworld.make_clip(s) for s in shapesworld.split_seeds("test", 200))
             if c.meta["motion_level"] == "low"][:10]
    seeds = [c.meta["seed"] for c in clips]
    dense = caption_eval(model, seeds, Dense(), progress=False).scores.cider
    routed = caption_eval(model, seeds, anc, progress=False).scores.cider
    assert routed >= 0.95 * dense, (routed, dense)
    longest = []
    for c in clips:
        run = best = 0
        for choice in anc.route(model, frames_of(c), "rgb").choices[1:]:
            run = run + 1 if choice == SKIP else 0
            best = max(best, run)
        longest.append(best)
    assert max(longest) <= 8 and np.mean(longest) < 8  # the reference is refreshed, not reused for 15 frames
