"""The decoder-side plug-in site: what a pruning method (SparseVLM, FastV, random) sees and what it returns.

A decoder-side method never touches a model class. A model's prefill driver (`models/decoding.py` for
TinyVLM; a Hugging Face driver can implement the same contract with forward pre-hooks) calls, at each of the
method's pruning points, `plan.select(view)` with a `PruneView` and applies the `Selection` it gets back:
kept visual slots are gathered, slots assigned to a cluster are merged (size-weighted mean of their hidden
states) into one recycled token each, inserted after the kept ones; everything else leaves the hidden states
and, for the layers after the point, the key/value cache.

**Pruning depth K** (the one notation for "where"): the number of decoder sublayers, in layers, that a pruned
token still takes part in — each layer is two sublayers, attention then MLP:

    K = 0    before layer 0 attends: scores from layer 0's own attention rows, computed before the layer mixes
    K = 0.5  after layer 0's attention, before its MLP
    K = 1    after layer 0 (= before layer 1; FastV's "K = 1")
    K = 1.5  after layer 1's attention … up to K = depth − 0.5

The attention a point reads is that of the last attention computed at or before it: layer max(0, ⌈K⌉ − 1).
Two points may not read the same layer (`validate_points`).

**Token accounting** (one convention, METHODS.md §7): visual tokens *entering each sublayer*; `keep_fraction`
is their mean over the 2·depth sublayers divided by the visual tokens entering the decoder. With every point
at a whole K this is exactly the SparseVLM paper's count (mean over layers of the tokens entering each layer);
half-layer points just make a layer count half for each of its two sublayers. The last layer's count is
reported beside it. Why half layers: a 4-layer decoder pruned at K = 1 keeps at least 1/4 of the tokens on
this count, so the paper's low budgets (22 %, 11 %) need a point inside layer 0.

    >>> validate_points((0.5, 1.5, 2.5), depth=4)
    (0.5, 1.5, 2.5)
    >>> scoring_layer(0.5), scoring_layer(1.0), scoring_layer(0.0), scoring_layer(2.5)
    (0, 0, 0, 2)
    >>> round(keep_fraction((0.5, 1.5, 2.5), (0.2, 0.1, 0.05), depth=4), 4)  # (1 + 2·.2 + 2·.1 + 3·.05) / 8
    0.2188
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from workbench.errors import InputError

SETTINGS = "decoder pruning"


def validate_points(points, depth: int) -> tuple[float, ...]:
    """Sorted pruning depths, each a multiple of 0.5 in [0, depth − 0.5], no two reading the same layer."""
    pts = tuple(float(p) for p in points)
    for p in pts:
        if not (0 <= p <= depth - 0.5) or abs(p * 2 - round(p * 2)) > 1e-9:
            raise InputError(SETTINGS, f"pruning depth {p:g} must be a multiple of 0.5 in [0, {depth - 0.5:g}] "
                                       f"for a {depth}-layer decoder")
    if list(pts) != sorted(pts) or len(set(pts)) != len(pts):
        raise InputError(SETTINGS, f"pruning depths must be strictly increasing, got {pts}")
    layers = [scoring_layer(p) for p in pts]
    if len(set(layers)) != len(layers):
        raise InputError(SETTINGS, f"pruning depths {pts} read the same layer's attention twice (layers "
                                   f"{layers}); keep one point per layer")
    return pts


def default_points(depth: int) -> tuple[float, ...]:
    """Three depths early / middle / late, inside layers (SparseVLM's release prunes after layers 2, 6, 15 of 32):
    (i + ½) · depth / 4 for i = 0, 1, 2 rounded to a half layer (≥ 0.5), one per scoring layer.

        >>> default_points(4), default_points(1), default_points(2), default_points(32)
        ((0.5, 1.5, 2.5), (0.5,), (0.5,), (4.0, 12.0, 20.0))
    """
    out: list[float] = []
    for i in range(3):
        k = min(max(0.5, round((i + 0.5) * depth / 4 * 2) / 2), depth - 0.5)
        if all(scoring_layer(k) != scoring_layer(p) for p in out):
            out.append(k)
    return tuple(out)


def scoring_layer(k: float) -> int:
    """The decoder layer whose attention a point at depth k reads."""
    return max(0, math.ceil(k) - 1)


def point_site(k: float) -> str:
    """'pre' (before the layer attends), 'mid' (after attention, before the MLP) or 'post' (after the layer)."""
    if k == 0:
        return "pre"
    return "mid" if k % 1 else "post"


def sublayer_counts(points, present, n_input: float, depth: int) -> list[float]:
    """Visual tokens entering each of the 2·depth sublayers, given the tokens present after each point."""
    out, cur, pts = [], float(n_input), list(zip(points, present))
    for s in range(2 * depth):
        while pts and pts[0][0] * 2 <= s:
            cur = float(pts.pop(0)[1])
        out.append(cur)
    return out


def keep_fraction(points, fractions, depth: int) -> float:
    """Mean over sublayers of the visual tokens entering them ÷ those entering the decoder."""
    return sum(sublayer_counts(points, fractions, 1.0, depth)) / (2 * depth)


def solve_fractions(points, keep: float, depth: int, decay: float = 0.5) -> tuple[float, ...]:
    """Fractions present after each point (each `decay` × the previous) whose `keep_fraction` is `keep`.

        >>> f = solve_fractions((0.5, 1.5, 2.5), 0.22, 4)
        >>> round(keep_fraction((0.5, 1.5, 2.5), f, 4), 6), round(f[1] / f[0], 3)
        (0.22, 0.5)
    """
    pts = tuple(points)
    lo = keep_fraction(pts, (0.0,) * len(pts), depth)
    if not lo < keep <= 1:
        raise InputError(SETTINGS, f"keep {keep:g} is out of reach for pruning depths {pts} on a {depth}-layer "
                                   f"decoder: it must be in ({lo:.4g}, 1] (the sublayers before the first point "
                                   f"see every token); add an earlier point, e.g. depth 0")
    profile = [decay ** i for i in range(len(pts))]
    if keep >= 1:
        return (1.0,) * len(pts)
    a, b = 0.0, 1.0 / profile[-1]
    for _ in range(60):  # bisection on a common multiplier (keep is monotone in it; each fraction capped at 1)
        m = (a + b) / 2
        if keep_fraction(pts, [min(1.0, m * p) for p in profile], depth) < keep:
            a = m
        else:
            b = m
    return tuple(min(1.0, b * p) for p in profile)


@dataclass
class PruneView:
    """What a decoder-side method sees at one pruning point (batch B, sequence length L, visual slots n).

    The visual slots are the contiguous block at positions `visual_start .. visual_start + n` of the sequence;
    padded slots (ragged batches) have `visual_valid` False. `prompt` are the positions of the text after the
    image (never pruned). `attention(rows, rows_valid)` returns the head-mean attention probabilities of the
    scoring layer for those query rows over the current sequence, (B, R, L) — exactly the probabilities that
    layer used (causal mask and key bias included).
    """

    depth: float
    layer: int
    point_index: int
    hidden: torch.Tensor  # (B, L, D) residual stream at the point
    visual_start: int
    visual_valid: torch.Tensor  # (B, n) bool
    visual_ids: torch.Tensor  # (B, n) long: 0..M−1 decoder-input tokens, ≥ M recycled tokens, −1 padding
    visual_size: torch.Tensor  # (B, n) float: dense tokens each slot stands for
    prompt: torch.Tensor  # (B, P) long positions of the text tokens after the image
    prompt_valid: torch.Tensor  # (B, P) bool
    n_input: torch.Tensor  # (B,) visual tokens that entered the decoder
    embeds: torch.Tensor  # (B, L0, D) the decoder's input sequence (raters are chosen from it once)
    input_visual_start: int
    input_prompt: torch.Tensor  # (B, P) positions of the prompt in `embeds`
    attention: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    @property
    def n_slots(self) -> int:
        return int(self.visual_valid.shape[1])

    def visual_hidden(self) -> torch.Tensor:
        """(B, n, D) hidden states of the visual slots."""
        return self.hidden[:, self.visual_start: self.visual_start + self.n_slots]

    def visual_positions(self) -> torch.Tensor:
        """(B, n) sequence positions of the visual slots."""
        b = self.hidden.shape[0]
        return torch.arange(self.visual_start, self.visual_start + self.n_slots).expand(b, -1)

    def visual_columns(self, probs: torch.Tensor) -> torch.Tensor:
        """(B, R, L) attention rows → (B, R, n) the visual columns (0 on padded slots)."""
        cols = probs[..., self.visual_start: self.visual_start + self.n_slots]
        return cols * self.visual_valid[:, None, :]


@dataclass
class Selection:
    """A method's decision at one point. Slots index the view's visual block (0..n−1).

    keep (B, K) long + keep_valid (B, K): slots kept, in their original order (padding: any slot, invalid).
    cluster (B, n) long: the recycled cluster (0..C_b−1) a pruned slot is merged into, −1 otherwise;
    n_clusters (B,) long. scores (B, n): the method's score of every slot (for the trace; NaN if none).
    extra_flops: analytic FLOPs of the method's own matmuls at this point (scores, raters, clustering), for
    the analytic cross-check of FlopCounterMode. info: per-point values to trace (e.g. rank(P)).
    renormalize: False (default) keeps every kept token's key bias log(size) − log(Σ size of the decoder's
    input), which is exactly masking the pruned keys; True renormalises to the tokens still present, as the
    decoder saw random token subsets in training (phase c).
    """

    keep: torch.Tensor
    keep_valid: torch.Tensor
    scores: torch.Tensor | None = None
    cluster: torch.Tensor | None = None
    n_clusters: torch.Tensor | None = None
    extra_flops: int = 0
    info: dict = field(default_factory=dict)
    renormalize: bool = False  # True: the kept visual block's key bias is renormalised to its own total size


class PrunePlan(Protocol):
    """One prefill's pruning: `points` (sorted depths) and `select(view)` at each (stateful per prefill)."""

    points: tuple[float, ...]

    def select(self, view: PruneView) -> Selection: ...


class DecoderMethod(Protocol):
    """A decoder-side method: `plan(depth)` gives a fresh PrunePlan for one prefill; `site == "decoder"`."""

    name: str
    site: str

    def config(self) -> dict: ...

    def plan(self, depth: int) -> PrunePlan: ...
