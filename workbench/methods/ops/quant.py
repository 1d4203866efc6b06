"""Pure tensor functions for weight and weight-delta compression: magnitude masks, symmetric b-bit
quantisation (per row, per block or per tensor), NF4, 1-bit sign + scale, and bit packing.

Everything runs on the CPU with numpy/torch (bitsandbytes' 4-bit kernels need CUDA). Codes are unsigned
integers packed little-endian into uint8 bitstreams, so a tensor of n b-bit codes takes ceil(n·b/8) bytes —
the accounting `packed_bytes` states and the tests check against the serialised files.

    >>> import torch
    >>> w = torch.tensor([[0.5, -1.0, 0.25, 0.0]])
    >>> codes, scale = quantize_symmetric(w, bits=4)
    >>> dequantize_symmetric(codes, scale, bits=4, shape=w.shape)  # 0.5 · 7 = 3.5 rounds to even: 3/7
    tensor([[ 0.4286, -1.0000,  0.2857,  0.0000]])
    >>> unpack_codes(pack_codes(codes.ravel(), 4), 4, 4).tolist() == codes.ravel().tolist()
    True
"""
from __future__ import annotations

import math

import numpy as np
import torch

# the 16 NormalFloat levels of QLoRA (Dettmers et al. 2023), in [-1, 1]
NF4_LEVELS = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0])
NF4_BLOCK = 64


def packed_bytes(n: int, bits: int) -> int:
    """Bytes of n codes of `bits` bits packed into a bitstream.

        >>> packed_bytes(10, 4), packed_bytes(9, 1), packed_bytes(0, 3)
        (5, 2, 0)
    """
    return math.ceil(n * bits / 8)


def pack_codes(codes: np.ndarray | torch.Tensor, bits: int) -> np.ndarray:
    """Unsigned codes (n,) in [0, 2**bits) → uint8 (ceil(n·bits/8),), little-endian bit order; bits in 1..8.

        >>> pack_codes(np.array([1, 2, 3]), 2).tolist()
        [57]
    """
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, not {bits}")
    c = np.asarray(codes.numpy() if isinstance(codes, torch.Tensor) else codes).astype(np.uint8).ravel()
    if c.size and int(c.max()) >= 1 << bits:
        raise ValueError(f"a code does not fit in {bits} bits")
    bit_matrix = np.unpackbits(c[:, None], axis=1, bitorder="little")[:, :bits]  # (n, bits)
    return np.packbits(bit_matrix.ravel(), bitorder="little")


def unpack_codes(packed: np.ndarray | torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """The inverse of `pack_codes`: uint8 bitstream → int64 codes (n,). Raises ValueError when too short."""
    p = np.asarray(packed.numpy() if isinstance(packed, torch.Tensor) else packed, dtype=np.uint8).ravel()
    if p.size != packed_bytes(n, bits):
        raise ValueError(f"{p.size} bytes cannot hold exactly {n} codes of {bits} bits")
    flat = np.unpackbits(p, bitorder="little")[: n * bits].reshape(n, bits)  # (n, bits)
    weights = (1 << np.arange(bits)).astype(np.int64)
    return torch.from_numpy(flat.astype(np.int64) @ weights)


def pack_mask(mask: torch.Tensor) -> np.ndarray:
    """bool (any shape) → uint8 bitmask, ceil(n/8) bytes."""
    return np.packbits(mask.detach().cpu().numpy().astype(bool).ravel(), bitorder="little")


def unpack_mask(packed: np.ndarray | torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """uint8 bitmask → bool tensor of `shape`. Raises ValueError when the byte count is wrong."""
    n = int(np.prod(shape))
    p = np.asarray(packed.numpy() if isinstance(packed, torch.Tensor) else packed, dtype=np.uint8).ravel()
    if p.size != packed_bytes(n, 1):
        raise ValueError(f"{p.size} mask bytes do not match {n} entries")
    return torch.from_numpy(np.unpackbits(p, bitorder="little")[:n].astype(bool)).view(shape)


def magnitude_mask(x: torch.Tensor, keep: float) -> torch.Tensor:
    """bool mask of the round(keep·n) entries of largest |x| (ties: lower flat index first).

        >>> magnitude_mask(torch.tensor([0.1, -3.0, 2.0, 0.5]), 0.5).tolist()
        [False, True, True, False]
    """
    n = x.numel()
    k = int(round(min(max(keep, 0.0), 1.0) * n))
    mask = torch.zeros(n, dtype=torch.bool)
    if k:
        order = torch.sort(x.detach().abs().flatten(), descending=True, stable=True).indices[:k]
        mask[order] = True
    return mask.view(x.shape)


def _groups(x: torch.Tensor, group: int) -> torch.Tensor:
    """(rows, cols) → (G, g) rows of the scale groups: group 0 = one group per row, -1 = the whole tensor,
    g > 0 = blocks of g consecutive entries in flat order (the last block zero-padded)."""
    x2 = x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(1, -1)  # (rows, cols)
    if group == 0:
        return x2
    flat = x2.reshape(-1)
    if group < 0:
        return flat[None]
    pad = (-flat.numel()) % group
    return torch.cat([flat, flat.new_zeros(pad)]).view(-1, group)  # (G, g)


def quantize_symmetric(x: torch.Tensor, bits: int, group: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric b-bit quantisation with one fp32 scale per group (see `_groups`): q = round(x / s) with
    s = max|x| / (2^(b−1) − 1), stored as the unsigned code q + 2^(b−1) − 1. Returns (codes, scales) with
    codes (G, g) int64 in [0, 2^b − 2] and scales (G,) float32. bits in 2..8 (1 bit: `sign_scale`)."""
    if not 2 <= bits <= 8:
        raise ValueError(f"symmetric quantisation needs 2..8 bits, not {bits}")
    levels = (1 << (bits - 1)) - 1
    g = _groups(x.detach().float(), group)
    scale = g.abs().amax(1) / levels
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(g / safe[:, None]), -levels, levels)
    return (q + levels).long(), scale.float()


def dequantize_symmetric(codes: torch.Tensor, scale: torch.Tensor, bits: int, shape: tuple[int, ...],
                         group: int = 0) -> torch.Tensor:
    """Codes (G, g) + scales (G,) → float32 tensor of `shape` (the inverse of `quantize_symmetric`)."""
    levels = (1 << (bits - 1)) - 1
    n = int(np.prod(shape))
    values = (codes.view(scale.numel(), -1).float() - levels) * scale.float()[:, None]
    return values.reshape(-1)[:n].reshape(shape)


def nf4_quantize(x: torch.Tensor, block: int = NF4_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """NF4 (QLoRA's 4-bit NormalFloat): blocks of `block` entries, each scaled by its absmax (fp16 here) to
    [-1, 1] and rounded to the nearest of the 16 levels. Returns (codes (nblocks, block) in 0..15, absmax
    (nblocks,) float16). ≈ 4 + 16/block bits per entry."""
    g = _groups(x.detach().float().reshape(-1), block)
    absmax = g.abs().amax(1).half()
    safe = torch.where(absmax > 0, absmax.float(), torch.ones_like(absmax, dtype=torch.float32))
    normed = g / safe[:, None]
    codes = (normed[..., None] - NF4_LEVELS).abs().argmin(-1)  # (nblocks, block)
    return codes, absmax


def nf4_dequantize(codes: torch.Tensor, absmax: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The inverse of `nf4_quantize` (float32 of `shape`)."""
    n = int(np.prod(shape))
    values = NF4_LEVELS[codes.view(absmax.numel(), -1)] * absmax.float()[:, None]
    return values.reshape(-1)[:n].reshape(shape)


def sign_scale(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """1-bit sign + one scale (BitDelta): bits (n,) bool (True = positive) and the scale mean|x| (fp32 scalar),
    the L2-optimal scale for a sign code."""
    flat = x.detach().float().reshape(-1)
    return flat > 0, flat.abs().mean().reshape(1)


def sign_unscale(bits: torch.Tensor, scale: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The inverse of `sign_scale`: ±scale of `shape`."""
    return torch.where(bits.reshape(-1), scale.float(), -scale.float()).reshape(shape)
