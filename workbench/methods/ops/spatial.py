"""Spatial token selection and pooling inside a frame — pure tensor functions shared by the encoder-side
baselines (VisionZip, random selection, uniform pooling, ToMe's output):

- `frame_tokens`: per-frame token sets (F, K, D) with their patch and size → one clip's `VisualTokens`
  (frame-major, patch order inside a frame; t_start = t_end = the frame);
- `attention_received`: how much attention every key gets (VisionZip's dominance score without a CLS token);
- `contextual_merge`: VisionZip's contextual tokens — uniformly spaced targets among the leftover tokens, every
  other leftover assigned to its most similar target (cosine of the keys), each group averaged;
- `pool_grid` / `grid_for_budget`: a partition of the g × g patch grid into rows × cols cells (uniform pooling).

    >>> import torch
    >>> cells = pool_grid(4, 2, 2)  # 4×4 patches → 2×2 cells
    >>> cells.view(4, 4).tolist()[0], grid_for_budget(14, 31), grid_for_budget(14, 98)
    ([0, 0, 1, 1], (5, 6), (7, 14))
"""
from __future__ import annotations

import math

import torch

from workbench.models.visual_tokens import VisualTokens


def frame_tokens(x: torch.Tensor, patch: torch.Tensor, size: torch.Tensor) -> tuple[VisualTokens, torch.Tensor]:
    """Per-frame tokens x (F, K, D), patch (F, K) long, size (F, K) → (VisualTokens (1, F·K), order (F, K)): the
    tokens of a frame sorted by patch, frames in order. `order[f]` = the sort permutation of frame f.

        >>> vt, order = frame_tokens(torch.arange(4.).view(1, 4, 1), torch.tensor([[3, 0, 2, 1]]), torch.ones(1, 4))
        >>> vt.embeds[0, :, 0].tolist(), vt.patch.tolist(), order.tolist()
        ([1.0, 3.0, 2.0, 0.0], [[0, 1, 2, 3]], [[1, 3, 2, 0]])
    """
    f, k, d = x.shape
    order = patch.argsort(dim=1, stable=True)  # (F, K)
    x = x.gather(1, order[..., None].expand(-1, -1, d))
    patch, size = patch.gather(1, order), size.gather(1, order)
    frame = torch.arange(f).repeat_interleave(k)[None]  # (1, F·K)
    vt = VisualTokens(x.reshape(1, f * k, d), patch.reshape(1, -1), frame, frame.clone(),
                      size.reshape(1, -1).to(x.dtype), None)
    return vt, order


def attention_received(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """q, k (F, h, N, hd) → (F, N) attention each key receives, summed over heads and queries (softmax rows).

        >>> q = k = torch.zeros(1, 2, 3, 4)
        >>> attention_received(q, k).tolist()  # uniform attention: every key gets 2 heads × 3 queries / 3
        [[2.0, 2.0, 2.0]]
    """
    p = ((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])).softmax(-1)  # (F, h, N, N)
    return p.sum(dim=(1, 2))


def contextual_merge(metric: torch.Tensor, x: torch.Tensor, n_ctx: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor, torch.Tensor]:
    """VisionZip's contextual tokens from the leftover tokens of each frame.

    metric (F, L, C) (head-mean keys), x (F, L, D) the leftover tokens in patch order. Targets: every
    ⌊L / n_ctx⌋-th leftover (the first n_ctx of them); every other leftover joins the target it is most
    similar to (cosine). Returns (contextual tokens (F, n_ctx, D) — the mean of a target and its members —,
    sizes (F, n_ctx), target positions (F, n_ctx) in 0..L−1, assignment (F, L) target slot of every leftover).
    The release adds the target to the mean of its members; here the target is one member of the mean, so a
    contextual token stays on the scale of the features the decoder was trained on.

        >>> m = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]]])
        >>> ctx, size, tgt, assign = contextual_merge(m, m, 2)
        >>> tgt.tolist(), assign.tolist(), size.tolist()
        ([[0, 2]], [[0, 1, 1, 1]], [[1.0, 3.0]])
    """
    f, L, d = x.shape
    step = max(1, L // n_ctx)
    tgt = torch.arange(0, L, step)[:n_ctx]  # (n_ctx,)
    n_ctx = tgt.numel()
    mn = metric / metric.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    sim = mn @ mn[:, tgt].transpose(1, 2)  # (F, L, n_ctx)
    assign = sim.argmax(-1)  # (F, L)
    assign[:, tgt] = torch.arange(n_ctx)  # a target belongs to itself
    onehot = torch.zeros(f, L, n_ctx, dtype=x.dtype).scatter_(2, assign[..., None], 1.0)
    size = onehot.sum(1)  # (F, n_ctx)
    ctx = (onehot.transpose(1, 2) @ x) / size[..., None]  # (F, n_ctx, D)
    return ctx, size, tgt.expand(f, -1).clone(), assign


def merge_flops(f: int, n_left: int, n_ctx: int, c: int, d: int) -> int:
    """FlopCounterMode's count of `contextual_merge` (two matmuls: similarities and the group sums)."""
    return 2 * f * n_left * n_ctx * c + 2 * f * n_ctx * n_left * d


def pool_grid(g: int, rows: int, cols: int) -> torch.Tensor:
    """(g·g,) cell index of every patch of a g × g grid cut into rows × cols cells (boundaries ⌊i·g/rows⌋)."""
    r = (torch.arange(g) * rows) // g  # (g,) cell row of every patch row
    c = (torch.arange(g) * cols) // g
    return (r[:, None] * cols + c[None, :]).reshape(-1)


def grid_for_budget(g: int, budget: int) -> tuple[int, int]:
    """(rows, cols) with rows · cols ≤ budget as large as possible on a g × g grid, the squarest on ties."""
    best = (1, 1)
    for rows in range(1, g + 1):
        cols = min(g, budget // rows)
        if cols < 1:
            break
        cand = (rows, cols)
        if rows * cols > best[0] * best[1] or (rows * cols == best[0] * best[1] and
                                               abs(rows - cols) < abs(best[0] - best[1])):
            best = cand
    return best


def cell_centres(g: int, cells: torch.Tensor, n_cells: int) -> torch.Tensor:
    """(n_cells,) the patch nearest each cell's centre (its representative position for the decoder)."""
    rr, cc = torch.arange(g).repeat_interleave(g).float(), torch.arange(g).repeat(g).float()
    count = torch.zeros(n_cells).index_add_(0, cells, torch.ones(g * g))
    cr = torch.zeros(n_cells).index_add_(0, cells, rr) / count
    ccn = torch.zeros(n_cells).index_add_(0, cells, cc) / count
    dist = (rr[None] - cr[:, None]) ** 2 + (cc[None] - ccn[:, None]) ** 2 + (cells[None] != torch.arange(n_cells)[:, None]) * 1e9
    return dist.argmin(1)
