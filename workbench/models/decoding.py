"""TinyVLM's decoder at inference: prefill over [sink | visual | prompt] with an optional decoder-side pruning
plan (`decoder_protocol.PrunePlan`), then greedy decoding from the key/value cache.

Each layer's cache holds the keys/values *that layer attended over at prefill*, with the per-key bias
(log(size) − log(Σ size), −inf on padding) beside them (`cache["kb"]`). Without a plan this is exactly the
previous single-bias decoder (same module calls in the same order: dense outputs are bit-identical). With a
plan, at each pruning depth (see `decoder_protocol`) the plan's `Selection` is applied by gathering the kept
slots of the visual block and appending one size-weighted mean token per recycled cluster after them:

    [sink | v0 v1 … v(n−1) | prompt]  ──select──►  [sink | kept … | recycled … | (padding) | prompt]

so pruned tokens leave the hidden states and every later layer's cache (its keys/values are computed on the
shorter sequence). A point before a layer attends (K = 0) gathers that layer's queries/keys/values too (the
recycled tokens' are computed from their merged states), so the pruned tokens take no part in its attention
and its cache. Ragged batches (samples keeping different numbers) are padded inside the visual block; padded
slots are −inf keys, so each sample attends over exactly the tokens it would alone.

    >>> import torch
    >>> from workbench.models.registry import create_model
    >>> m = create_model("tinyvlm-debug")
    >>> vt = m.encode_dense(torch.rand(1, 2, 3, 112, 112), "rgb")
    >>> out = prefill(m.decoder, m.sequence(vt, torch.tensor([[1, 5, 2]])), m.key_bias(vt, 3), vt)
    >>> out.hidden.shape, out.stats.sublayer.tolist()
    (torch.Size([1, 396, 32]), [[392.0, 392.0]])
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from workbench.models.decoder_protocol import PruneView, Selection, point_site, scoring_layer, validate_points
from workbench.models.visual_tokens import VisualTokens
from workbench.trace import active_recorder
from workbench.trace.schema import DECISIONS


_CAUSAL: dict[tuple, torch.Tensor] = {}  # (device, dtype) → the largest causal mask built so far
_CAUSAL_MAX = 4096  # positions; longer sequences build their mask each time (a cached 4096² fp32 mask is 64 MiB)


def causal_mask(length: int, device, dtype=torch.float32) -> torch.Tensor:
    """(L, L) additive causal mask (−inf above the diagonal): a view of one cached mask — causal(L) is the
    top-left corner of causal(M) for any M ≥ L — so a prefill does not rebuild L² entries at every point."""
    if length > _CAUSAL_MAX:
        return torch.full((length, length), float("-inf"), device=device, dtype=dtype).triu(1)
    key = (torch.device(device), dtype)
    cached = _CAUSAL.get(key)
    if cached is None or cached.shape[0] < length:
        size = min(_CAUSAL_MAX, max(length, 2 * (0 if cached is None else cached.shape[0]), 256))
        cached = torch.full((size, size), float("-inf"), device=device, dtype=dtype).triu(1)
        _CAUSAL[key] = cached
    return cached[:length, :length]


def prefill_mask(key_bias: torch.Tensor) -> torch.Tensor:
    """(B, L) key bias → (B, 1, L, L) causal mask plus the key bias (a broadcast view of the cached causal mask
    when the bias is all zero: the same values, nothing allocated)."""
    b, length = key_bias.shape
    causal = causal_mask(length, key_bias.device, key_bias.dtype)
    if not key_bias.any():
        return causal.expand(b, 1, length, length)  # (B, 1, L, L), read-only view
    return (causal[None] + key_bias[:, None, :])[:, None]  # (B, 1, L, L)


@dataclass
class DecoderStats:
    """Visual-token accounting of one prefill (METHODS.md §7; convention in `decoder_protocol`)."""

    points: tuple[float, ...]
    n_input: torch.Tensor  # (B,) visual tokens entering the decoder
    sublayer: torch.Tensor  # (B, 2·depth) visual tokens entering each sublayer (attention, MLP, attention, …)
    final: torch.Tensor  # (B,) visual tokens leaving the last layer
    n_text: int = 0  # prompt tokens (+ the sink) beside the visual ones
    dims: tuple[int, int] = (0, 0)  # decoder width, MLP width
    extra_flops: int = 0  # scoring rows, raters, clustering, projections of pruned/recycled tokens at K = 0
    outer_flops: int = 0  # projector and the first token's logits (set by the caller)
    flops: int = 0  # FlopCounterMode on the actual prefill (0 unless counted)
    ms: float = 0.0  # wall time of the prefill
    present: list = field(default_factory=list)  # per point: (B, n) ids of the visual tokens left (−1 padding)

    @property
    def analytic_flops(self) -> int:
        """METHODS.md §7's formula from the token counts alone (batch 1), plus the method's own work:
        per layer, projections + attention over the tokens entering its attention, MLP over those entering it."""
        d, mlp = self.dims
        total = 0
        for s_att, s_mlp in zip(self.sublayer[0, 0::2].tolist(), self.sublayer[0, 1::2].tolist()):
            la, lm = int(s_att) + self.n_text, int(s_mlp) + self.n_text
            total += 8 * la * d * d + 4 * la * la * d + 4 * lm * d * mlp
        return total + self.extra_flops + self.outer_flops

    @property
    def keep_fraction(self) -> torch.Tensor:
        """(B,) the paper's count: mean over sublayers of the tokens entering them ÷ tokens entering the decoder."""
        return self.sublayer.mean(1) / self.n_input.clamp_min(1)

    @property
    def visual_in(self) -> torch.Tensor:
        """(B, depth) visual tokens entering each layer (its attention)."""
        return self.sublayer[:, 0::2]

    @property
    def visual_out(self) -> torch.Tensor:
        """(B, depth) visual tokens leaving each layer."""
        return torch.cat([self.sublayer[:, 2::2], self.final[:, None]], 1)

    @property
    def last_layer(self) -> torch.Tensor:
        """(B,) visual tokens the last layer sees (entering its attention)."""
        return self.sublayer[:, -2]


@dataclass
class Prefill:
    hidden: torch.Tensor  # (B, L', D) final hidden states (after the norm) of the pruned sequence
    caches: list[dict]  # per layer: k, v (B, h, Lk, hd), kb (B, Lk)
    stats: DecoderStats


class _Seq:
    """The running sequence [sink | visual block | prompt] and its visual block's bookkeeping."""

    def __init__(self, x, kb, vt: VisualTokens):
        b, m = vt.size.shape
        self.x, self.kb = x, kb
        self.valid = torch.ones(b, m, dtype=torch.bool) if vt.valid is None else vt.valid.clone()
        self.ids = torch.where(self.valid, torch.arange(m).expand(b, -1), -1)
        self.size = vt.size.clone()
        self.total = (vt.size.clamp_min(1e-6) * self.valid).sum(1, keepdim=True).clamp_min(1.0)
        self.next_id = torch.full((b,), m, dtype=torch.long)

    @property
    def n(self) -> int:
        return int(self.valid.shape[1])

    def prompt(self) -> torch.Tensor:
        b, length = self.x.shape[:2]
        return torch.arange(1 + self.n, length).expand(b, -1)

    def count(self) -> torch.Tensor:
        return self.valid.sum(1).float()


def _merge(vis: torch.Tensor, size: torch.Tensor, cluster: torch.Tensor, c_max: int):
    """Size-weighted mean of the slots of each cluster: (B, C, D) states and (B, C) summed sizes (one matmul of
    the (B, C, n) membership weights with the states)."""
    w = torch.where(cluster >= 0, size, 0.0)  # (B, n)
    onehot = cluster[:, None, :] == torch.arange(c_max)[None, :, None]  # (B, C, n)
    weights = onehot * w[:, None, :]
    tot = weights.sum(2)  # (B, C)
    return (weights @ vis) / tot.clamp_min(1e-12)[..., None], tot


def _apply(seq: _Seq, sel: Selection, extra: list[torch.Tensor] | None = None, extra_fn=None,
           renormalize: bool = False):
    """Apply a Selection to the sequence in place. `extra` are (B, h, L, hd) tensors gathered along the sequence
    too (a pre-attention point's q, k, v); `extra_fn(merged states)` gives their values for the recycled tokens.
    Returns (gathered extras, decision code per old slot (B, n), recycled-into id per old slot (B, n))."""
    b, n = seq.valid.shape
    length, d = seq.x.shape[1:]
    kmask = torch.zeros(b, n, dtype=torch.bool)
    if sel.keep.shape[1]:
        kmask.scatter_(1, sel.keep.clamp(0, n - 1), sel.keep_valid)
    kmask &= seq.valid
    cluster = sel.cluster if sel.cluster is not None else torch.full((b, n), -1, dtype=torch.long)
    cluster = torch.where(kmask | ~seq.valid, -1, cluster)
    n_cl = sel.n_clusters if sel.cluster is not None else torch.zeros(b, dtype=torch.long)
    c_max = int(n_cl.max()) if b else 0
    n_keep = kmask.sum(1)
    if bool((n_keep == 0).any()):
        raise ValueError("a pruning selection must keep at least one visual token per sample")
    vis = seq.x[:, 1: 1 + n]  # (B, n, D)
    if c_max:
        merged, msize = _merge(vis, seq.size, cluster, c_max)  # (B, C, D), (B, C)
    else:
        merged, msize = vis.new_zeros(b, 0, d), seq.size.new_zeros(b, 0)
    # new visual block per sample: its kept slots in slot order, then its clusters; padded to the widest sample
    width = int((n_keep + n_cl).max())
    j = torch.arange(width).expand(b, -1)
    kept_first = (~kmask).to(torch.int8).argsort(dim=1, stable=True)  # (B, n): kept slots first, in order
    is_keep = j < n_keep[:, None]
    new_valid = j < (n_keep + n_cl)[:, None]
    vslot = torch.where(is_keep, kept_first.gather(1, j.clamp(max=n - 1)), n + (j - n_keep[:, None]))
    vslot = torch.where(new_valid, vslot, 0)  # (B, W) index into [old slots | clusters]
    pos = torch.where(vslot < n, 1 + vslot, length + vslot - n)  # into [old sequence | merged]
    pos = torch.where(new_valid, pos, 0)  # padding reads the sink (its key is masked below)
    full = torch.cat([torch.zeros(b, 1, dtype=torch.long), pos, torch.arange(1 + n, length).expand(b, -1)], 1)

    seq.x = torch.cat([seq.x, merged], 1).gather(1, full[..., None].expand(-1, -1, d))
    new_size = torch.where(new_valid, torch.cat([seq.size, msize], 1).gather(1, vslot), 1.0)
    cl_ids = seq.next_id[:, None] + torch.arange(c_max)  # (B, C)
    new_ids = torch.where(new_valid, torch.cat([seq.ids, cl_ids], 1).gather(1, vslot), -1)
    if renormalize:  # the visual block keeps the prior mass of one token (as in training on token subsets)
        seq.total = (new_size.clamp_min(1e-6) * new_valid).sum(1, keepdim=True).clamp_min(1.0)
        vis_kb = new_size.clamp_min(1e-6).log() - seq.total.log()
    else:  # each kept token keeps its key bias: exactly as if the pruned keys were masked out
        m_kb = msize.clamp_min(1e-6).log() - seq.total.log()
        vis_kb = torch.cat([seq.kb[:, 1: 1 + n], m_kb], 1).gather(1, vslot)
    vis_kb = vis_kb.masked_fill(~new_valid, float("-inf"))
    seq.kb = torch.cat([seq.kb[:, :1], vis_kb, seq.kb[:, 1 + n:]], 1)
    out_extra = []
    for e, me in zip(extra or [], extra_fn(merged) if (extra and c_max) else [None] * len(extra or [])):
        pool = e if me is None else torch.cat([e, me], 2)
        out_extra.append(pool.gather(2, full[:, None, :, None].expand(-1, e.shape[1], -1, e.shape[-1])))
    decision = torch.where(kmask, DECISIONS["kept"],
                           torch.where(cluster >= 0, DECISIONS["recycled"], DECISIONS["pruned"]))
    decision = torch.where(seq.valid, decision, -1)
    target = torch.where(cluster >= 0, seq.next_id[:, None] + cluster.clamp_min(0), -1)
    seq.valid, seq.size, seq.ids = new_valid, new_size, new_ids
    seq.next_id = seq.next_id + n_cl
    return out_extra, decision, target


def _rows_fn(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor, flops: list[int]):
    """attention(rows (B, R), rows_valid (B, R)) → (B, R, L) head-mean probabilities of this layer's attention."""
    b, h, length, hd = q.shape

    def attention(rows: torch.Tensor, rows_valid: torch.Tensor) -> torch.Tensor:
        r = rows.clamp(0, length - 1)
        qr = q.gather(2, r[:, None, :, None].expand(-1, h, -1, hd))  # (B, h, R, hd)
        scores = (qr @ k.transpose(-2, -1)) / math.sqrt(hd)  # (B, h, R, L)
        m = mask.gather(2, r[:, None, :, None].expand(-1, 1, -1, mask.shape[-1]))  # (B, 1, R, L)
        flops[0] += 2 * b * h * r.shape[1] * length * hd
        return (scores + m).softmax(-1).mean(1) * rows_valid[..., None]
    return attention


def prefill(decoder, x: torch.Tensor, key_bias: torch.Tensor, vt: VisualTokens, plan=None,
            name: str = "decoder") -> Prefill:
    """Run the decoder over the input sequence `x` (B, L, D) = [sink | M visual | prompt] with `key_bias`
    (B, L), pruning at `plan.points` (None: dense). Returns the final hidden states, per-layer caches and the
    token accounting; logs the per-point trace (batch 1) when a recorder is active."""
    blocks = list(decoder.blocks)
    depth, b = len(blocks), x.shape[0]
    points = validate_points(plan.points, depth) if plan is not None else ()
    at = {(scoring_layer(p), point_site(p)): (i, p) for i, p in enumerate(points)}
    seq = _Seq(x, key_bias, vt)
    embeds, prompt0, n_input, seq0_n = x, seq.prompt(), vt.counts().float(), seq.n
    counts, caches, flops, present = [], [], [0], []
    d, rec = x.shape[-1], active_recorder() if b == 1 else None

    def point(i: int, p: float, layer: int, attention, extra=None, extra_fn=None):
        view = PruneView(p, layer, i, seq.x, 1, seq.valid, seq.ids, seq.size, seq.prompt(),
                         torch.ones(b, seq.x.shape[1] - 1 - seq.n, dtype=torch.bool), n_input, embeds, 1,
                         prompt0, attention)
        sel = plan.select(view)
        flops[0] += int(sel.extra_flops)
        before = (seq.ids.clone(), seq.count())
        n_before = seq.n
        out, decision, target = _apply(seq, sel, extra, extra_fn, sel.renormalize)
        present.append(seq.ids.clone())
        if sel.cluster is not None:  # the merge: (B, C, n) membership weights @ (B, n, D) states
            flops[0] += 2 * b * int(sel.n_clusters.max()) * n_before * d
        if rec is not None:
            _log_point(rec, name, p, layer, before, seq.count(), sel, decision, target)
        return out

    mask = prefill_mask(seq.kb)  # rebuilt only when a point changes the sequence
    for layer, blk in enumerate(blocks):
        length = seq.x.shape[1]
        q, k, v = blk.attn.qkv(blk.ln1(seq.x))
        n_recycled = seq.next_id.max()
        if (layer, "pre") in at:
            i, p = at[(layer, "pre")]

            def qkv_of(merged, blk=blk):
                return list(blk.attn.qkv(blk.ln1(merged)))
            q, k, v = point(i, p, layer, _rows_fn(q, k, mask, flops), [q, k, v], qkv_of)
            mask = prefill_mask(seq.kb)
            # q/k/v were projected for every token before the point, and again for the recycled ones
            flops[0] += 6 * d * d * b * (length - seq.x.shape[1] + int(seq.next_id.max()) - int(n_recycled))
            length = seq.x.shape[1]
        counts.append(seq.count())
        caches.append({"k": k, "v": v, "kb": seq.kb})
        seq.x = seq.x + blk.attn.attend(q, k, v, mask, True)
        if (layer, "mid") in at:
            i, p = at[(layer, "mid")]
            point(i, p, layer, _rows_fn(q, k, mask, flops))
            mask = None
        counts.append(seq.count())
        seq.x = blk.hook_out(seq.x + blk.mlp(blk.ln2(seq.x)))
        if (layer, "post") in at:
            i, p = at[(layer, "post")]
            point(i, p, layer, _rows_fn(q, k, mask, flops))
            mask = None
        if mask is None and layer + 1 < depth:
            mask = prefill_mask(seq.kb)
    stats = DecoderStats(points, n_input, torch.stack(counts, 1), seq.count(), x.shape[1] - seq0_n,
                         (d, blocks[0].mlp.fc1.out_features), flops[0], present=present)
    if rec is not None and plan is not None:
        _log_stats(rec, stats)
    return Prefill(decoder.norm(seq.x), caches, stats)


def decode_step(decoder, x: torch.Tensor, caches: list[dict]) -> torch.Tensor:
    """One generated position (B, 1, D) through every layer, attending over (and appending to) its cache."""
    for blk, cache in zip(decoder.blocks, caches):
        cache["kb"] = torch.cat([cache["kb"], cache["kb"].new_zeros(x.shape[0], 1)], 1)
        x = blk(x, cache["kb"][:, None, None, :], False, cache)
    return decoder.norm(x)


def _log_point(rec, name, depth, layer, before, after, sel, decision, target) -> None:
    site = f"{name}.prune"
    ids, n_in = before
    valid = ids[0] >= 0
    tok = ids[0][valid]
    rec.log("depth", depth, site=site, layer=layer)
    rec.log("tokens_in", n_in[0], site=site, layer=layer)
    rec.log("tokens_out", after[0], site=site, layer=layer)
    if sel.scores is not None:
        rec.log("score", sel.scores[0][valid], site=site, layer=layer, token=tok)
    rec.log("decision", decision[0][valid], site=site, layer=layer, token=tok, target=target[0][valid])
    for key, val in sel.info.items():
        rec.log(key, val[0] if torch.is_tensor(val) and val.ndim else val, site=site, layer=layer)


def _log_stats(rec, stats: DecoderStats) -> None:
    depth = stats.sublayer.shape[1] // 2
    layers = torch.arange(depth)
    rec.log("visual_in", stats.visual_in[0], site="decoder", layer=layers)
    rec.log("visual_mlp", stats.sublayer[0, 1::2], site="decoder", layer=layers)
    rec.log("visual_out", stats.visual_out[0], site="decoder", layer=layers)
    rec.log("keep_fraction", stats.keep_fraction[0], site="decoder")
    rec.log("visual_last", stats.last_layer[0], site="decoder")
