"""A Hugging Face vision tower presented in the shape STTF's partial encoding uses (`models/protocol.VisionTower`).

STTF (`methods/sttf.py`, `methods/ops/partial.py`) encodes frame by frame and touches only: `patch_size`,
`stems[m].in_features`, `pos_embed`, `embed(frames, m)`, `embed_at(patches, idx, m)`, `blocks[i].ln1`,
`.attn.qkv(x[, idx])`, `.attn.attend(q, k, v)`, `.ln2`, `.mlp`, `.hook_out` and `finish(x, m)`. `HFTower` maps
these onto the unmodified HF modules of three towers (no HF code is changed or copied; the HF attention function
the checkpoint was configured with is the one called):

    CLIP (LLaVA-1.5)    embeddings (conv + CLS + position) → pre_layrnorm → layers[:feature_layer]; CLS dropped
    SigLIP (OneVision)  embeddings (conv + position) → layers[:feature_layer]
    Qwen2-VL            Conv3d over (C, 2 frames, p, p) patches → blocks with 2-D RoPE → (merger: the LM side)

Token order. STTF works on the patch grid row-major (`ops.gates.patch_pixels`). Where the HF tower orders its
tokens differently — CLIP's CLS first, Qwen2-VL's 2×2 merge windows — the tower here keeps row-major order (CLS
last) and `attend` puts the keys/values back into the HF order before calling the HF attention function, so each
query row sees exactly the HF computation: a full frame is bit-identical to the HF tower (tests/test_hf_vision.py,
torch.equal). Frames enter in [0, 1] at the tower's resolution (the checkpoint's image processor resizes, without
normalising); `embed`/`embed_at` normalise with the processor's mean/std exactly as its NumPy code does
(float32 (x − mean) / std), so full frames match the processor's own pixel values bit for bit.

Partial frames (τ > 0): recomputed rows are embedded by `embed_at` (the conv weights as a linear stem — equal to
the conv up to float rounding), attend over the cached keys/values of all tokens (CLIP's CLS included: it is
never recomputed at a partial frame, i.e. it is stale like every reused token — the approximation STTF already
documents) and Qwen2-VL's rows get their own 2-D RoPE positions (`attn.indexed`: partial encoding passes idx).

    >>> import torch
    >>> from workbench.models.hf.tiny import tiny_llava
    >>> hf, proc = tiny_llava()
    >>> tower = clip_tower(hf.model.vision_tower, -2, proc.image_processor)
    >>> tower.grid, tower.num_patches, len(tower.blocks)  # 16 px images, 4 px patches; features of layer −2 of 3
    ((4, 4), 16, 2)
    >>> tower.embed(torch.rand(2, 3, 16, 16), "rgb").shape  # 16 patches + CLS (last)
    torch.Size([2, 17, 32])
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workbench.models.hooks import HookPoint


def _interface(attn_module) -> callable:
    """The attention function the HF module itself would call (eager, sdpa, …)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    mod = __import__(type(attn_module).__module__, fromlist=["eager_attention_forward"])
    return ALL_ATTENTION_FUNCTIONS.get_interface(attn_module.config._attn_implementation, mod.eager_attention_forward)


class PatchStem(nn.Module):
    """Pixels of R patches (B, R, C·p·p) in [0, 1] → normalised → the patch conv's weights as a linear map.
    `in_features` is what STTF's analytic FLOPs read."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.weight, self.bias = weight, bias  # (D, C·p·p) views of the HF conv (shared, not copied)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("mean", mean, persistent=False)  # (C·p·p,) per-channel mean, repeated over the patch
        self.register_buffer("std", std, persistent=False)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return F.linear((patches - self.mean) / self.std, self.weight, self.bias)


class TowerAttention(nn.Module):
    """`qkv(x[, idx])` → q, k, v (B, h, R, hd) and `attend(q, k, v)` → (B, R, D) over one HF attention module.

    key_order: (N',) long, the HF position of each row-major token — keys/values are put in HF order before the
    HF attention function runs (None: same order). rope: callable(q, k, idx) applying the tower's RoPE to the rows
    idx (None: no RoPE). fused: the HF module has one `qkv` Linear (Qwen2-VL) instead of q/k/v_proj.
    """

    def __init__(self, hf_attn: nn.Module, key_order: torch.Tensor | None = None, rope=None, fused: bool = False,
                 call_kwargs: dict | None = None):
        super().__init__()
        self.hf = hf_attn
        self.heads = hf_attn.num_heads
        self.head_dim = hf_attn.head_dim
        self.scale = getattr(hf_attn, "scale", None) or hf_attn.scaling
        self.fused, self.rope = fused, rope
        self.indexed = rope is not None  # partial encoding passes the rows' indices (positions) to qkv
        self.register_buffer("key_order", key_order, persistent=False)
        self.register_buffer("rows_back", None if key_order is None else torch.argsort(key_order), persistent=False)
        self.call_kwargs = dict(call_kwargs or {})
        self._fn = _interface(hf_attn)

    def qkv(self, x: torch.Tensor, idx: torch.Tensor | None = None):
        """(B, R, D) → q, k, v each (B, h, R, hd); with RoPE, rows idx (None: all rows, row-major)."""
        b, r, _ = x.shape
        if self.fused:  # Qwen2-VL: qkv (B, R, 3·D) → (B, R, 3, h, hd) → 3 × (B, R, h, hd), as the HF module does
            q, k, v = self.hf.qkv(x).reshape(b, r, 3, self.heads, -1).permute(2, 0, 1, 3, 4).unbind(0)
            if self.rope is not None:
                q, k = self.rope(q, k, idx)
            return tuple(t.transpose(1, 2) for t in (q, k, v))  # (B, R, h, hd) → (B, h, R, hd)
        shape = (b, r, -1, self.head_dim)
        return tuple(proj(x).view(shape).transpose(1, 2) for proj in (self.hf.q_proj, self.hf.k_proj, self.hf.v_proj))

    def attend(self, q, k, v, bias=None, causal=False) -> torch.Tensor:
        """R queries over all N' cached keys/values (row-major) → (B, R, D), through the HF attention function."""
        full = self.key_order is not None and q.shape[2] == k.shape[2]
        if self.key_order is not None:
            k, v = k[:, :, self.key_order], v[:, :, self.key_order]  # back to the HF token order
        if full:  # a whole frame: queries in the HF order too (the CPU attention kernel's rows depend on it)
            q = q[:, :, self.key_order]
        out = self._fn(self.hf, q, k, v, None, scaling=self.scale, dropout=0.0, **self.call_kwargs)[0]  # (B, R, h, hd)
        if full:
            out = out[:, self.rows_back]
        b, r = q.shape[0], q.shape[2]
        out = out.reshape(b, r, -1).contiguous()
        return (self.hf.proj if self.fused else self.hf.out_proj)(out)


class TowerBlock(nn.Module):
    """One HF encoder layer as `ln1 / attn / ln2 / mlp / hook_out` (pre-LN: x + attn(ln1 x), then + mlp(ln2 x))."""

    def __init__(self, ln1: nn.Module, attn: TowerAttention, ln2: nn.Module, mlp: nn.Module):
        super().__init__()
        self.ln1, self.attn, self.ln2, self.mlp = ln1, attn, ln2, mlp
        self.hook_out = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.attn.qkv(self.ln1(x))
        x = x + self.attn.attend(q, k, v)
        return self.hook_out(x + self.mlp(self.ln2(x)))


class HFTower(nn.Module):
    """The vision-tower protocol over an HF tower. Build it with `clip_tower`, `siglip_tower` or `qwen2vl_tower`.

    grid (gh, gw) patches per frame, num_patches N = gh·gw, extra = tokens beside the patches (CLIP's CLS: 1),
    in_channels = channels of one tower frame (Qwen2-VL: 3 × 2 frames)."""

    def __init__(self, kind: str, patch_size: int, grid: tuple[int, int], blocks: list[TowerBlock], stem: PatchStem,
                 pos_embed: torch.Tensor, embed_fn, extra: int = 0, pre_norm: nn.Module | None = None,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        self.kind, self.patch_size, self.grid, self.extra = kind, patch_size, tuple(grid), extra
        self.num_patches = grid[0] * grid[1]
        self.blocks = nn.ModuleList(blocks)
        self.stems = nn.ModuleDict({"rgb": stem})
        self.pos_embed = pos_embed  # (1, N, D) position embedding of each patch (zeros under RoPE)
        self.pre_norm = pre_norm
        self._embed_fn = embed_fn
        self.register_buffer("mean", mean, persistent=False)  # (C,) per channel of a tower frame
        self.register_buffer("std", std, persistent=False)
        self.hook_patch_embed, self.hook_out = HookPoint(), HookPoint()

    @property
    def dim(self) -> int:
        return self.stems["rgb"].out_features

    @staticmethod
    def _check(modality: str) -> None:
        if modality != "rgb":
            from workbench.errors import InputError
            raise InputError("modality", f"Hugging Face vision towers take RGB frames, not {modality!r} (event "
                                         "clips run on TinyVLM)")

    def normalise(self, frames: torch.Tensor) -> torch.Tensor:
        """(F, C, H, W) in [0, 1] → the processor's pixel values, (x − mean) / std in float32 (its exact ops)."""
        return (frames - self.mean[:, None, None]) / self.std[:, None, None]

    def embed(self, frames: torch.Tensor, modality: str = "rgb") -> torch.Tensor:
        """(F, C, H, W) in [0, 1] → (F, N + extra, D): the HF embeddings (+ pre-norm), row-major, CLS last."""
        self._check(modality)
        return self.hook_patch_embed(self._embed_fn(self.normalise(frames)))

    def embed_at(self, patches: torch.Tensor, idx: torch.Tensor, modality: str = "rgb") -> torch.Tensor:
        """Pixels (B, R, C·p·p) of the patches idx (R,) → (B, R, D) embeddings of those patches only."""
        self._check(modality)
        x = self.stems[modality](patches) + self.pos_embed[:, idx]
        return x if self.pre_norm is None else self.pre_norm(x)

    def finish(self, x: torch.Tensor, modality: str = "rgb") -> torch.Tensor:
        """Last block's output (F, K, D) → features of the patches (CLS, when present, dropped)."""
        if self.extra and x.shape[1] == self.num_patches + self.extra:
            x = x[:, : self.num_patches]
        return self.hook_out(x)

    def forward(self, frames: torch.Tensor, modality: str = "rgb") -> torch.Tensor:
        """(F, C, H, W) → (F, N, D) features, every token computed (one frame batch)."""
        x = self.embed(frames, modality)
        for blk in self.blocks:
            x = blk(x)
        return self.finish(x, modality)


def _channel_stats(image_processor, channels: int, repeat: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(C·repeat,) float32 mean and std of the processor, each channel repeated `repeat` times (temporal)."""
    mean = torch.tensor(image_processor.image_mean, dtype=torch.float32).repeat_interleave(repeat)
    std = torch.tensor(image_processor.image_std, dtype=torch.float32).repeat_interleave(repeat)
    if not getattr(image_processor, "do_normalize", True):
        mean, std = torch.zeros_like(mean), torch.ones_like(std)
    assert mean.numel() == channels, (mean.numel(), channels)
    return mean, std


def _layers_for(n_layers: int, feature_layer: int) -> int:
    """Layers needed for hidden_states[feature_layer] (hidden_states[0] = embeddings)."""
    n = feature_layer if feature_layer >= 0 else n_layers + 1 + feature_layer
    if not 1 <= n <= n_layers:
        raise ValueError(f"vision feature layer {feature_layer} is outside a {n_layers}-layer tower")
    return n


def _conv_stem(conv: nn.Module, mean: torch.Tensor, std: torch.Tensor, p: int) -> PatchStem:
    w = conv.weight.flatten(1)  # (D, C·p·p) (Conv3d: (D, C·T·p·p)) in patch_pixels' (C, p, p) order
    return PatchStem(w, conv.bias, mean.repeat_interleave(p * p), std.repeat_interleave(p * p))


def clip_tower(hf_tower: nn.Module, feature_layer: int, image_processor) -> HFTower:
    """LLaVA's CLIPVisionModel (transformers 5.x: embeddings / pre_layrnorm / encoder.layers, no .vision_model)."""
    emb, cfg = hf_tower.embeddings, hf_tower.config
    p, g = cfg.patch_size, cfg.image_size // cfg.patch_size
    n = g * g
    mean, std = _channel_stats(image_processor, cfg.num_channels)
    order = torch.cat([torch.tensor([n]), torch.arange(n)])  # HF order [CLS, patches] from row-major [patches, CLS]

    def embed_fn(pix):
        x = hf_tower.pre_layrnorm(emb(pix))  # (F, 1 + N, D), CLS first
        return torch.cat([x[:, 1:], x[:, :1]], 1)  # CLS last

    layers = hf_tower.encoder.layers[: _layers_for(len(hf_tower.encoder.layers), feature_layer)]
    blocks = [TowerBlock(l.layer_norm1, TowerAttention(l.self_attn, order), l.layer_norm2, l.mlp) for l in layers]
    pos = emb.position_embedding.weight[1:][None]  # (1, N, D) patch positions
    return HFTower("clip", p, (g, g), blocks, _conv_stem(emb.patch_embedding, mean, std, p), pos, embed_fn, 1,
                   hf_tower.pre_layrnorm, mean, std)


def siglip_tower(hf_tower: nn.Module, feature_layer: int, image_processor) -> HFTower:
    """LLaVA-OneVision's SiglipVisionModel (embeddings / encoder.layers / post_layernorm; no CLS)."""
    emb, cfg = hf_tower.embeddings, hf_tower.config
    p, g = cfg.patch_size, cfg.image_size // cfg.patch_size
    mean, std = _channel_stats(image_processor, cfg.num_channels)
    layers = hf_tower.encoder.layers[: _layers_for(len(hf_tower.encoder.layers), feature_layer)]
    blocks = [TowerBlock(l.layer_norm1, TowerAttention(l.self_attn, None, call_kwargs={"is_causal": False}),
                         l.layer_norm2, l.mlp) for l in layers]
    pos = emb.position_embedding.weight[None]  # (1, N, D)
    return HFTower("siglip", p, (g, g), blocks, _conv_stem(emb.patch_embedding, mean, std, p), pos, emb, 0, None,
                   mean, std)


def merge_order(gh: int, gw: int, m: int) -> torch.Tensor:
    """(N,) for each row-major patch r = y·gw + x its index in Qwen2-VL's merge-window order.

        >>> merge_order(2, 4, 2).tolist()  # windows [0 1 4 5] [2 3 6 7]
        [0, 1, 4, 5, 2, 3, 6, 7]
    """
    y, x = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    win = (y // m) * (gw // m) + x // m
    return (win * m * m + (y % m) * m + (x % m)).flatten()


def qwen2vl_tower(visual: nn.Module, grid: tuple[int, int], image_processor) -> HFTower:
    """Qwen2-VL's vision transformer for frames of `grid` = (gh, gw) patches. A tower frame is a temporal patch:
    (3 · temporal_patch_size, H, W) with channels (c, t). Features are those of the last block, before the
    merger (the merger joins 2×2 windows: the language-model side, `families.Qwen2VLFamily`)."""
    from transformers.vision_utils import get_vision_position_ids
    cfg = visual.config
    p, tp, m = cfg.patch_size, cfg.temporal_patch_size, cfg.spatial_merge_size
    gh, gw = grid
    c = cfg.in_channels * tp
    mean, std = _channel_stats(image_processor, c, repeat=tp)
    hf_pos = merge_order(gh, gw, m)  # row-major → HF (merge) index
    to_rm = torch.argsort(hf_pos)  # HF index → row-major index
    thw = torch.tensor([[1, gh, gw]])
    cos, sin = visual.rotary_pos_emb(visual.patch_embed.proj.weight, get_vision_position_ids(thw, m))  # (N, hd) HF order
    cos, sin = cos[hf_pos], sin[hf_pos]  # row-major
    rot = __import__(type(visual).__module__, fromlist=["apply_rotary_pos_emb_vision"]).apply_rotary_pos_emb_vision

    def rope(q, k, idx):
        cs, sn = (cos, sin) if idx is None else (cos[idx], sin[idx])
        return rot(q, k, cs, sn)

    def embed_fn(pix):  # (F, C·T, H, W) normalised → (F, N, D), row-major patches
        f = pix.shape[0]
        x = pix.reshape(f, cfg.in_channels, tp, gh, p, gw, p).permute(0, 3, 5, 1, 2, 4, 6)  # (F, gh, gw, C, T, p, p)
        return visual.patch_embed(x.reshape(-1, c * p * p)).view(f, gh * gw, -1)  # the HF PatchEmbed (Conv3d)

    blocks = [TowerBlock(b.norm1, TowerAttention(b.attn, to_rm, rope, fused=True, call_kwargs={"is_causal": False}),
                         b.norm2, b.mlp) for b in visual.blocks]
    stem = _conv_stem(visual.patch_embed.proj, mean, std, p)
    pos = torch.zeros(1, gh * gw, stem.out_features)
    tower = HFTower("qwen2vl", p, grid, blocks, stem, pos, embed_fn, 0, None, mean, std)
    tower.register_buffer("merge_index", hf_pos, persistent=False)
    return tower
