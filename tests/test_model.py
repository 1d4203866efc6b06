"""TinyVLM: shapes, hook points, tracing neutrality, KV-cache decoding, token-set semantics, checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.errors import CheckpointError
from workbench.models.config import TinyVLMConfig
from workbench.models.io import load_checkpoint, read_metadata, save_checkpoint
from workbench.models.registry import create_model
from workbench.models.tinyvlm import TinyVLM
from workbench.models.visual_tokens import VisualTokens


@pytest.fixture(scope="module")
def model() -> TinyVLM:
    return create_model("tinyvlm-debug")


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 4, 3, 112, 112, generator=g)


def _text(model, n=2):
    ids = model.tokenizer.prompt_ids("describe the clip") + model.tokenizer.encode("a red circle moves left")
    return torch.tensor([ids] * n)


@pytest.mark.parametrize("modality,channels", [("rgb", 3), ("events", 2)])
def test_shapes(model, modality, channels):
    x = torch.rand(2, 5, channels, 112, 112)
    enc = model.encode(x, modality)
    assert enc.shape == (2, 5, 196, model.cfg.enc_dim)
    vt = VisualTokens.dense(enc)
    assert vt.num_tokens == 5 * 196
    # the visual block gets the prior attention mass of one token: each of M keys is biased by −log(M)
    torch.testing.assert_close(vt.attn_key_bias(), torch.full((2, 5 * 196), -float(np.log(5 * 196))))
    logits, hidden = model(vt, _text(model))
    assert logits.shape == (2, _text(model).shape[1], len(model.tokenizer))
    assert hidden.shape[-1] == model.cfg.dec_dim


def test_encode_rejects_unknown_modality_and_too_many_frames(model):
    with pytest.raises(ValueError, match="modality"):
        model.encode(torch.rand(1, 2, 3, 112, 112), "depth")
    with pytest.raises(ValueError, match="max_frames"):
        model.encode(torch.rand(1, model.cfg.max_frames + 1, 3, 112, 112), "rgb")


def test_hook_points_cover_the_required_sites(model):
    names = set(model.hook_points)
    assert "encoder.hook_patch_embed" in names and "hook_visual_tokens" in names
    for i in range(model.cfg.enc_depth):
        assert f"encoder.blocks.{i}.hook_out" in names
    for i in range(model.cfg.dec_depth):
        assert f"decoder.blocks.{i}.attn.hook_pattern" in names


def test_hooked_forward_equals_plain_forward_and_patterns_are_distributions(model, frames):
    vt = model.encode_dense(frames, "rgb")
    text = _text(model)
    plain, _ = model(vt, text)
    (hooked, _), cache = model.run_with_cache(vt, text)
    # attention patterns are computed explicitly when hooked, through SDPA otherwise: same numbers
    torch.testing.assert_close(hooked, plain, rtol=1e-5, atol=1e-5)
    pat = cache["decoder.blocks.0.attn.hook_pattern"]
    length = 1 + vt.num_tokens + text.shape[1]  # [sink | visual | text]
    assert pat.shape == (2, model.cfg.dec_heads, length, length)
    torch.testing.assert_close(pat.sum(-1), torch.ones(pat.shape[:-1]))
    assert torch.all(pat.triu(1) == 0), "causal: no attention to later positions"
    assert cache["hook_visual_tokens"].shape == (2, vt.num_tokens, model.cfg.dec_dim)
    # identity hooks that only read change nothing at all
    with model.hooks([(lambda n: "hook_out" in n, lambda t, hook: None)]):
        again, _ = model(vt, text)
    assert torch.equal(again, plain)


def test_hooks_are_removed_after_the_block_even_on_error(model, frames):
    vt = model.encode_dense(frames[:1], "rgb")
    with pytest.raises(RuntimeError):
        with model.hooks([("hook_visual_tokens", lambda t, h: t * 0)]):
            raise RuntimeError("boom")
    assert not model.hook_points["hook_visual_tokens"].active
    with pytest.raises(KeyError, match="no hook point"):
        with model.hooks([("encoder.nope", lambda t, h: t)]):
            pass


def test_a_hook_can_edit_activations(model, frames):
    vt = model.encode_dense(frames[:1], "rgb")
    text = _text(model, 1)
    base, _ = model(vt, text)
    with model.hooks([("hook_visual_tokens", lambda t, hook: torch.zeros_like(t))]):
        zeroed, _ = model(vt, text)
    assert not torch.allclose(base, zeroed)


def test_cached_greedy_decoding_matches_full_recompute(model, frames):
    """Each token generate() emits must be the argmax of a full teacher-forced pass over the prefix."""
    vt = model.encode_dense(frames[:1], "rgb")
    gen = model.generate(vt, max_new_tokens=12)
    ids = model.tokenizer.prompt_ids(model.cfg.caption_prompt)
    for tok in gen.ids[0]:
        logits, _ = model(vt, torch.tensor([ids]))
        assert int(logits[0, -1].argmax()) == tok
        ids.append(tok)


def test_padding_does_not_change_results(model, frames):
    vt = model.encode_dense(frames, "rgb")
    short = vt.select(torch.arange(0, 300).expand(2, -1))
    one = VisualTokens(short.embeds[:1], short.patch[:1], short.t_start[:1], short.t_end[:1], short.size[:1])
    longer = vt.select(torch.arange(0, 500).expand(2, -1))
    two = VisualTokens(longer.embeds[1:], longer.patch[1:], longer.t_start[1:], longer.t_end[1:], longer.size[1:])
    batch = VisualTokens.stack([one, two])
    assert batch.valid is not None and int(batch.counts()[0]) == 300
    ref = model.generate(one, max_new_tokens=8).ids[0]
    assert model.generate(batch, max_new_tokens=8).ids[0] == ref


@pytest.mark.parametrize("k", [2, 3, 7])
def test_proportional_attention_a_token_of_size_k_equals_k_identical_copies(model, frames, k):
    """ToMe's identity: one token with size k attends like k identical copies of it (same time span)."""
    vt = model.encode_dense(frames[:1], "rgb").select(torch.arange(0, 40)[None])
    text = _text(model, 1)
    # duplicate token 5 k times (all copies identical: same embedding, patch, frame)
    idx = torch.cat([torch.arange(0, 6), torch.full((k - 1,), 5), torch.arange(6, 40)])[None]
    dup = vt.select(idx)
    dup.size = torch.ones_like(dup.size) + 0.0  # dense copies: size 1 each (forces the bias path)
    merged = vt.select(torch.arange(0, 40)[None])
    merged.size = merged.size.clone()
    merged.size[0, 5] = float(k)
    a, _ = model(dup, text)
    b, _ = model(merged, text)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_fused_temporal_embedding_is_the_mean_over_the_run(model, frames):
    vt = model.encode_dense(frames[:1], "rgb").select(torch.tensor([[0]]))
    vt.t_start, vt.t_end = torch.tensor([[1]]), torch.tensor([[3]])
    got = model.visual_embeds(vt)
    space = model.spatial_embed - model.spatial_embed.mean(0)
    time = model.time_embed - model.time_embed.mean(0)
    base = model.projector(vt.embeds) + space[vt.patch]
    want = base + time[1:4].mean(0)
    torch.testing.assert_close(got, want)


def test_checkpoint_round_trip(tmp_path, model, frames):
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path, {"steps": 7, "note": "round trip"})
    loaded = load_checkpoint(path)
    assert loaded.cfg == model.cfg
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    vt = model.encode_dense(frames[:1], "rgb")
    assert loaded.generate(vt).ids == model.generate(vt).ids
    assert read_metadata(path)["steps"] == 7


def test_checkpoint_errors_are_typed(tmp_path, model):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError):
        load_checkpoint(junk)
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path)
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "cut.safetensors")
    bigger = TinyVLM(TinyVLMConfig(**{**model.cfg.__dict__, "dec_dim": 48, "dec_heads": 2}))
    other = tmp_path / "other.safetensors"
    save_checkpoint(bigger, other)
    # a checkpoint whose tensors do not match its config
    from safetensors.torch import load_file, save_file
    state = load_file(str(other))
    save_file(state, str(tmp_path / "mismatch.safetensors"),
              metadata={"format": "workbench-tinyvlm/1", "config": model.cfg.to_json(), "info": "{}"})
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(tmp_path / "mismatch.safetensors")


def test_create_model_errors(tmp_path):
    with pytest.raises(CheckpointError, match="unknown model"):
        create_model("no-such-model")


def test_tokenizer_round_trip_and_unknown_words(model):
    tok = model.tokenizer
    text = "a large red striped circle moves left on a plain black background"
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode("a purple zebra")) == "a purple <unk>"
    assert tok.encode("A Red, circle!") == tok.encode("a red circle")


def test_generation_is_deterministic(model, frames):
    vt = model.encode_dense(frames[:1], "rgb")
    assert model.generate(vt).ids == model.generate(vt).ids
    assert np.isfinite(model.generate(vt).gesture_logits.numpy()).all()


@pytest.mark.parametrize("seed", range(5))
def test_to_grid_inverts_temporal_fusion(seed):
    """fuse_runs → to_grid gives back the dense layout with each reused patch holding its run's first token."""
    from workbench.methods.ops.fusion import fuse_runs
    g = torch.Generator().manual_seed(seed)
    t, n, d = 5, 12, 4
    enc = torch.randn(2, t, n, d, generator=g)
    mask = torch.rand(2, t, n, generator=g) < 0.4
    mask[:, 0] = True
    grid = fuse_runs(enc, mask).to_grid(t, n)
    expect = enc.clone()
    for f in range(1, t):
        expect[:, f] = torch.where(mask[:, f, :, None], enc[:, f], expect[:, f - 1])
    assert torch.equal(grid, expect)


def test_gesture_head_reads_fused_tokens_like_their_dense_grid():
    from workbench.methods.ops.fusion import fuse_runs
    from workbench.models.gesture_head import GridHead
    head = GridHead(dim=8, grid=14, classes=11).eval()
    enc = torch.randn(1, 6, 196, 8)
    mask = torch.ones(1, 6, 196, dtype=torch.bool)
    mask[:, 1:, 100:] = False  # half the patches static after frame 0
    filled = enc.clone()
    filled[:, 1:, 100:] = enc[:, :1, 100:]
    from workbench.models.visual_tokens import VisualTokens
    assert torch.allclose(head(fuse_runs(enc, mask)), head(VisualTokens.dense(filled)), atol=1e-6)
