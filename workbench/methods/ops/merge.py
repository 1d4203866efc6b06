"""Token merging (ToMe, Bolya et al. 2023): bipartite soft matching, size-weighted merges, merge sources, and
the per-layer `r` schedules — pure tensor functions, after facebookresearch/ToMe's `merge.py` / `utils.py`.

Bipartite soft matching on a metric (ToMe: the head-mean keys of the block's attention) splits the n tokens
into A (even positions) and B (odd positions), links every A token to its most similar B token (cosine),
and merges the r A tokens with the strongest links into their B partners. The result keeps the n − r tokens
as [unmerged A | all of B] (ToMe's order). Merges are size-weighted means (`merge_wavg`): a token standing for
k patches counts k times, and its size (the number of patches it covers) is summed. `owner` follows every
original patch to the token that holds it (ToMe's `trace_source`, as an index instead of a one-hot matrix).

    >>> import torch
    >>> x = torch.tensor([[[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]]])  # (B, n, C): two similar pairs
    >>> m = bipartite_soft_matching(x, 1)
    >>> y, size = merge_wavg(m, x, torch.ones(1, 4))
    >>> y.shape, size.tolist()
    (torch.Size([1, 3, 2]), [[1.0, 2.0, 1.0]])
    >>> parse_r(4, (8, -1.0)), parse_r(4, 5), parse_r(3, [2])
    ([16, 10, 5, 0], [5, 5, 5, 5], [2, 0, 0])
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Matching:
    """One bipartite matching of a batch: which A tokens merge (src) into which B tokens (dst)."""

    unm_idx: torch.Tensor  # (B, nA − r, 1) A positions kept unmerged (ordered by decreasing link strength)
    src_idx: torch.Tensor  # (B, r, 1) A positions merged away
    dst_idx: torch.Tensor  # (B, r, 1) their partners among the B positions
    r: int
    n: int  # tokens before the merge

    def remap(self) -> torch.Tensor:
        """(B, n) the index each of the n input tokens has after the merge (merged A tokens → their partner).

            >>> x = torch.tensor([[[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]]])
            >>> bipartite_soft_matching(x, 1).remap().tolist()
            [[1, 1, 0, 2]]
        """
        b = self.unm_idx.shape[0]
        n_a, n_b = (self.n + 1) // 2, self.n // 2
        n_unm = n_a - self.r
        out_a = torch.empty(b, n_a, dtype=torch.long)
        out_a.scatter_(1, self.unm_idx[..., 0], torch.arange(n_unm).expand(b, -1))
        out_a.scatter_(1, self.src_idx[..., 0], n_unm + self.dst_idx[..., 0])
        out = torch.empty(b, self.n, dtype=torch.long)
        out[:, 0::2] = out_a
        out[:, 1::2] = n_unm + torch.arange(n_b).expand(b, -1)
        return out


def bipartite_soft_matching(metric: torch.Tensor, r: int) -> Matching | None:
    """Match r of the n tokens of `metric` (B, n, C) into others (ToMe's rule; r is capped at n // 2).

    None when nothing merges (r ≤ 0). Ties in link strength are broken by position (a stable sort), so the
    same input gives the same merges.
    """
    n = metric.shape[1]
    r = min(r, n // 2)
    if r <= 0:
        return None
    metric = metric / metric.norm(dim=-1, keepdim=True)
    a, b = metric[..., ::2, :], metric[..., 1::2, :]  # (B, nA, C), (B, nB, C)
    scores = a @ b.transpose(-1, -2)  # (B, nA, nB) cosine similarity
    node_max, node_idx = scores.max(dim=-1)  # best partner of every A token
    edge_idx = node_max.argsort(dim=-1, descending=True, stable=True)[..., None]  # (B, nA, 1)
    unm_idx, src_idx = edge_idx[..., r:, :], edge_idx[..., :r, :]
    dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)
    return Matching(unm_idx, src_idx, dst_idx, r, n)


def merge(m: Matching | None, x: torch.Tensor, mode: str = "sum") -> torch.Tensor:
    """Apply a matching to x (B, n, C) → (B, n − r, C): [unmerged A | B with merged A tokens reduced in]."""
    if m is None:
        return x
    src, dst = x[..., ::2, :], x[..., 1::2, :]
    b, n_a, c = src.shape
    unm = src.gather(dim=-2, index=m.unm_idx.expand(b, n_a - m.r, c))
    src = src.gather(dim=-2, index=m.src_idx.expand(b, m.r, c))
    dst = dst.scatter_reduce(-2, m.dst_idx.expand(b, m.r, c), src, reduce=mode)
    return torch.cat([unm, dst], dim=1)


def merge_wavg(m: Matching | None, x: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted merge of x (B, n, C) with sizes (B, n) → (merged x (B, n − r, C), summed sizes (B, n − r))."""
    if m is None:
        return x, size
    s = size[..., None].to(x.dtype)  # (B, n, 1)
    x = merge(m, x * s, "sum")
    s = merge(m, s, "sum")
    return x / s, s[..., 0]


def merge_index(m: Matching | None, idx: torch.Tensor) -> torch.Tensor:
    """What a per-token integer label (B, n) (a patch index) becomes: each kept token keeps its own (a merged
    token keeps its B partner's, ToMe's "position of the destination")."""
    if m is None:
        return idx
    src, dst = idx[:, ::2], idx[:, 1::2]
    unm = src.gather(1, m.unm_idx[..., 0])
    return torch.cat([unm, dst], 1)


def follow(owner: torch.Tensor, m: Matching | None) -> torch.Tensor:
    """owner (B, N) token index of every original patch → after the merge (ToMe's merge sources)."""
    return owner if m is None else m.remap().gather(1, owner)


def parse_r(num_layers: int, r) -> list[int]:
    """ToMe's `parse_r`: an int (constant r per layer), (r, inflection) (−1: the paper's decreasing schedule,
    2r at the first layer down to 0; +1 increasing; 0 constant) or a list (per layer, padded with 0)."""
    if isinstance(r, (list, tuple)) and not (isinstance(r, tuple) and len(r) == 2 and isinstance(r[1], float)):
        r = list(int(v) for v in r)
        return r + [0] * (num_layers - len(r))
    inflect = 0.0
    if isinstance(r, tuple):
        r, inflect = r
    min_val = int(r * (1.0 - inflect))
    max_val = 2 * r - min_val
    step = (max_val - min_val) / max(num_layers - 1, 1)
    return [int(min_val + step * i) for i in range(num_layers)]


def schedule_for_budget(n: int, num_layers: int, budget: int, inflect: float = 0.0) -> list[int]:
    """Per-layer r with the shape of ToMe's (r, inflect) schedule whose merges take n tokens to `budget` (as
    close as the ≤ 50 % per layer cap allows: check `tokens_after`).

        >>> schedule_for_budget(196, 4, 98), schedule_for_budget(196, 4, 98, -1.0)
        ([25, 25, 24, 24], [49, 33, 16, 0])
        >>> schedule_for_budget(196, 4, 16), tokens_after(196, schedule_for_budget(196, 4, 8))  # ≤ half per layer
        ([68, 64, 32, 16], 13)

    The shape is kept where the cap allows; where it binds (a late layer cannot take half its tokens) merges
    move to the layer before, and a saturated first layer spills into later layers with room.
    """
    total = max(n - budget, 0)
    shape = [(1.0 - inflect) + 2.0 * inflect * i / max(num_layers - 1, 1) for i in range(num_layers)]
    weight = sum(shape)
    raw = [total * s / weight for s in shape] if weight > 0 else [0.0] * num_layers
    rs = [int(v) for v in raw]
    by_rem = sorted(range(num_layers), key=lambda i: (-(raw[i] - rs[i]), i))  # largest remainder first
    for i in by_rem[: total - sum(rs)]:
        rs[i] += 1
    for _ in range(4 * n):  # the cap (half the tokens present) binds late layers: move merges earlier
        present, bad = n, None
        for i, r in enumerate(rs):
            if r > present // 2:
                bad = i
            present -= min(r, present // 2)
        if bad is None:
            break
        if bad == 0:  # even the first layer cannot take more: the budget is out of reach
            rs[0] = n // 2
            break
        rs[bad] -= 1
        rs[bad - 1] += 1
    rs = [min(r, p // 2) for r, p in zip(rs, _present(n, rs))]
    while tokens_after(n, rs) > budget:  # still short (a saturated first layer): fill later layers with room
        for i in reversed(range(num_layers)):
            trial = rs[:i] + [rs[i] + 1] + rs[i + 1:]
            if all(r <= p // 2 for r, p in zip(trial, _present(n, trial))):
                rs = trial
                break
        else:
            break
    return rs


def _present(n: int, rs: list[int]) -> list[int]:
    out = []
    for r in rs:
        out.append(n)
        n -= min(r, n // 2)
    return out


def tokens_after(n: int, rs: list[int]) -> int:
    """Tokens left after merges of `rs` per layer (each capped at half the tokens present, as ToMe does)."""
    for r in rs:
        n -= min(r, n // 2)
    return n
