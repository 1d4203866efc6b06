"""Attention pooling over visual tokens (learned queries cross-attending to the decoder-space visual tokens).

Used by the gesture head (and, in pre-training, by an auxiliary concept head). It reads exactly the tokens the
decoder receives, with the same key bias (proportional attention, padding), so compression methods act on it
the same way as on captioning. Queries can select spatio-temporal locations because the tokens carry spatial
and temporal embeddings — enough to tell a clockwise from a counter-clockwise arm.

    >>> import torch
    >>> pool = AttentionPool(dim=32, heads=4, queries=8, out_dim=11)
    >>> pool(torch.randn(2, 50, 32), torch.zeros(2, 50)).shape
    torch.Size([2, 11])
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AttentionPool(nn.Module):
    def __init__(self, dim: int, heads: int, queries: int, out_dim: int, hidden: int | None = None):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.queries = nn.Parameter(torch.randn(queries, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.q_proj, self.kv_proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        hidden = hidden or 2 * dim
        self.mlp = nn.Sequential(nn.LayerNorm(queries * dim), nn.Linear(queries * dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, out_dim))

    def forward(self, tokens: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        """tokens (B, M, D), key_bias (B, M) additive (−inf = padding) → (B, out_dim)."""
        b, m, d = tokens.shape
        nq = self.queries.shape[0]
        q = self.q_proj(self.queries).view(1, nq, self.heads, self.head_dim).transpose(1, 2).expand(b, -1, -1, -1)
        k, v = self.kv_proj(self.norm(tokens)).view(b, m, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias[:, None, None, :])  # (B, h, nq, hd)
        return self.mlp(out.transpose(1, 2).reshape(b, nq * d))
