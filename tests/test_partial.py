"""Partial encoding (workbench/methods/ops/partial.py): exact full frames, truly skipped reused tokens, FLOPs that
match the analytic block formula, the stale-key attention it promises, and the training simulation."""
from __future__ import annotations

import math

import pytest
import torch

from workbench.eval.flops import block_flops, count_flops, encoder_flops
from workbench.methods.ops.partial import (EncoderCache, embed_patches, encode_clip, encode_full, encode_partial,
                                           masked_step)
from workbench.models.encoder import VisionEncoder
from workbench.models.registry import create_model

N = 196


@pytest.fixture(scope="module")
def encoder() -> VisionEncoder:
    torch.manual_seed(0)
    return VisionEncoder(dim=32, depth=2, heads=4, mlp_ratio=2.0).eval()


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, 3, 112, 112, generator=g)


def _first(encoder, frames) -> tuple[torch.Tensor, EncoderCache]:
    with torch.no_grad():
        return encode_full(encoder, embed_patches(encoder, frames[:1], "rgb"), "rgb")


def _rows_seen(encoder):
    """Forward hooks on every block's ln1 that record how many token rows each block processes."""
    seen: list[int] = []
    hs = [blk.ln1.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[0] * args[0].shape[1]))
          for blk in encoder.blocks]
    return seen, hs


def test_encode_full_is_the_dense_encoder_bit_for_bit(encoder, frames):
    dbg = create_model("tinyvlm-debug").encoder
    with torch.no_grad():
        for enc in (encoder, dbg):
            out, cache = encode_full(enc, enc.embed(frames, "rgb"), "rgb")
            assert torch.equal(out, enc(frames, "rgb"))
            assert len(cache.layers) == len(enc.blocks) and cache.final is out


def test_partial_with_every_token_recomputed_matches_full(encoder, frames):
    _, cache = _first(encoder, frames)
    idx = torch.arange(N)
    with torch.no_grad():
        part = encode_partial(encoder, cache, embed_patches(encoder, frames[1:2], "rgb", idx), idx, "rgb")
        full = encoder(frames[1:2], "rgb")
    assert torch.allclose(part, full, atol=1e-6)


def test_reused_tokens_keep_cache_and_recomputed_attend_to_stale_keys(encoder, frames):
    out0, cache = _first(encoder, frames)
    old = cache.clone()
    idx = torch.tensor([0, 17, 100, 195])
    with torch.no_grad():
        x = embed_patches(encoder, frames[1:2], "rgb", idx)
        out1 = encode_partial(encoder, cache, x, idx, "rgb")
    reused = torch.ones(N, dtype=torch.bool)
    reused[idx] = False
    assert torch.equal(out1[0, reused], out0[0, reused])  # approximation 1: reused outputs are the cached ones
    # reference: the same math written out with explicit softmax attention over [stale keys | fresh keys]
    h = x
    with torch.no_grad():
        for blk, c in zip(encoder.blocks, old.layers):
            q, k, v = blk.attn.qkv(blk.ln1(h))
            kk, vv = c.k.clone(), c.v.clone()
            kk[:, :, idx], vv[:, :, idx] = k, v  # approximation 2: stale keys/values for reused tokens
            a = ((q @ kk.transpose(-2, -1)) / math.sqrt(blk.attn.head_dim)).softmax(-1) @ vv  # (1, h, R, hd)
            h = h + blk.attn.out_proj(a.transpose(1, 2).reshape(1, len(idx), -1))
            h = h + blk.mlp(blk.ln2(h))
        ref = encoder.finish(h, "rgb")
    assert torch.allclose(out1[0, idx], ref[0], atol=1e-5)
    # the cache now holds the fresh keys of the recomputed tokens and the old keys of the others
    assert torch.equal(cache.layers[0].k[:, :, reused], old.layers[0].k[:, :, reused])
    assert not torch.equal(cache.layers[0].k[:, :, idx], old.layers[0].k[:, :, idx])


@pytest.mark.parametrize("r", [0, 1, 7, 31, 196])
def test_blocks_see_only_recomputed_rows_and_flops_match_analytics(encoder, frames, r):
    _, cache = _first(encoder, frames)
    idx = torch.randperm(N, generator=torch.Generator().manual_seed(r))[:r].sort().values
    seen, hs = _rows_seen(encoder)
    try:
        with torch.no_grad():
            def work():
                return encode_partial(encoder, cache, embed_patches(encoder, frames[1:2], "rgb", idx), idx, "rgb")
            _, flops = count_flops(work)
    finally:
        for h in hs:
            h.remove()
    assert seen == ([r] * len(encoder.blocks) if r else [])  # no block ran on a reused token
    d, m, p = 32, 64, 3 * 8 * 8
    stem = 2 * r * p * d
    assert flops == stem + len(encoder.blocks) * (block_flops(r, N, d, m) if r else 0)
    dense = encoder_flops(N, 1, d, len(encoder.blocks), 2.0, p)
    assert flops <= dense and (r < N) == (flops < dense)


def test_block_hook_points_see_the_full_frame(encoder, frames):
    _, cache = _first(encoder, frames)
    shapes = []
    h = encoder.blocks[0].hook_out.add_hook(lambda t, hook: shapes.append(tuple(t.shape)))
    try:
        idx = torch.tensor([3, 4])
        with torch.no_grad():
            encode_partial(encoder, cache, embed_patches(encoder, frames[1:2], "rgb", idx), idx, "rgb")
    finally:
        h.remove()
    assert shapes == [(1, N, 32)]


def test_masked_step_forward_equals_partial_and_passes_gate_gradients(encoder, frames):
    with torch.no_grad():
        x0 = embed_patches(encoder, frames[:1], "rgb")
        x1 = embed_patches(encoder, frames[1:2], "rgb")
        _, cache = encode_full(encoder, x0, "rgb")
    idx = torch.tensor([5, 6, 50, 120])
    hard = torch.zeros(1, N)
    hard[0, idx] = 1
    logits = torch.zeros(1, N, requires_grad=True)
    soft = torch.sigmoid(logits)
    m = hard + soft - soft.detach()  # straight-through
    y, _ = masked_step(encoder, x1, m, "rgb", cache.clone())
    with torch.no_grad():
        ref = encode_partial(encoder, cache.clone(), x1[:, idx], idx, "rgb")
    assert torch.allclose(y, ref, atol=1e-5)  # forward = the partial encoding
    y.square().sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_encode_clip_matches_frame_by_frame_and_counts_its_padding(encoder, frames):
    g = torch.Generator().manual_seed(3)
    clip = torch.rand(6, 3, 112, 112, generator=g)
    mask = torch.rand(6, N, generator=g) < 0.1
    mask[0] = True
    mask[2] = False  # a frame with nothing to recompute
    mask[4] = True  # a dense frame mid-clip
    with torch.no_grad():
        out, rows, src = encode_clip(encoder, clip, "rgb", mask)
        ref, cache = encode_full(encoder, embed_patches(encoder, clip[:1], "rgb"), "rgb")
        refs = [ref]
        for f in range(1, 6):
            idx = mask[f].nonzero().squeeze(1)
            refs.append(encode_partial(encoder, cache, embed_patches(encoder, clip[f:f + 1], "rgb", idx), idx, "rgb"))
    torch.testing.assert_close(out, torch.cat(refs), atol=1e-5, rtol=1e-5)
    counts = mask.sum(1)
    p_rows = int(counts.sum())
    assert rows.shape == (p_rows, 32) and torch.equal(out[5, src[5] == src[4]], out[4, src[5] == src[4]])
    seen, hs = _rows_seen(encoder)
    try:
        with torch.no_grad():
            _, flops = count_flops(encode_clip, encoder, clip, "rgb", mask)
    finally:
        for h in hs:
            h.remove()
    assert seen == [p_rows] * len(encoder.blocks)  # one pass per block over exactly the recomputed tokens
    d, m, pdim = 32, 64, 3 * 8 * 8
    partial = counts[(counts > 0) & (counts < N)]
    padded = [(2, N), (len(partial), int(partial.max()))]  # (frames, padded queries per frame) per attention batch
    attn = sum(4 * gq * rq * N * d + 2 * gq * rq * d * d for gq, rq in padded)  # scores + A·V, out projection
    block = 2 * p_rows * d * 3 * d + attn + 4 * p_rows * d * m
    assert flops == 2 * p_rows * pdim * d + len(encoder.blocks) * block


def test_encode_clip_dense_is_the_encoder_bit_for_bit(encoder, frames):
    with torch.no_grad():
        out, _, _ = encode_clip(encoder, frames, "rgb", torch.ones(3, N, dtype=torch.bool))
        assert torch.equal(out, encoder(frames, "rgb"))


@pytest.mark.parametrize("chunk", [2, 3, 5, 9])
def test_encode_chunk_matches_frame_by_frame_and_carries_the_same_cache(encoder, chunk):
    """A stream encoded c frames at a time against its carried state = frame by frame (outputs and the cache at
    the end: keys, values, block outputs, final), with chunk edges falling anywhere (dense frames, frames with
    nothing to recompute, patches untouched for several chunks)."""
    from workbench.methods.ops.partial import encode_chunk
    g = torch.Generator().manual_seed(4)
    clip = torch.rand(9, 3, 112, 112, generator=g)
    mask = torch.rand(9, N, generator=g) < 0.1
    mask[0], mask[3], mask[5] = True, False, True
    with torch.no_grad():
        ref, cache = encode_full(encoder, embed_patches(encoder, clip[:1], "rgb"), "rgb")
        refs = [ref]
        for f in range(1, 9):
            idx = mask[f].nonzero().squeeze(1)
            refs.append(encode_partial(encoder, cache, embed_patches(encoder, clip[f:f + 1], "rgb", idx), idx, "rgb"))
        got, carried = [], None
        for s in range(0, 9, chunk):
            out, carried = encode_chunk(encoder, carried, clip[s:s + chunk], "rgb", mask[s:s + chunk])
            got.append(out)
    torch.testing.assert_close(torch.cat(got), torch.cat(refs), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(carried.final, cache.final, atol=1e-5, rtol=1e-5)
    for a, b in zip(carried.layers, cache.layers):
        for x, y in ((a.k, b.k), (a.v, b.v), (a.out, b.out)):
            assert x.shape == y.shape
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_encode_chunk_computes_only_the_recomputed_rows_and_refuses_a_cold_partial_start(encoder, frames):
    from workbench.methods.ops.partial import encode_chunk
    with torch.no_grad():
        _, cache = _first(encoder, frames)
        mask = torch.zeros(2, N, dtype=torch.bool)
        mask[0, :5], mask[1, 3:11] = True, True
        seen, hs = _rows_seen(encoder)
        try:
            encode_chunk(encoder, cache, frames[1:], "rgb", mask)
        finally:
            for h in hs:
                h.remove()
        assert seen == [13] * len(encoder.blocks)  # one pass per block over the chunk's 13 recomputed tokens
        still, same = encode_chunk(encoder, cache, frames[1:], "rgb", torch.zeros(2, N, dtype=torch.bool))
        assert torch.equal(still, cache.final.expand(2, N, -1)) and torch.equal(same.final, cache.final)
        with pytest.raises(ValueError, match="dense frame"):
            encode_chunk(encoder, None, frames[1:], "rgb", mask)
        dense, _ = encode_chunk(encoder, None, frames, "rgb", torch.ones(3, N, dtype=torch.bool))
        assert torch.equal(dense, encoder(frames, "rgb"))  # every patch: the dense encoder's exact calls
