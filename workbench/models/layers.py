"""Transformer pieces shared by the vision encoder and the text decoder (pre-LN blocks).

Attention is split into `qkv` and `attend` so methods can compute queries for a subset of tokens against
cached keys/values (STTF's partial encoding). Attention probabilities are only materialised when a hook
listens at `hook_pattern`; otherwise PyTorch's fused scaled-dot-product kernel runs.

    >>> import torch
    >>> blk = Block(dim=32, heads=4)
    >>> blk(torch.randn(2, 5, 32)).shape
    torch.Size([2, 5, 32])
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from workbench.models.hooks import HookPoint


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        assert dim % heads == 0, "dim must be divisible by heads"
        self.heads, self.head_dim = heads, dim // heads
        self.qkv_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.hook_pattern = HookPoint()  # (B, heads, Lq, Lk) attention probabilities, only when hooked

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, D) → q, k, v each (B, heads, N, head_dim)."""
        b, n, _ = x.shape
        q, k, v = self.qkv_proj(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v

    def attend(self, q, k, v, bias: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        """Attention output (B, Lq, D). bias: additive (B, 1, Lq|1, Lk) (−inf masks); causal only without bias."""
        b, _, lq, _ = q.shape
        if self.hook_pattern.active:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, h, Lq, Lk)
            if causal:
                lk = k.shape[2]
                tri = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq)
                scores = scores.masked_fill(~tri, float("-inf"))
            if bias is not None:
                scores = scores + bias
            probs = self.hook_pattern(scores.softmax(-1))
            out = probs @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=causal and bias is None)
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, -1))  # (B, h, Lq, hd) → (B, Lq, D)

    def forward(self, x, bias=None, causal=False, cache: dict | None = None) -> torch.Tensor:
        q, k, v = self.qkv(x)
        if cache is not None:  # decoding: append this step's keys/values to the layer's cache
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        return self.attend(q, k, v, bias, causal)


class MLP(nn.Module):
    def __init__(self, dim: int, ratio: float):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, int(dim * ratio)), nn.Linear(int(dim * ratio), dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block; `hook_out` sees its output (B, N, D)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = MLP(dim, mlp_ratio)
        self.hook_out = HookPoint()

    def forward(self, x, bias=None, causal=False, cache=None):
        x = x + self.attn(self.ln1(x), bias, causal, cache)
        return self.hook_out(x + self.mlp(self.ln2(x)))
