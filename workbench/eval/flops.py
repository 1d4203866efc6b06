"""FLOPs accounting: measured with torch's FlopCounterMode on the actual run, and analytically as a check.

Convention (METHODS.md §7): a multiply-add is 2 FLOPs; per transformer layer over n tokens of width d with
MLP width m: attention projections 8nd², scores + weighted sum 4n²d (n queries × n keys), MLP 4ndm.
FlopCounterMode counts matmuls (incl. scaled-dot-product attention); layer norms, GELU, softmax and adds are
not counted by either.

    >>> import torch
    >>> lin = torch.nn.Linear(4, 3, bias=False)
    >>> _, f = count_flops(lin, torch.randn(5, 4))
    >>> f == 2 * 5 * 4 * 3
    True
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

# torch 2.13 registers no FLOP formula for the CPU flash-attention kernel that F.scaled_dot_product_attention
# dispatches to on CPU, so FlopCounterMode would silently count attention as free. Same formula as the CUDA
# kernels (4·B·h·Lq·Lk·hd; causal masking not discounted, as upstream).
_CPU_SDPA = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
             lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(q, k, v)}


def count_flops(fn: Callable[..., Any], *args, **kwargs) -> tuple[Any, int]:
    """Run fn(*args, **kwargs) under FlopCounterMode; return (result, total FLOPs)."""
    with FlopCounterMode(display=False, custom_mapping=_CPU_SDPA) as counter:
        out = fn(*args, **kwargs)
    return out, int(counter.get_total_flops())


def block_flops(n_q: int, n_k: int, dim: int, mlp_dim: int) -> int:
    """Analytic FLOPs of one pre-LN block with n_q query tokens attending over n_k keys.

    q/k/v projections are computed for the n_q new tokens only (cached keys cost nothing).
    """
    qkv = 2 * n_q * dim * 3 * dim
    attn = 2 * n_q * n_k * dim * 2  # QKᵀ and A·V
    out = 2 * n_q * dim * dim
    mlp = 2 * n_q * dim * mlp_dim * 2
    return qkv + attn + out + mlp


def encoder_flops(n_tokens: int, n_frames: int, dim: int, depth: int, mlp_ratio: float, patch_dim: int) -> int:
    """Analytic dense encoder FLOPs for n_frames frames of n_tokens tokens (stem + blocks)."""
    stem = 2 * n_tokens * patch_dim * dim
    per_frame = stem + depth * block_flops(n_tokens, n_tokens, dim, int(dim * mlp_ratio))
    return n_frames * per_frame
