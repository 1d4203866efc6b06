"""SparseVLM / FastV / random pruning inside unmodified Hugging Face decoders (models/hf/driver.py).

The methods are the workbench's own (methods/sparsevlm.py, fastv.py, random_prune.py), unchanged; the driver
feeds them PruneViews through forward pre-hooks. Shown here: keep-all is the unmodified `generate` bit for bit;
pruned tokens leave the hidden states and every later layer's cache; decoding from the pruned cache equals the
unmodified decoder run on the kept tokens at their original positions (Llama's 1-D RoPE and Qwen2-VL's M-RoPE);
the scores read the scoring layer's real attention.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.data.shapesworld import make_clip
from workbench.methods.fastv import FastV, FastVConfig
from workbench.methods.random_prune import RandomPrune, RandomPruneConfig
from workbench.methods.sparsevlm import SparseVLM, SparseVLMConfig
from workbench.models.hf.driver import rows_attention
from workbench.models.hf.tiny import tiny_vlm
from workbench.pipeline import describe, model_frames

FAMILIES = ("llava", "qwen2vl", "onevision")
PROMPT = "what color is the circle"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clip():
    return make_clip(5, 4)


def _unmodified(m, vt, frames, n=6):
    kw, _ = m.lm_inputs(vt, PROMPT)
    kw.pop("mm_encoder_outputs")
    return m.hf.generate(**(kw | m.family.hf_inputs(frames[0])), max_new_tokens=n, do_sample=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_keep_all_is_the_unmodified_generate(hf_tiny_models, clip, family):
    m = hf_tiny_models[family]
    frames = model_frames(m, clip)
    vt = m.encode_dense(frames)
    ref = _unmodified(m, vt, frames)
    for method in (SparseVLM(SparseVLMConfig(keep=1.0)), FastV(FastVConfig(K=1, R=0.0)),
                   RandomPrune(RandomPruneConfig(keep=1.0))):
        g = m.generate(vt, PROMPT, max_new_tokens=6, pruner=method)
        assert torch.equal(g.sequences, ref), method.name
        assert g.decoder.visual_in[0].tolist() == [g.visual_tokens] * m.cfg.decoder_layers


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_tokens_leave_hidden_states_and_cache(hf_tiny_models, clip, family):
    m = hf_tiny_models[family]
    vt = m.encode_dense(model_frames(m, clip))
    n = m.family.n_visual(vt.t_end.max().item() + 1)
    lengths = []  # tokens entering each layer's attention (its input norm runs inside the layer, after the hooks)
    handles = [layer.input_layernorm.register_forward_hook(lambda mod, a, out: lengths.append(out.shape[1]))
               for layer in m.lm.layers]
    try:  # SparseVLM's default depths on a 4-layer decoder: inside layers 0, 1, 2 (after attention)
        g = m.generate(vt, PROMPT, max_new_tokens=5, pruner=SparseVLM(SparseVLMConfig(keep=0.3)))
    finally:
        for h in handles:
            h.remove()
    st, depth = g.decoder, m.cfg.decoder_layers
    prefill, text = lengths[:depth], lengths[0] - n  # each layer's input length at prefill; non-visual tokens
    assert [int(x) for x in st.visual_in[0]] == [p - text for p in prefill]
    assert prefill[0] == text + n and prefill[3] <= prefill[2] < prefill[1] < prefill[0]  # shorter after each point
    assert abs(float(st.keep_fraction[0]) - 0.3) < 0.1 and int(st.final[0]) < n  # (8–64 tokens: rounding)
    steps = g.sequences.shape[1] - (text + n) - 1  # generated tokens fed back into the cache
    keys = [layer.keys.shape[2] for layer in g.cache.layers]
    assert keys == [p + steps for p in prefill]  # each layer's cache holds only the tokens it attended over
    assert len(g.ids[0]) >= 4  # decoding from the pruned cache


@pytest.mark.parametrize("impl", ("sdpa", "eager"))
def test_decoding_after_pruning_under_both_attention_backends(clip, impl):
    m = tiny_vlm("llava")
    m.lm.config._attn_implementation = impl  # eager: the driver cuts layer 0's mask to each layer's keys
    vt = m.encode_dense(model_frames(m, clip))
    for method in (FastV(FastVConfig(K=1.5, R=0.75)), SparseVLM(SparseVLMConfig(keep=0.2)),
                   RandomPrune(RandomPruneConfig(keep=0.3, seed=2))):
        g = m.generate(vt, PROMPT, max_new_tokens=8, pruner=method)
        assert g.sequences.shape[1] == m.lm_inputs(vt, PROMPT)[0]["input_ids"].shape[1] + 8


def _manual_greedy(m, emb, pos_fn, steps: int) -> tuple[list[int], list[torch.Tensor]]:
    """The unmodified text model + lm_head over `emb` (1, L, D) at positions pos_fn(None), then greedy steps at
    pos_fn(t) — with the generation config's min_new_tokens (EOS suppressed). → (ids, last hidden per step)."""
    from transformers import DynamicCache
    lm, cfg = m.lm, m.hf.generation_config
    cache = DynamicCache(config=lm.config)
    out = lm(inputs_embeds=emb, position_ids=pos_fn(None), cache=cache, use_cache=True)
    ids, hidden = [], []
    for t in range(steps):
        logits = m.hf.lm_head(out.last_hidden_state[:, -1])
        if t < cfg.min_new_tokens:
            logits[:, cfg.eos_token_id] = float("-inf")
        nxt = int(logits.argmax(-1))
        ids.append(nxt)
        hidden.append(out.last_hidden_state[:, -1])
        out = lm(input_ids=torch.tensor([[nxt]]), position_ids=pos_fn(t), cache=cache, use_cache=True)
    return ids, hidden


@pytest.mark.parametrize("family", ("llava", "qwen2vl"))
def test_pruned_decoding_is_the_decoder_on_the_kept_tokens_at_their_positions(hf_tiny_models, clip, family):
    """FastV at K = 0 (before layer 0) keeps a set S; the driver's result must be the unmodified decoder fed only
    S (+ the text) with their original position ids — 1-D for Llama, M-RoPE (3, 1, L) for Qwen2-VL — during
    prefill and every decoding step."""
    m = hf_tiny_models[family]
    vt = m.encode_dense(model_frames(m, clip))
    g = m.generate(vt, PROMPT, max_new_tokens=6, pruner=FastV(FastVConfig(K=0, R=0.6)))
    kept = g.decoder.present[0][0].sort().values
    kw, block = m.lm_inputs(vt, PROMPT)
    ids, s, n = kw["input_ids"], block.start, block.n
    feats = kw["mm_encoder_outputs"]
    feats = torch.cat(list((feats.get("image") or feats.get("video")).pooler_output))
    with torch.no_grad():
        emb = m.hf.get_input_embeddings()(ids).clone()
        emb[0, s: s + n] = feats.reshape(n, -1)
        keep = torch.cat([torch.arange(s), s + kept, torch.arange(s + n, ids.shape[1])])
        length = ids.shape[1]
        if family == "qwen2vl":
            pos3, delta = m.hf.model.get_rope_index(ids, kw["mm_token_type_ids"], video_grid_thw=kw["video_grid_thw"])
            pos_fn = lambda t: pos3[:, :, keep] if t is None else \
                torch.full((3, 1, 1), length + t + int(delta[0, 0]))  # noqa: E731
        else:
            pos_fn = lambda t: keep[None] if t is None else torch.tensor([[length + t]])  # noqa: E731
        ref, hidden = _manual_greedy(m, emb[:, keep], pos_fn, 6)
        steps = []  # the driver's final hidden state at every decoding step
        h = m.lm.norm.register_forward_hook(lambda mod, a, out: steps.append(out[:, -1]))
        try:
            g2 = m.generate(vt, PROMPT, max_new_tokens=6, pruner=FastV(FastVConfig(K=0, R=0.6)))
        finally:
            h.remove()
    assert g.sequences[0, length:].tolist() == ref and torch.equal(g2.sequences, g.sequences)
    for ours, theirs in zip(steps, hidden):  # prefill, then each step from the pruned cache at its position
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    assert int(g.decoder.visual_in[0, 0]) == len(kept) < n


def _manual_prefill(m, kw, block, points, present) -> torch.Tensor:
    """The unmodified decoder layers run by hand on the pruned sequence: at each point the slots still present
    (the driver's record) are gathered, every layer gets cos/sin and position ids of those slots' original
    positions (M-RoPE: the 3-D ones), a point at K = ℓ + ½ splits layer ℓ at its residual. → last hidden (1, D)."""
    lm, ids, s, n = m.lm, kw["input_ids"], block.start, block.n
    feats = kw["mm_encoder_outputs"]
    feats = torch.cat(list((feats.get("image") or feats.get("video")).pooler_output)).reshape(n, -1)
    h = m.hf.get_input_embeddings()(ids).clone()
    h[0, s: s + n] = feats
    length = ids.shape[1]
    if "mm_token_type_ids" in kw:
        pos = m.hf.model.get_rope_index(ids, kw["mm_token_type_ids"], video_grid_thw=kw["video_grid_thw"])[0]
        text_pos = None
    else:
        pos = text_pos = torch.arange(length)[None]
    cos, sin = lm.rotary_emb(h, position_ids=pos)
    src = torch.arange(length)

    def gather(h, src, k):
        new = torch.cat([torch.arange(s), s + present[k][0].sort().values, torch.arange(s + n, length)])
        rows = torch.tensor([int((src == x).nonzero()) for x in new])
        return h[:, rows], new

    at = {p: k for k, p in enumerate(points)}
    for i, layer in enumerate(lm.layers):
        if float(i) in at:
            h, src = gather(h, src, at[float(i)])
        kw_l = {"attention_mask": None, "position_embeddings": (cos[:, src], sin[:, src]),
                "position_ids": None if text_pos is None else src[None]}
        if i + 0.5 in at:  # inside layer i: attention on all, then the residual is pruned before the MLP
            r = h + layer.self_attn(layer.input_layernorm(h), **kw_l)[0]
            r, src = gather(r, src, at[i + 0.5])
            h = r + layer.mlp(layer.post_attention_layernorm(r))
        else:
            h = layer(h, **kw_l)
    return lm.norm(h)[:, -1]


@pytest.mark.parametrize("family", ("llava", "qwen2vl"))
@pytest.mark.parametrize("points", ((1.0, 3.0), (0.5, 2.5), (0.0, 2.0)))
def test_every_layer_after_a_point_sees_the_kept_slots_original_positions(hf_tiny_models, clip, family, points):
    m = hf_tiny_models[family]
    vt = m.encode_dense(model_frames(m, clip))
    g = m.generate(vt, PROMPT, max_new_tokens=4, pruner=RandomPrune(RandomPruneConfig(points=points, keep=0.4)))
    kw, block = m.lm_inputs(vt, PROMPT)
    with torch.no_grad():
        ref = _manual_prefill(m, kw, block, points, g.decoder.present)
    torch.testing.assert_close(g.sep_hidden, ref, atol=1e-5, rtol=1e-4)
    assert g.decoder.visual_in[0, -1] < block.n


def test_scores_read_the_layers_real_attention():
    """rows_attention (any backend) = the head-mean of eager attention's own probabilities for those rows."""
    m = tiny_vlm("qwen2vl")
    m.lm.config._attn_implementation = "eager"
    vt = m.encode_dense(m.input_frames(np.random.default_rng(1).random((4, 3, 112, 112), dtype=np.float32)))
    kw, _ = m.lm_inputs(vt, PROMPT)
    seen = {}

    def hook(mod, args, kwargs, out):
        seen["in"], seen["w"] = (kwargs["hidden_states"], kwargs["position_embeddings"], kwargs["attention_mask"]), out[1]
    h = m.lm.layers[2].self_attn.register_forward_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            m.hf(**kw)
    finally:
        h.remove()
    hs, (cos, sin), mask = seen["in"]
    rows = torch.tensor([[hs.shape[1] - 1, 3, 7]])
    with torch.no_grad():
        p = rows_attention(m.lm.layers[2].self_attn, hs, cos, sin, mask, [0])(rows, torch.ones_like(rows, dtype=torch.bool))
    torch.testing.assert_close(p[0], seen["w"][0].mean(0)[rows[0]], atol=1e-6, rtol=1e-5)


def test_describe_with_a_stack_on_an_hf_model(hf_tiny_models, clip):
    """The one inference path: STTF in the tower + SparseVLM in the decoder, traced."""
    from workbench.methods.sttf import STTF, STTFConfig
    from workbench.pipeline import Stack
    m = hf_tiny_models["llava"]
    d = describe(m, clip, Stack(STTF(STTFConfig(tau=0.02)), SparseVLM(SparseVLMConfig(keep=0.5))), prompt=PROMPT,
                 trace=True, max_new_tokens=4)
    kinds = set(d.trace["kind"].unique().to_list())
    assert {"change_score", "decision", "tokens_computed", "tokens_in", "score"} <= kinds
    assert d.decoder_keep < 0.6 and d.tokens_per_frame <= m.cfg.lm_tokens_per_step and d.run["model"] == m.cfg.name
