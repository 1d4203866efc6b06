"""Decoder-side pruning inside an unmodified Hugging Face decoder: the `decoder_protocol` contract (PruneView →
Selection, depths K in half layers) driven by forward hooks, so SparseVLM, FastV and the random control run on
LLaVA's Llama, Qwen2-VL's M-RoPE Qwen2 and OneVision's Qwen2 exactly as on TinyVLM.

At prefill (the first forward of `generate`, batch 1), with the visual block at `block.start .. + n`:

    K = 0        pre-hook of layer 0: scores from layer 0's own attention rows (recomputed), then prune
    K = ℓ + 1    pre-hook of layer ℓ + 1: scores from layer ℓ's attention (its inputs captured by a pre-hook on
                 its self_attn), then prune
    K = ℓ + ½    inside layer ℓ, after its attention: a pre-hook on post_attention_layernorm prunes the residual
                 stream and runs the layer's own MLP on the shorter sequence; the layer then computes its MLP
                 on one row only and a forward hook returns the pruned output (the layer's code is untouched)

Pruning gathers the kept visual slots and appends one size-weighted mean token per recycled cluster after them
(`decoding._merge`), and every later layer's pre-hook slices what the HF decoder computed once for the whole
sequence: the rotary cos/sin (Qwen2-VL's M-RoPE already folds its three sections into them), `position_ids`
(2-D, or M-RoPE's 3-D) and the 4-D mask. **Original positions are kept** (FastV style): each remaining token
keeps its RoPE position; a recycled token takes the position of its cluster's highest-scoring member (the
token SparseVLM ranked first among those merged). Attention stays causal in the pruned sequence order. Layers
after a point store only the remaining keys/values in the cache; during decoding `get_seq_length()` (layer 0,
unpruned) keeps the positions right, and a pre-hook cuts eager's mask to each layer's own key length (the HF
mask is sized from layer 0). `block.keep` drops visual tokens before layer 0 (STTF's temporal fusion on HF
models: a token whose patches were all reused), keeping their original positions too.

A Selection that keeps every slot and recycles none changes nothing (no gather), so keep = 1 is the unmodified
`generate` bit for bit. Batch 1 without padding (as SparseVLM's release); `attention(rows)` recomputes the
scoring layer's head-mean probabilities (q of the rows, k of all, RoPE, the layer's mask; the eager kernel's
math) for any attention backend. HF decoders have no key-bias slot, so a recycled token attends like any other
token (no log(size) proportional attention) and `Selection.renormalize` has no effect.

    >>> from workbench.models.hf.tiny import tiny_llava
    >>> from workbench.methods.fastv import FastV, FastVConfig
    >>> hf, _ = tiny_llava()
    >>> ids = torch.tensor([[1, 13] + [4] * 16 + [20, 21]])  # <s> USER: <image>×16 w w
    >>> with PrunedPrefill(hf.model.language_model, FastV(FastVConfig(K=1, R=0.75)).plan(4), VisualBlock(2, 16)) as run:
    ...     _ = hf.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    >>> run.stats.visual_in[0].tolist(), run.cache_lengths()
    ([16.0, 4.0, 4.0, 4.0], [20, 8, 8, 8])
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from workbench.models.decoder_protocol import PruneView, point_site, scoring_layer, validate_points
from workbench.models.decoding import DecoderStats, _log_point, _merge
from workbench.trace import active_recorder
from workbench.trace.schema import DECISIONS


@dataclass(frozen=True)
class VisualBlock:
    """Where the visual tokens sit in the decoder's input: positions start .. start + n (contiguous); keep (n,)
    bool drops tokens before layer 0 (None: all enter)."""

    start: int
    n: int
    keep: torch.Tensor | None = None


class HFDecoderStats(DecoderStats):
    """DecoderStats with the analytic prefill FLOPs of an HF decoder layer (GQA projections, gated MLP)."""

    heads: tuple[int, int, int] = (1, 1, 1)  # (query heads, key/value heads, head dim)

    @property
    def analytic_flops(self) -> int:
        d, m = self.dims
        nh, kvh, hd = self.heads
        total = 0
        for s_att, s_mlp in zip(self.sublayer[0, 0::2].tolist(), self.sublayer[0, 1::2].tolist()):
            la, lm = int(s_att) + self.n_text, int(s_mlp) + self.n_text
            total += 2 * la * d * hd * (2 * nh + 2 * kvh) + 4 * la * la * nh * hd + 6 * lm * d * m
        return total + self.extra_flops + self.outer_flops


def _rotary(attn):
    return __import__(type(attn).__module__, fromlist=["apply_rotary_pos_emb"]).apply_rotary_pos_emb


def rows_attention(attn, normed: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask, flops: list[int]):
    """attention(rows (1, R), rows_valid (1, R)) → (1, R, L) head-mean probabilities of an HF self-attention
    module over inputs `normed` (1, L, D) (after its input norm), rotary (cos, sin) (1, L, hd) and its mask."""
    cfg = attn.config
    hd, nh, kvh = attn.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
    length = normed.shape[1]
    rot = _rotary(attn)

    def attention(rows: torch.Tensor, rows_valid: torch.Tensor) -> torch.Tensor:
        r = rows[0].clamp(0, length - 1)
        q = attn.q_proj(normed[:, r]).view(1, len(r), -1, hd).transpose(1, 2)  # (1, nh, R, hd)
        k = attn.k_proj(normed).view(1, length, -1, hd).transpose(1, 2)  # (1, kvh, L, hd)
        if hasattr(attn, "q_norm"):
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, _ = rot(q, q, cos[:, r], sin[:, r])
        _, k = rot(k, k, cos, sin)
        k = k.repeat_interleave(nh // kvh, dim=1)  # (1, nh, L, hd) = transformers' repeat_kv
        s = (q @ k.transpose(-1, -2)) * attn.scaling  # (1, nh, R, L)
        if torch.is_tensor(mask):
            m = mask[:, :, r]  # (1, 1, R, L)
            s = s.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else s + m
        else:  # sdpa's implicit causal mask
            s = s.masked_fill(torch.arange(length)[None, :] > r[:, None], float("-inf"))
        d = normed.shape[-1]
        flops[0] += 2 * len(r) * d * nh * hd + 2 * length * d * kvh * hd + 2 * nh * len(r) * length * hd
        return s.softmax(-1, dtype=torch.float32).mean(1) * rows_valid[..., None]
    return attention


class PrunedPrefill:
    """Context manager: hooks on an HF text model `lm` (LlamaModel, Qwen2Model, Qwen2VLTextModel) for one
    `generate` call. plan: a `PrunePlan` (None: no decoder-side method; `block.keep` may still drop tokens).
    count: the prefill's first model forward runs under FlopCounterMode (`count_model`). After the call:
    `stats` (HFDecoderStats), `last_hidden` (1, D) of the last prefill position."""

    def __init__(self, lm, plan, block: VisualBlock, name: str = "decoder"):
        self.lm, self.plan, self.block, self.name = lm, plan, block, name
        self.layers = list(lm.layers)
        depth = len(self.layers)
        self.points = validate_points(plan.points, depth) if plan is not None else ()
        self.at = {(scoring_layer(p), point_site(p)): (i, p) for i, p in enumerate(self.points)}
        self.scoring = {scoring_layer(p) for p in self.points}
        self.handles, self.stats, self.last_hidden = [], None, None
        self.flops, self.ms = [0], 0.0
        self._state = None
        self._captured: dict[int, tuple] = {}

    # ---- hooks -----------------------------------------------------------------------------------------------
    def __enter__(self):
        for i, layer in enumerate(self.layers):
            self.handles.append(layer.register_forward_pre_hook(self._layer_pre(i), with_kwargs=True))
            if i in self.scoring:
                self.handles.append(layer.self_attn.register_forward_pre_hook(self._capture(i), with_kwargs=True))
            if (i, "mid") in self.at:
                if not hasattr(layer, "post_attention_layernorm") or not hasattr(layer, "mlp"):
                    from workbench.errors import InputError
                    raise InputError("--points", f"{type(layer).__name__} has no post_attention_layernorm / mlp: "
                                                 "prune at whole layers (K = 1, 2, …)")
                self.handles.append(layer.post_attention_layernorm.register_forward_pre_hook(self._mid(i)))
                self.handles.append(layer.register_forward_hook(self._mid_out(i)))
        self.handles.append(self.lm.norm.register_forward_hook(self._end))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []
        return False

    def _start(self, hidden: torch.Tensor) -> None:
        if hidden.shape[0] != 1:
            raise ValueError("decoder-side pruning on Hugging Face models runs one sample at a time (batch 1)")
        blk, length = self.block, hidden.shape[1]
        if blk.start + blk.n > length:
            raise ValueError(f"visual block {blk.start}..{blk.start + blk.n} is outside the {length}-token prompt")
        n = blk.n
        self._state = s = _State(torch.arange(length), blk.start, n)
        s.length0 = length
        s.t0 = time.perf_counter()
        s.layer_len = [0] * len(self.layers)
        s.counts = []
        if blk.keep is not None and not bool(blk.keep.all()):
            kept = blk.keep.nonzero().squeeze(1)
            s.src = torch.cat([s.src[: blk.start], blk.start + kept, s.src[blk.start + n:]])
            s.ids, s.size, s.n = kept.clone(), torch.ones(len(kept)), len(kept)
        s.n_input = s.n

    def _layer_pre(self, i: int):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            if i == 0 and self._state is None and hidden.shape[1] > 1:  # the prefill begins
                self._start(hidden)
            st = self._state
            if st is None or st.done:  # decoding: cut eager's mask to this layer's own key length
                mask = kwargs.get("attention_mask")
                cache = kwargs.get("cache")
                if torch.is_tensor(mask) and cache is not None:
                    lk = cache.get_seq_length(i) + hidden.shape[1]
                    if mask.shape[-1] > lk:
                        kwargs["attention_mask"] = mask[..., -lk:]
                return args, kwargs
            if i == 0:
                hidden = self._sliced_hidden(hidden)
                st.embeds, st.input_prompt = hidden, st.prompt(hidden.shape[1])
                st.input_start = st.start
            full = dict(kwargs)  # what the decoder computed for the whole input (every layer gets the same)
            if i == 0 and (0, "pre") in self.at:
                j, p = self.at[(0, "pre")]
                cur = {**full, **self._sliced(full)}
                pe, mask = cur["position_embeddings"], cur.get("attention_mask")
                att = rows_attention(module.self_attn, module.input_layernorm(hidden), pe[0], pe[1], mask, self.flops)
                hidden = self._point(j, p, 0, hidden, att)
            elif (i - 1, "post") in self.at:
                j, p = self.at[(i - 1, "post")]
                hidden = self._point(j, p, i - 1, hidden, self._attention(i - 1))
            kwargs.update(self._sliced(full))  # cut once, to the slots left after this layer's point
            st.counts.append(float(st.n))
            st.layer_len[i] = hidden.shape[1]
            if (i, "mid") not in self.at:
                st.counts.append(float(st.n))
            if args:
                args = (hidden,) + tuple(args[1:])
            else:
                kwargs["hidden_states"] = hidden
            return args, kwargs
        return hook

    def _capture(self, i: int):
        def hook(module, args, kwargs):
            st = self._state
            if st is not None and not st.done:
                h = args[0] if args else kwargs["hidden_states"]
                cos, sin = kwargs["position_embeddings"]
                self._captured[i] = (module, h, cos, sin, kwargs.get("attention_mask"))
        return hook

    def _attention(self, layer: int):
        module, h, cos, sin, mask = self._captured.pop(layer)
        return rows_attention(module, h, cos, sin, mask, self.flops)

    def _mid(self, i: int):
        layer = self.layers[i]

        def hook(module, args):
            st = self._state
            if st is None or st.done or st.in_mid:
                return None
            h = args[0]  # (1, L, D) residual stream after layer i's attention
            j, p = self.at[(i, "mid")]
            new = self._point(j, p, i, h, self._attention(i))
            st.counts.append(float(st.n))
            if new is h:  # nothing pruned: the layer runs as it is
                st.mid_out = None
                return None
            st.in_mid = True  # (the norm's own pre-hook must not fire again)
            st.mid_out = new + layer.mlp(layer.post_attention_layernorm(new))  # the layer's own MLP, shorter
            st.in_mid = False
            return (h[:, :1],)  # the layer's MLP then runs on one row; its output is replaced in _mid_out
        return hook

    def _mid_out(self, i: int):
        def hook(module, args, out):
            st = self._state
            if st is None or st.done or st.mid_out is None:
                return None
            res, st.mid_out = st.mid_out, None
            return res
        return hook

    def _end(self, module, args, out):
        st = self._state
        if st is None or st.done:
            return None
        st.done = True
        self.ms = (time.perf_counter() - st.t0) * 1e3
        self.last_hidden = out[:, -1].detach()
        self._make_stats(st, out)
        return None

    # ---- the sequence ------------------------------------------------------------------------------------------
    def _sliced_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        st = self._state
        return hidden if len(st.src) == hidden.shape[1] else hidden[:, st.src]

    def _sliced(self, full: dict) -> dict:
        """What the decoder computed once for the whole input (`full`: every layer gets the same tensors, over
        the L0 input positions) cut to the remaining slots: each slot keeps its original position (`src`)."""
        st = self._state
        src, length, out = st.src, len(st.src), {}
        if length == st.length0:
            return out
        pe = full.get("position_embeddings")
        if pe is not None:
            out["position_embeddings"] = tuple(t.index_select(1, src) for t in pe)  # (1, L0, hd) → (1, L, hd)
        pos = full.get("position_ids")
        if torch.is_tensor(pos):
            out["position_ids"] = pos.index_select(pos.ndim - 1, src)  # (1, L0) or M-RoPE (3, 1, L0)
        mask = full.get("attention_mask")
        if torch.is_tensor(mask):
            out["attention_mask"] = mask[:, :, :length, :length]  # a causal block (batch 1, no padding)
        return out

    def _point(self, j: int, p: float, layer: int, hidden: torch.Tensor, attention) -> torch.Tensor:
        st = self._state
        n, length = st.n, hidden.shape[1]
        valid = torch.ones(1, n, dtype=torch.bool)
        prompt = st.prompt(length)
        view = PruneView(p, layer, j, hidden, st.start, valid, st.ids[None], st.size[None], prompt,
                         torch.ones_like(prompt, dtype=torch.bool), torch.tensor([float(st.n_input)]), st.embeds,
                         st.input_start, st.input_prompt, attention)
        sel = self.plan.select(view)
        self.flops[0] += int(sel.extra_flops)
        before = (st.ids[None].clone(), torch.tensor([float(n)]))
        keep = torch.zeros(n, dtype=torch.bool)
        if sel.keep.shape[1]:
            keep[sel.keep[0][sel.keep_valid[0]]] = True
        cluster = sel.cluster[0].clone() if sel.cluster is not None else torch.full((n,), -1, dtype=torch.long)
        cluster[keep] = -1
        n_cl = int(sel.n_clusters[0]) if sel.cluster is not None else 0
        if not bool(keep.any()):
            raise ValueError("a pruning selection must keep at least one visual token")
        decision = torch.where(keep, DECISIONS["kept"], torch.where(cluster >= 0, DECISIONS["recycled"],
                                                                    DECISIONS["pruned"]))
        target = torch.where(cluster >= 0, st.next_id + cluster.clamp_min(0), -1)
        new = hidden
        if not (bool(keep.all()) and n_cl == 0):
            s, kept = st.start, keep.nonzero().squeeze(1)
            vis = hidden[:, s: s + n]  # (1, n, D)
            merged, msize = _merge(vis, st.size[None], cluster[None], n_cl) if n_cl else (vis[:, :0], st.size[:0][None])
            rep = _representatives(cluster, n_cl, sel.scores[0] if sel.scores is not None else None)
            new = torch.cat([hidden[:, :s], vis[:, kept], merged, hidden[:, s + n:]], 1)
            st.src = torch.cat([st.src[:s], st.src[s + kept], st.src[s + rep], st.src[s + n:]])
            st.ids = torch.cat([st.ids[kept], st.next_id + torch.arange(n_cl)])
            st.size = torch.cat([st.size[kept], msize[0]])
            st.n = len(st.ids)
        st.next_id += n_cl
        st.present.append(st.ids[None].clone())
        rec = active_recorder()
        if rec is not None:
            _log_point(rec, self.name, p, layer, before, torch.tensor([float(st.n)]), sel, decision[None],
                       target[None])
        return new

    def _make_stats(self, st, out) -> None:
        cfg = self.lm.config
        d, m = cfg.hidden_size, cfg.intermediate_size
        hd = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
        stats = HFDecoderStats(self.points, torch.tensor([float(st.n_input)]), torch.tensor([st.counts]),
                               torch.tensor([float(st.n)]), len(st.src) - st.n, (d, m), self.flops[0],
                               present=st.present)
        stats.heads = (cfg.num_attention_heads, cfg.num_key_value_heads, hd)
        stats.ms = self.ms
        self.stats = stats
        rec = active_recorder()
        if rec is not None and self.plan is not None:
            from workbench.models.decoding import _log_stats
            _log_stats(rec, stats)

    def cache_lengths(self) -> list[int]:
        """Tokens each layer attended over at prefill (its cache length before decoding)."""
        return list(self._state.layer_len) if self._state is not None else []


class _State:
    """The running prefill: slot → original position (`src`), the visual block's ids / sizes, bookkeeping."""

    def __init__(self, src: torch.Tensor, start: int, n: int):
        self.src, self.start, self.n = src, start, n
        self.ids, self.size = torch.arange(n), torch.ones(n)
        self.next_id, self.n_input = n, n
        self.present, self.counts, self.layer_len = [], [], []
        self.done = self.in_mid = False
        self.mid_out = None
        self.embeds = self.input_prompt = None
        self.input_start, self.t0 = start, 0.0

    def prompt(self, length: int) -> torch.Tensor:
        """(1, P) positions of the text after the visual block."""
        return torch.arange(self.start + self.n, length)[None]


def _representatives(cluster: torch.Tensor, n_cl: int, scores: torch.Tensor | None) -> torch.Tensor:
    """(C,) the slot of each cluster whose RoPE position the recycled token takes: its highest-scoring member
    (the first member when the method gives no scores)."""
    out = torch.zeros(n_cl, dtype=torch.long)
    for c in range(n_cl):
        members = (cluster == c).nonzero().squeeze(1)
        if scores is None or bool(torch.isnan(scores[members]).all()):
            out[c] = members[0]
        else:
            out[c] = members[int(torch.nan_to_num(scores[members], nan=float("-inf")).argmax())]
    return out
