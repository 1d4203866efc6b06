"""Decoder-side pruning (SparseVLM, FastV, random): exact at keep-all, pruned tokens really gone from the hidden
states and caches, batch = singles with ragged keep sets, deterministic recycling, the rater and rank rules on
hand-made matrices, FlopCounterMode = the analytic count, and the knob errors."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from workbench.data.shapesworld import make_clip
from workbench.errors import InputError
from workbench.methods.fastv import FastV, FastVConfig
from workbench.methods.ops.prune import (column_scores, dpc_knn, numerical_rank, rank_keep, rater_relevance,
                                         recycle, select_raters, top_slots)
from workbench.methods.random_prune import RandomPrune, RandomPruneConfig
from workbench.methods.sparsevlm import SparseVLM, SparseVLMConfig
from workbench.methods.sttf import STTF, STTFConfig
from workbench.models.decoder_protocol import keep_fraction, solve_fractions, sublayer_counts, validate_points
from workbench.models.decoding import prefill
from workbench.models.registry import create_model
from workbench.models.tinyvlm import TinyVLM
from workbench.pipeline import Dense, Stack, describe
from workbench.trace.schema import DECISIONS

Q = "what color is the star"


@pytest.fixture(scope="module")
def model() -> TinyVLM:
    """A random TinyVLM with the shipped model's 4-layer decoder (small widths: fast)."""
    torch.manual_seed(0)
    return TinyVLM(replace(create_model("tinyvlm-debug").cfg, dec_depth=4, name="tinyvlm-debug4")).eval()


@pytest.fixture(scope="module")
def vts(model):
    return [model.encode_dense(torch.from_numpy(make_clip(s, num_frames=8).frames)[None], "rgb") for s in (0, 3, 5)]


@torch.no_grad()
def _pruned_run(model, vt, method, prompt=Q):
    ids = torch.tensor(model.tokenizer.prompt_ids(prompt))[None].expand(vt.embeds.shape[0], -1)
    return prefill(model.decoder, model.sequence(vt, ids), model.key_bias(vt, ids.shape[1]), vt,
                   method.plan(len(model.decoder.blocks)), method.name)


NOOPS = [SparseVLM(SparseVLMConfig(keep=1.0)), SparseVLM(SparseVLMConfig(keep=1.0, rule="rank")),
         SparseVLM(SparseVLMConfig(budgets=(1.0, 1.0, 1.0), points=(0, 1.5, 2.5))), FastV(FastVConfig(R=0.0)),
         FastV(FastVConfig(K=1.0, keep=1.0)), RandomPrune(RandomPruneConfig(keep=1.0))]


@pytest.mark.parametrize("method", NOOPS, ids=lambda m: f"{m.name}-{getattr(m.cfg, 'rule', '')}")
def test_keep_all_is_dense_bit_for_bit(model, vts, method):
    vt = vts[0]
    dense = model.generate(vt, Q, max_new_tokens=8)
    out = model.generate(vt, Q, pruner=method, max_new_tokens=8)
    assert out.ids == dense.ids and out.texts == dense.texts
    assert torch.equal(out.first_logits, dense.first_logits) and torch.equal(out.sep_hidden, dense.sep_hidden)


def test_keep_all_on_the_shipped_model_and_through_describe():
    m = create_model("tinyvlm-shapes")
    clip = make_clip(2, num_frames=8)
    for method in (SparseVLM(SparseVLMConfig(keep=1.0)), Stack(STTF(STTFConfig(tau=0.0)), FastV(FastVConfig(R=0.0)))):
        a, b = describe(m, clip, Dense(), prompt=Q), describe(m, clip, method, prompt=Q)
        assert a.caption == b.caption and b.decoder_keep == 1.0


@pytest.mark.parametrize("points", [(0.5, 1.5, 2.5), (0, 1.5, 2.5), (1.0, 2.0, 3.0)])
def test_pruned_tokens_leave_hidden_states_and_caches(model, vts, points):
    vt = vts[1]
    m, n_text = vt.num_tokens, 1 + len(model.tokenizer.prompt_ids(Q))
    run = _pruned_run(model, vt, SparseVLM(SparseVLMConfig(points=points, budgets=(0.3, 0.1, 0.05))))
    counts = run.stats.sublayer[0].tolist()
    assert counts == sublayer_counts(points, [counts[int(2 * p)] for p in points], m, 4)
    assert run.hidden.shape[1] == n_text + int(run.stats.final[0])  # the final sequence holds only what is left
    for layer, cache in enumerate(run.caches):  # each layer's cache = the tokens that layer attended over
        n = int(counts[2 * layer])
        assert cache["k"].shape[2] == cache["v"].shape[2] == cache["kb"].shape[1] == n + n_text
    assert run.caches[3]["k"].shape[2] < 0.1 * (m + n_text)
    assert run.stats.final[0] <= 0.05 * m + 2


def test_decoding_after_pruning_uses_the_pruned_cache(model, vts):
    method = SparseVLM(SparseVLMConfig(keep=0.25))
    gen = model.generate(vts[0], Q, pruner=method, max_new_tokens=6)
    assert len(gen.ids[0]) >= 1
    # teacher-forced recomputation with the same pruning (no cache) gives the same next tokens
    tok = model.tokenizer
    ids = torch.tensor(tok.prompt_ids(Q) + gen.ids[0][:-1])[None]
    run = _pruned_run(model, vts[0], method, prompt=tok.decode(tok.prompt_ids(Q)))
    seq_ids = torch.tensor(tok.prompt_ids(Q))[None]
    assert run.hidden.shape[1] == 1 + int(run.stats.final[0]) + seq_ids.shape[1]
    assert torch.equal(model.decoder.lm_head(run.hidden[:, -1]).argmax(-1), gen.first_logits.argmax(-1))
    assert ids.shape[1] == seq_ids.shape[1] + len(gen.ids[0]) - 1


@pytest.mark.parametrize("method", [SparseVLM(SparseVLMConfig(keep=0.3, rule="rank")),
                                    SparseVLM(SparseVLMConfig(keep=0.2)), FastV(FastVConfig(keep=0.3)),
                                    RandomPrune(RandomPruneConfig(keep=0.3))], ids=lambda m: m.name)
def test_a_batch_gives_each_sample_what_it_gives_alone(model, vts, method):
    from workbench.models.visual_tokens import VisualTokens
    sttf = STTF(STTFConfig(tau=0.02))  # fused sets of different lengths: a ragged batch from the start
    clips = [make_clip(s, num_frames=8) for s in (0, 3, 5)]
    singles = [sttf.visual_tokens(model, torch.from_numpy(c.frames)[None], "rgb", c)[0] for c in clips]
    assert len({v.num_tokens for v in singles}) > 1
    batch = VisualTokens.stack(singles)
    out = model.generate(batch, Q, pruner=method, max_new_tokens=5)
    for i, vt in enumerate(singles):
        alone = model.generate(vt, Q, pruner=method, max_new_tokens=5)
        assert out.ids[i] == alone.ids[0]
        assert torch.equal(out.decoder.sublayer[i], alone.decoder.sublayer[0])  # ragged keep sets, same sizes
        torch.testing.assert_close(out.first_logits[i], alone.first_logits[0], rtol=1e-5, atol=1e-5)
    if method.name == "sparsevlm" and method.cfg.rule == "rank":
        assert len({tuple(r.tolist()) for r in out.decoder.sublayer}) > 1  # the rank rule is ragged here


def test_kept_sets_in_a_batch_equal_the_singles(model, vts):
    from workbench.models.visual_tokens import VisualTokens
    method = SparseVLM(SparseVLMConfig(keep=0.3))
    singles = [_pruned_run(model, vt, method) for vt in vts]
    batch = _pruned_run(model, VisualTokens.stack(vts), method)
    for i, s in enumerate(singles):
        assert torch.equal(batch.caches[3]["kb"][i], s.caches[3]["kb"][0])  # same tokens (and sizes) survive


def test_recycling_is_deterministic_and_traced(model):
    clip = make_clip(4, num_frames=8)
    method = SparseVLM(SparseVLMConfig(keep=0.25))
    a = describe(model, clip, method, prompt=Q, trace=True, max_new_tokens=4)
    b = describe(model, clip, method, prompt=Q, trace=True, max_new_tokens=4)
    keep = ["site", "layer", "token", "kind", "value", "target"]
    ta = a.trace.filter(a.trace["site"].str.starts_with("sparsevlm.")).select(keep)
    tb = b.trace.filter(b.trace["site"].str.starts_with("sparsevlm.")).select(keep)
    assert ta.equals(tb) and ta.hash_rows().sum() == tb.hash_rows().sum()
    dec = ta.filter((ta["kind"] == "decision"))
    assert set(dec["value"].unique().to_list()) == {DECISIONS["kept"], DECISIONS["pruned"], DECISIONS["recycled"]}
    recycled = dec.filter(dec["value"] == DECISIONS["recycled"])
    assert recycled["target"].null_count() == 0 and (recycled["target"] >= 8 * 196).all()  # cluster ids follow M
    assert set(ta.filter(ta["kind"] == "rater")["value"].to_list()) <= {0.0, 1.0}
    per_layer = a.trace.filter(a.trace["kind"] == "visual_in")
    assert per_layer.height == 4 and per_layer["value"][0] == 8 * 196


def test_dpc_knn_is_deterministic_with_ties():
    x = torch.tensor([[0.0, 0.0]] * 4 + [[5.0, 5.0]] * 4)  # exact duplicates: every density ties
    a, b = dpc_knn(x, 2), dpc_knn(x.clone(), 2)
    assert torch.equal(a, b) and a.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    cl, n, _ = recycle(torch.randn(2, 50, 8, generator=torch.Generator().manual_seed(0)), torch.arange(100.).view(2, 50),
                       torch.ones(2, 50, dtype=torch.bool))
    assert n.tolist() == [2, 2] and (cl >= 0).sum(1).tolist() == [16, 16]  # ⌊0.3·50⌋ + 1 = 16 → 16 // 10 + 1


def test_raters_on_a_hand_made_example():
    v = torch.tensor([[[1.0, 0.0], [0.9, 0.1], [1.0, 0.2]]])  # three visual tokens all along e0
    t = torch.tensor([[[4.0, 0.0], [0.0, 4.0], [3.0, 0.0], [0.0, 0.0]]])  # text: strong e0, e1, medium e0, none
    ok_v, ok_t = torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool)
    rel = rater_relevance(v, t, ok_v, ok_t)
    assert torch.allclose(rel.sum(1), torch.ones(1)) and int(rel.argmax()) == 0
    assert select_raters(rel, ok_t).tolist() == [[True, False, False, False]] or \
        select_raters(rel, ok_t).tolist() == [[True, False, True, False]]
    ok_t[0, 0] = False  # a padded text token is never a rater
    assert not bool(select_raters(rater_relevance(v, t, ok_v, ok_t), ok_t)[0, 0])
    p = torch.tensor([[[0.1, 0.3, 0.6], [0.5, 0.5, 0.0]]])
    assert torch.equal(column_scores(p, torch.tensor([[True, False]])), p[:, 0])


def test_rank_rule_on_matrices_of_known_rank():
    base = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.0], [0.0, 0.5, 0.1, 0.2, 0.2]])
    assert numerical_rank(base) == 2
    assert numerical_rank(torch.cat([base, base[:1] * 2, base.sum(0, keepdim=True)])) == 2  # dependent rows
    assert numerical_rank(torch.eye(5)[:3]) == 3 and numerical_rank(torch.zeros(3, 5)) == 0
    assert rank_keep(2, 10.0, 1.0, 100) == 21 and rank_keep(5, 10.0, 0.0, 5) == 5 and rank_keep(4, 100.0, 0, 50) == 49


def test_top_slots_ties_and_ragged_counts():
    s = torch.tensor([[1.0, 3.0, 3.0, 2.0], [5.0, 4.0, 3.0, 2.0]])
    valid = torch.tensor([[True, True, True, True], [True, True, False, True]])
    keep, ok = top_slots(s, valid, torch.tensor([2, 3]))
    assert ok.tolist() == [[True, True, False], [True, True, True]]  # valid first, padding last
    assert [[k for k, o in zip(kr, okr) if o] for kr, okr in zip(keep.tolist(), ok.tolist())] == [[1, 2], [0, 1, 3]]


def test_keep_accounting_follows_the_paper_convention():
    assert keep_fraction((1.0, 2.0), (0.5, 0.25), 4) == pytest.approx((1 + 0.5 + 0.25 * 2) / 4)  # whole layers
    f = solve_fractions((0.5, 1.5, 2.5), 0.22, 4)
    assert keep_fraction((0.5, 1.5, 2.5), f, 4) == pytest.approx(0.22)
    with pytest.raises(InputError, match="out of reach"):
        solve_fractions((1.0, 2.0), 0.2, 4)  # whole-layer points cannot go below 1/4 on 4 layers


def test_prefill_flops_counted_equal_the_analytic_formula(model, vts):
    for method in (None, SparseVLM(SparseVLMConfig(keep=0.25)), SparseVLM(SparseVLMConfig(keep=0.1, points=(0, 1.5, 2.5))),
                   FastV(FastVConfig(keep=0.3)), RandomPrune(RandomPruneConfig(keep=0.3))):
        g = model.generate(vts[2], Q, pruner=method, count=True, max_new_tokens=1)
        assert g.decoder.flops > 0
        assert abs(g.decoder.analytic_flops - g.decoder.flops) <= 0.02 * g.decoder.flops, method
    dense = model.generate(vts[2], Q, count=True, max_new_tokens=1).decoder.flops
    pruned = model.generate(vts[2], Q, pruner=SparseVLM(SparseVLMConfig(keep=0.22)), count=True,
                            max_new_tokens=1).decoder.flops
    assert pruned < 0.45 * dense  # the quadratic attention term shrinks with the tokens


@pytest.mark.parametrize("make, match", [
    (lambda: SparseVLM(SparseVLMConfig(points=(0.5, 1.0))), "same layer"),
    (lambda: SparseVLM(SparseVLMConfig(points=(4.5,))), "multiple of 0.5"),
    (lambda: SparseVLM(SparseVLMConfig(keep=0.05)), "out of reach"),
    (lambda: SparseVLM(SparseVLMConfig(budgets=(0.1, 0.2, 0.05))), "must not grow"),
    (lambda: SparseVLM(SparseVLMConfig(budgets=(0.5, 0.2))), "budgets for"),
    (lambda: SparseVLM(SparseVLMConfig(counts=(5000, 100, 50))), "above the"),
    (lambda: SparseVLM(SparseVLMConfig(rule="magic")), "rule"),
    (lambda: FastV(FastVConfig(R=1.0)), "R"),
])
def test_bad_knobs_raise_one_clear_error(model, vts, make, match):
    with pytest.raises(InputError, match=match):
        model.generate(vts[0], Q, pruner=make())


def test_validate_points_sorted():
    assert validate_points([2.5, 0.5][::-1], 4) == (0.5, 2.5)
    with pytest.raises(InputError):
        validate_points((1.5, 0.5), 4)
