"""Partial encoding (STTF step 5): run the vision encoder only on the tokens that changed.

Frames are encoded in order. After each frame the encoder's per-layer state of every patch is cached:
keys and values (what other tokens attend to) and the block outputs, plus the final (normed) encoder output.
At a partial frame only the R recomputed tokens are gathered and pushed through the blocks; their queries
attend over all N keys, where the keys/values of the N − R reused tokens come from the cache (the last time
each of them was computed); the new keys/values and outputs are scattered back into the cache. Reused tokens
cost nothing: no matmul ever touches them (FLOPs per block = `workbench.eval.flops.block_flops(R, N, ...)`).

The encoder's own modules are used (`encoder.stems`, `pos_embed`, `blk.ln1`, `blk.attn.qkv`, `blk.attn.attend`,
`blk.ln2`, `blk.mlp`, `encoder.finish` — the final LayerNorm + per-modality BatchNorm, a fixed per-token map in
eval mode), so the weights are shared and hooks on them see the partial work (a forward hook on `blk.ln1` sees
(1, R, D); `hook_out` inside `finish` sees the R recomputed rows). Block hook points (`blocks.{i}.hook_out`)
see the full-frame (B, N, D) state after the scatter. `encode_clip` is the same computation scheduled layer by layer
over a whole clip (one matmul per layer over all recomputed tokens); there no full-frame state exists, so the
block hook points fire only when the clip is dense.

What is exact and what is approximate:
- `encode_full` makes the same module calls in the same order as `VisionEncoder.forward`, so a full frame is
  bit-identical to the dense encoder run on the same batch (tested with torch.equal).
- At a partial frame, a reused token keeps its cached output: it does not see neighbours that changed
  (approximation 1). A recomputed token's query attends to the stale keys/values of reused tokens, i.e. as they
  were when each was last computed, at every layer (approximation 2). Both vanish when every token is
  recomputed; their size is what the trace's `drift` measures (1 − cos to the dense token, debug mode).

    >>> import torch
    >>> from workbench.models.encoder import VisionEncoder
    >>> enc = VisionEncoder(dim=16, depth=2, heads=2).eval()
    >>> frames = torch.rand(2, 3, 112, 112)
    >>> out0, cache = encode_full(enc, embed_patches(enc, frames[:1], "rgb"), "rgb")
    >>> idx = torch.tensor([3, 40])
    >>> out1 = encode_partial(enc, cache, embed_patches(enc, frames[1:], "rgb", idx), idx, "rgb")
    >>> out1.shape, torch.equal(out1[0, 0], out0[0, 0]), torch.equal(out1[0, 3], out0[0, 3])
    (torch.Size([1, 196, 16]), True, False)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.models.encoder import VisionEncoder, patchify


@dataclass
class LayerCache:
    k: torch.Tensor  # (B, heads, N, head_dim) keys of every patch as last computed
    v: torch.Tensor  # (B, heads, N, head_dim)
    out: torch.Tensor  # (B, N, D) block output of every patch as last computed


@dataclass
class EncoderCache:
    """The per-clip encoder state of partial encoding: one LayerCache per block + the final encoder output."""

    layers: list[LayerCache]
    final: torch.Tensor  # (B, N, D) encoder output (after the final norm) of every patch as last computed

    def clone(self) -> "EncoderCache":
        return EncoderCache([LayerCache(c.k.clone(), c.v.clone(), c.out.clone()) for c in self.layers],
                            self.final.clone())


def embed_patches(encoder: VisionEncoder, frames: torch.Tensor, modality: str,
                  idx: torch.Tensor | None = None) -> torch.Tensor:
    """Patch embeddings (+ position) of frames (B, C, H, W): all patches (B, N, D) through `encoder.embed`
    (the dense call, hook_patch_embed fires), or only the patches `idx` (R,) → (B, R, D) (stem on R patches).

        >>> enc = VisionEncoder(dim=8, depth=1, heads=2)
        >>> f = torch.rand(1, 3, 112, 112)
        >>> torch.allclose(embed_patches(enc, f, "rgb", torch.tensor([5]))[0, 0], embed_patches(enc, f, "rgb")[0, 5])
        True
    """
    if idx is None:
        return encoder.embed(frames, modality)
    if modality not in encoder.stems:
        raise ValueError(f"modality must be one of {sorted(encoder.stems)}, not {modality!r}")
    patches = patchify(frames, encoder.patch_size)[:, idx]  # (B, N, C·p·p) → (B, R, C·p·p)
    if hasattr(encoder, "embed_at"):  # a tower with its own patch embedding (models/protocol.VisionTower)
        return encoder.embed_at(patches, idx, modality)
    return encoder.stems[modality](patches) + encoder.pos_embed[:, idx]


def encode_full(encoder: VisionEncoder, x: torch.Tensor, modality: str) -> tuple[torch.Tensor, EncoderCache]:
    """Embeddings (B, N, D) → (encoder output (B, N, D), a fresh cache). Same calls as `VisionEncoder.forward`.

        >>> enc = VisionEncoder(dim=8, depth=1, heads=2).eval()
        >>> f = torch.rand(2, 3, 112, 112)
        >>> torch.equal(encode_full(enc, enc.embed(f, "rgb"), "rgb")[0], enc(f, "rgb"))
        True
    """
    layers = []
    for blk in encoder.blocks:
        q, k, v = blk.attn.qkv(blk.ln1(x))  # each (B, h, N, hd)
        x = x + blk.attn.attend(q, k, v)
        x = blk.hook_out(x + blk.mlp(blk.ln2(x)))
        # the cache owns contiguous copies (k, v are views into the qkv projection; partial frames write into them)
        layers.append(LayerCache(k.clone(memory_format=torch.contiguous_format),
                                 v.clone(memory_format=torch.contiguous_format), x))
    out = encoder.finish(x, modality)
    return out, EncoderCache(layers, out)


def encode_partial(encoder: VisionEncoder, cache: EncoderCache, x: torch.Tensor, idx: torch.Tensor,
                   modality: str) -> torch.Tensor:
    """Recompute only the patches `idx` (R,) from their embeddings x (1, R, D); updates `cache` in place.

    Returns the frame's encoder output (1, N, D) (a new tensor): recomputed rows fresh, the others cached.
    With R = 0 no block runs.
    """
    if idx.numel() == 0:
        return cache.final.clone()
    for blk, c in zip(encoder.blocks, cache.layers):
        h = blk.ln1(x)  # the R recomputed tokens only; a RoPE tower's attention needs their positions (idx)
        q, k, v = blk.attn.qkv(h, idx) if getattr(blk.attn, "indexed", False) else blk.attn.qkv(h)  # (1, h, R, hd)
        c.k.index_copy_(2, idx, k)  # scatter: the cache now holds fresh keys/values where recomputed
        c.v.index_copy_(2, idx, v)
        x = x + blk.attn.attend(q, c.k, c.v)  # R queries over all N keys → (1, R, D)
        x = x + blk.mlp(blk.ln2(x))
        c.out.index_copy_(1, idx, x)
        if blk.hook_out.active:  # hooks see (and may edit) the full-frame state
            c.out = blk.hook_out(c.out)
            x = c.out[:, idx]
    cache.final = cache.final.index_copy(1, idx, encoder.finish(x, modality))  # (1, N, D), a new tensor
    return cache.final


def masked_step(encoder: VisionEncoder, x: torch.Tensor, m: torch.Tensor, modality: str,
                cache: EncoderCache | None = None) -> tuple[torch.Tensor, EncoderCache]:
    """Differentiable, dense-cost simulation of one partial frame for training (stage 2), batched.

    x: (B, N, D) embeddings of the frame; m: (B, N) recompute weights (1 = recompute, 0 = reuse; a
    straight-through gate passes hard 0/1 forward and soft gradients back); cache: the previous frame's state
    (None = a first frame, m ignored). Every layer mixes fresh and cached keys/values/outputs by m, which in the
    forward pass is exactly `encode_partial` (recomputed queries over stale keys of reused tokens; reused
    outputs cached) while every token is computed (so it costs as much as dense).

        >>> enc = VisionEncoder(dim=8, depth=1, heads=2).eval()
        >>> x0, x1 = torch.randn(1, 196, 8), torch.randn(1, 196, 8)
        >>> _, c = masked_step(enc, x0, None, "rgb")
        >>> m = torch.zeros(1, 196); m[0, :5] = 1
        >>> y, _ = masked_step(enc, x1, m, "rgb", c.clone())
        >>> idx = torch.arange(5)
        >>> torch.allclose(y, encode_partial(enc, c, x1[:, idx], idx, "rgb"), atol=1e-5)
        True
    """
    if cache is None:
        return encode_full(encoder, x, modality)
    w = m[..., None]  # (B, N, 1)
    wh = m[:, None, :, None]  # (B, 1, N, 1) for (B, h, N, hd)
    layers = []
    h = x
    for blk, c in zip(encoder.blocks, cache.layers):
        q, k, v = blk.attn.qkv(blk.ln1(h))
        k = wh * k + (1 - wh) * c.k
        v = wh * v + (1 - wh) * c.v
        h = h + blk.attn.attend(q, k, v)
        h = h + blk.mlp(blk.ln2(h))
        h = w * h + (1 - w) * c.out  # reused rows: the cached block output (the next layer's input there)
        layers.append(LayerCache(k, v, h))
    out = w * encoder.finish(h, modality) + (1 - w) * cache.final
    return out, EncoderCache(layers, out)


def encode_clip(encoder: VisionEncoder, frames: torch.Tensor, modality: str, mask: torch.Tensor,
                emb: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Layer-major partial encoding of a whole clip: the same function as `encode_full` / `encode_partial`
    frame by frame, computed with one batched matmul per layer over all P recomputed tokens of the clip.

    frames (T, C, H, W), mask (T, N) bool recompute (frame 0 all True), emb (T, N, D) embeddings when already
    computed (embedding gate). Frame t's recomputed queries attend over keys gathered per patch from the row of
    its latest recompute at or before t (exactly the cache contents of the streaming order). Attention runs in
    two padded batches (dense frames; partial frames padded to their largest R), so padded query rows are
    computed and discarded (counted by FlopCounterMode). When every patch of every frame is recomputed it is
    exactly the dense encoder on the whole clip (bit-identical to `VisionEncoder.forward`).

    Returns (encoder output per frame (T, N, D), outputs of the recomputed rows (P, D) in frame-major order,
    src (T, N) the row each patch-frame's output comes from).

        >>> enc = VisionEncoder(dim=8, depth=2, heads=2).eval()
        >>> f = torch.rand(3, 3, 112, 112)
        >>> mask = torch.zeros(3, 196, dtype=torch.bool); mask[0] = True; mask[1, :7] = True; mask[2, 5:9] = True
        >>> out, rows, src = encode_clip(enc, f, "rgb", mask)
        >>> o0, c = encode_full(enc, enc.embed(f[:1], "rgb"), "rgb")
        >>> i1, i2 = torch.arange(7), torch.arange(5, 9)
        >>> o1 = encode_partial(enc, c, embed_patches(enc, f[1:2], "rgb", i1), i1, "rgb")
        >>> o2 = encode_partial(enc, c, embed_patches(enc, f[2:3], "rgb", i2), i2, "rgb")
        >>> torch.allclose(out, torch.cat([o0, o1, o2]), atol=1e-5), rows.shape
        (True, torch.Size([207, 8]))
    """
    t, n = mask.shape
    src = chunk_sources(mask)  # (T, N) row of the latest recompute of each patch (frame 0 dense: never carried)
    if bool(mask.all()):  # every patch of every frame: the dense encoder's exact calls on the whole clip
        out, _ = encode_full(encoder, emb if emb is not None else encoder.embed(frames, modality), modality)
        return out, out.reshape(t * n, -1), src
    y, _ = _layer_major(encoder, _row_embeddings(encoder, frames, modality, mask, emb), mask, src, modality)
    d = y.shape[-1]
    return y.index_select(0, src.flatten()).view(t, n, d), y, src


def _row_embeddings(encoder: VisionEncoder, frames: torch.Tensor, modality: str, mask: torch.Tensor,
                    emb: torch.Tensor | None, pixels: torch.Tensor | None = None) -> torch.Tensor:
    """Embeddings (1, P, D) of the recomputed patch-frames of `mask` (T, N), frame-major (pixels: the frames'
    patches (T, N, C·p·p) when already cut, e.g. by the gate)."""
    tt, ii = mask.nonzero(as_tuple=True)  # (P,) each, frame-major
    if emb is not None:
        return emb[tt, ii][None]
    patches = (pixels if pixels is not None else patchify(frames, encoder.patch_size))[tt, ii]  # (P, C·p·p)
    return (encoder.stems[modality](patches) + encoder.pos_embed[0, ii])[None]  # (1, P, D)


def _layer_major(encoder: VisionEncoder, x: torch.Tensor, mask: torch.Tensor, src: torch.Tensor, modality: str,
                 prev: EncoderCache | None = None, keep: bool = False) -> tuple[torch.Tensor, list[tuple]]:
    """The blocks over all P recomputed rows x (1, P, D) at once. src (T, N): where each patch-frame's keys /
    values come from — row r < P of this call, or P + j: patch j of the carried state `prev` (a stream's cache
    before these frames). Returns the final outputs of the rows (P, D) and, with keep, per block (k, v, out):
    keys / values (P [+ N], h, hd) and block outputs (P [+ N], D), indexed like src."""
    t, n = mask.shape
    counts = mask.sum(1)  # (T,)
    offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)[:-1]])  # (T,) first row of each frame
    groups = []
    for sel in (counts == n, (counts > 0) & (counts < n)):
        fr = sel.nonzero().squeeze(1)  # frames of this group
        if fr.numel() == 0:
            continue
        rmax = int(counts[fr].max())
        slot = torch.arange(rmax)  # (Rmax,)
        valid = slot[None] < counts[fr][:, None]  # (G, Rmax)
        rows = (offsets[fr][:, None] + slot[None]).where(valid, 0)  # (G, Rmax) row index, padding → row 0
        groups.append((rows.flatten(), src[fr].flatten(), valid.flatten(), len(fr), rmax))
    d = x.shape[-1]
    states = []
    for i, blk in enumerate(encoder.blocks):
        q, k, v = blk.attn.qkv(blk.ln1(x))  # each (1, h, P, hd)
        q, k, v = (z[0].transpose(0, 1) for z in (q, k, v))  # (P, h, hd) views: one row = one token
        if prev is not None:  # the carried state's keys / values after this call's rows: (P + N, h, hd)
            k = torch.cat([k, prev.layers[i].k[0].transpose(0, 1)])
            v = torch.cat([v, prev.layers[i].v[0].transpose(0, 1)])
        a = x.new_empty(x.shape[1:])  # (P, D)
        for rows, keys, valid, g, rmax in groups:
            heads = lambda z, length: z.view(g, length, *z.shape[1:]).transpose(1, 2)  # noqa: E731  (G, h, L, hd)
            qg = heads(q.index_select(0, rows), rmax)  # queries of the group, padded
            kg = heads(k.index_select(0, keys), n)  # keys as each frame saw them (latest recompute per patch)
            vg = heads(v.index_select(0, keys), n)
            og = blk.attn.attend(qg, kg, vg).reshape(g * rmax, d)  # (G, Rmax, D) → (G·Rmax, D)
            a[rows[valid]] = og[valid]
        x = x + a[None]
        x = x + blk.mlp(blk.ln2(x))
        if keep:
            states.append((k, v, x[0] if prev is None else torch.cat([x[0], prev.layers[i].out[0]])))
    return encoder.finish(x, modality)[0], states


def chunk_sources(mask: torch.Tensor) -> torch.Tensor:
    """(T, N) recompute mask of frames that follow a carried state → (T, N) source of each patch-frame: the
    row (frame-major rank among the recomputed) of its latest recompute at or before t, or P + j when patch j
    was not recomputed since the carried state (P = mask.sum()).

        >>> chunk_sources(torch.tensor([[False, True], [True, False], [False, False]])).tolist()
        [[2, 0], [1, 0], [1, 0]]
    """
    t, n = mask.shape
    frame = torch.arange(t)[:, None].expand(t, n)
    last = torch.where(mask, frame, -1).cummax(0).values  # (T, N) latest recompute frame ≤ t, −1: none
    rank = torch.full((t, n), -1, dtype=torch.long)
    rank[mask] = torch.arange(int(mask.sum()))  # frame-major order
    carried = int(mask.sum()) + torch.arange(n)[None].expand(t, n)
    return torch.where(last >= 0, rank.gather(0, last.clamp_min(0)), carried)


def encode_chunk(encoder: VisionEncoder, cache: EncoderCache | None, frames: torch.Tensor, modality: str,
                 mask: torch.Tensor, emb: torch.Tensor | None = None,
                 pixels: torch.Tensor | None = None) -> tuple[torch.Tensor, EncoderCache]:
    """The next T frames of a stream, layer-major: `encode_partial` frame by frame against `cache` (the state
    the stream carried), computed with one matmul per layer over all the chunk's recomputed tokens (as
    `encode_clip`). frames (T, C, H, W), mask (T, N) recompute (cache None: frame 0 must be all True), emb
    (T, N, D) embeddings or pixels (T, N, C·p·p) patches when already computed. Returns (encoder output per frame (T, N, D), the cache after
    the last frame — a new object; `cache` is not modified). A chunk whose every patch is recomputed is the
    dense encoder's exact calls on the T frames (bit-identical to dense).

        >>> enc = VisionEncoder(dim=8, depth=2, heads=2).eval()
        >>> f = torch.rand(3, 3, 112, 112)
        >>> o0, c = encode_full(enc, enc.embed(f[:1], "rgb"), "rgb")
        >>> mask = torch.zeros(2, 196, dtype=torch.bool); mask[0, :7] = True; mask[1, 5:9] = True
        >>> out, c2 = encode_chunk(enc, c, f[1:], "rgb", mask)
        >>> i1, i2 = torch.arange(7), torch.arange(5, 9)
        >>> o1 = encode_partial(enc, c, embed_patches(enc, f[1:2], "rgb", i1), i1, "rgb")
        >>> o2 = encode_partial(enc, c, embed_patches(enc, f[2:3], "rgb", i2), i2, "rgb")
        >>> torch.allclose(out, torch.cat([o1, o2]), atol=1e-5), torch.allclose(c2.final, c.final, atol=1e-5)
        (True, True)
    """
    t, n = mask.shape
    if bool(mask.all()):
        out, full = encode_full(encoder, emb if emb is not None else encoder.embed(frames, modality), modality)
        last = [LayerCache(c.k[-1:].clone(), c.v[-1:].clone(), c.out[-1:]) for c in full.layers]
        return out, EncoderCache(last, out[-1:])
    src = chunk_sources(mask)
    if cache is None and bool((src >= int(mask.sum())).any()):
        raise ValueError("a stream's first chunk must start with a dense frame (no carried state)")
    if not bool(mask.any()):  # nothing recomputed: every frame is the carried state
        return cache.final.expand(t, n, -1).clone(), cache.clone()
    y, states = _layer_major(encoder, _row_embeddings(encoder, frames, modality, mask, emb, pixels), mask, src,
                             modality, cache, keep=True)
    y_all = y if cache is None else torch.cat([y, cache.final[0]])  # (P [+ N], D)
    pick = src[-1]  # (N,) each patch's latest source after the chunk
    layers = [LayerCache(k.index_select(0, pick).transpose(0, 1)[None].contiguous(),
                         v.index_select(0, pick).transpose(0, 1)[None].contiguous(),
                         o.index_select(0, pick)[None]) for k, v, o in states]
    return y_all.index_select(0, src.flatten()).view(t, n, -1), EncoderCache(layers, y_all.index_select(0, pick)[None])
