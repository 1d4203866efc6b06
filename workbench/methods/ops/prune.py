"""Pure tensor functions of decoder-side pruning: raters, scores, rank rule, top-k selection, recycling.

Shared by SparseVLM, FastV and the random control (one scorer per method, one selection logic). Everything
is batched with validity masks (ragged batches) and deterministic: ties are broken by token order, never by
random noise (the released SparseVLM code adds noise to break density ties, so its clusters change per run).

    >>> import torch
    >>> s = torch.tensor([[0.1, 0.5, 0.5, 0.2]])
    >>> keep, ok = top_slots(s, torch.ones(1, 4, dtype=torch.bool), torch.tensor([2]))
    >>> keep.tolist(), ok.tolist()  # the two best, ties by order, returned in slot order
    ([[1, 2]], [[True, True]])
"""
from __future__ import annotations

import math

import torch


def pack(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, n) bool → (index (B, K), valid (B, K)): the True positions of each row first, in order; K = max count.

        >>> pack(torch.tensor([[False, True, True], [True, False, False]]))[0].tolist()
        [[1, 2], [0, 1]]
    """
    order = (~mask).to(torch.int8).argsort(dim=1, stable=True)
    k = max(int(mask.sum(1).max()) if mask.numel() else 0, 1)
    idx = order[:, :k]
    return idx, mask.gather(1, idx)


def rater_relevance(visual: torch.Tensor, text: torch.Tensor, visual_valid: torch.Tensor,
                    text_valid: torch.Tensor) -> torch.Tensor:
    """SparseVLM's relevance of each text token to the image (METHODS.md §4.1): softmax over the text tokens of
    V·Tᵀ for every visual token, averaged over the visual tokens. visual (B, M, D), text (B, P, D) → (B, P).

        >>> v = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]]); t = torch.tensor([[[5.0, 0.0], [0.0, 5.0]]])
        >>> r = rater_relevance(v, t, torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool))
        >>> [round(float(x), 3) for x in r[0]]
        [0.993, 0.007]
    """
    logits = visual @ text.transpose(1, 2)  # (B, M, P)
    probs = logits.masked_fill(~text_valid[:, None, :], float("-inf")).softmax(-1)
    probs = probs * visual_valid[..., None]
    return probs.sum(1) / visual_valid.sum(1, keepdim=True).clamp_min(1)


def select_raters(relevance: torch.Tensor, text_valid: torch.Tensor) -> torch.Tensor:
    """(B, P) bool: text tokens whose relevance is above the mean over the valid text tokens (at least one).

        >>> select_raters(torch.tensor([[0.5, 0.3, 0.2]]), torch.ones(1, 3, dtype=torch.bool)).tolist()
        [[True, False, False]]
    """
    mean = (relevance * text_valid).sum(1, keepdim=True) / text_valid.sum(1, keepdim=True).clamp_min(1)
    raters = (relevance > mean) & text_valid
    best = relevance.masked_fill(~text_valid, float("-inf")).argmax(1)
    raters[torch.arange(len(best)), best] |= ~raters.any(1)  # all equal: the first token rates alone
    return raters


def column_scores(p: torch.Tensor, rows_valid: torch.Tensor) -> torch.Tensor:
    """P (B, R, n) rater rows × visual columns → (B, n) the mean of each column over the valid rows."""
    return (p * rows_valid[..., None]).sum(1) / rows_valid.sum(1, keepdim=True).clamp_min(1)


def numerical_rank(p: torch.Tensor, rel_tol: float = 1e-2) -> int:
    """Rank of P (R, n) at a relative tolerance: singular values above rel_tol · σ_max.

        >>> numerical_rank(torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]]))
        1
    """
    if p.numel() == 0:
        return 0
    p = p.double()
    if p.shape[0] > p.shape[1]:
        p = p.T
    s = torch.linalg.eigvalsh(p @ p.T).clamp_min(0).sqrt().flip(0)  # singular values via the small Gram matrix
    return int((s > rel_tol * s[0]).sum()) if float(s[0]) > 0 else 0


def rank_keep(rank: int, scale: float, bias: float, n: int) -> int:
    """SparseVLM's adaptive rule: keep min(⌊scale · rank(P) + bias⌋, n − 1) tokens (at least 1); a layer whose
    P has full rank n does not prune (keeps n).

        >>> rank_keep(3, 10.0, 2.0, 100), rank_keep(3, 10.0, 2.0, 3), rank_keep(50, 10.0, 0.0, 100)
        (32, 3, 99)
    """
    if rank >= n:
        return n
    return max(1, min(int(math.floor(scale * rank + bias)), n - 1))


def top_slots(scores: torch.Tensor, valid: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The k[b] highest-scoring valid slots of each row (ties: lower slot first), returned in slot order, padded.

    scores (B, n), valid (B, n), k (B,) → (keep (B, K), keep_valid (B, K)), K = max(k).
    """
    s = scores.masked_fill(~valid, float("-inf"))
    order = (-s).argsort(dim=1, stable=True)  # best first; equal scores keep slot order
    kmax = max(int(k.max()), 1)
    chosen = order[:, :kmax]
    ok = torch.arange(kmax)[None] < k[:, None]
    ok &= valid.gather(1, chosen)
    slot = torch.where(ok, chosen, scores.shape[1] + chosen)  # invalid entries sort last
    perm = slot.argsort(dim=1, stable=True)
    return chosen.gather(1, perm), ok.gather(1, perm)


def pairwise_sq_dist(x: torch.Tensor) -> torch.Tensor:
    """(n, d) → (n, n) squared Euclidean distances / d (matmul form, so FLOPs are counted), ≥ 0, 0 on the diagonal."""
    sq = (x * x).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * (x @ x.T)).clamp_min(0) / x.shape[1]
    return d2.fill_diagonal_(0)


def dpc_knn(x: torch.Tensor, n_clusters: int, k: int | None = None) -> torch.Tensor:
    """Density-peak clustering with k-NN density (DPC-kNN, as SparseVLM's recycling), deterministic.

    density ρ_i = exp(−mean of the k smallest squared distances (self included)); δ_i = distance to the nearest
    denser token (the densest: its largest distance); centres = the n_clusters largest ρ·δ; every token joins
    its nearest centre. Ties in density, score and distance are broken by token order. x (n, d) → (n,) cluster
    ids in 0..n_clusters−1 (clusters numbered by centre rank).

        >>> x = torch.tensor([[0.0], [0.1], [0.2], [10.0], [10.1]])
        >>> dpc_knn(x, 2, k=2).tolist()
        [0, 0, 0, 1, 1]
    """
    n = x.shape[0]
    c = max(1, min(int(n_clusters), n))
    k = max(1, min(int(k or c), n))
    d2 = pairwise_sq_dist(x)
    knn = d2.topk(k, dim=1, largest=False).values  # (n, k) includes the 0 self-distance (values: ties harmless)
    density = (-knn.mean(1)).exp()
    rank = torch.empty(n, dtype=torch.long)
    rank[(-density).argsort(stable=True)] = torch.arange(n)  # 0 = densest; ties → lower index denser
    denser = rank[None, :] < rank[:, None]  # (n, n): j is denser than i
    dist = d2.sqrt()
    delta = dist.masked_fill(~denser, float("inf")).min(1).values
    top = rank == 0
    delta[top] = dist[top].max(1).values
    score = density * delta
    centres = (-score).argsort(stable=True)[:c]
    assign = dist[:, centres].argmin(1)  # first centre on ties
    assign[centres] = torch.arange(c)
    return assign


def recycle(hidden: torch.Tensor, scores: torch.Tensor, pruned: torch.Tensor, frac: float = 0.3,
            per_cluster: int = 10) -> tuple[torch.Tensor, torch.Tensor, int]:
    """SparseVLM's token recycling: of each sample's pruned slots, the top `frac` by score (⌊frac·n⌋ + 1) are
    clustered (DPC-kNN, ⌊m / per_cluster⌋ + 1 clusters, k = that number) to be merged into one token each.

    hidden (B, n, D), scores (B, n), pruned (B, n) bool → (cluster (B, n) long, −1 = not recycled;
    n_clusters (B,); analytic FLOPs of the distance matrices).
    """
    b, n, d = hidden.shape
    cluster = torch.full((b, n), -1, dtype=torch.long)
    counts = torch.zeros(b, dtype=torch.long)
    flops = 0
    for i in range(b):
        idx = pruned[i].nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        m = min(int(idx.numel() * frac) + 1, int(idx.numel()))
        order = (-scores[i, idx]).argsort(stable=True)[:m]
        chosen = idx[order].sort().values
        c = m // per_cluster + 1
        cluster[i, chosen] = dpc_knn(hidden[i, chosen], c)
        counts[i] = c
        flops += 2 * m * m * d
    return cluster, counts, flops
