"""How many visual tokens a decoder-side method keeps at each pruning point (shared by SparseVLM, FastV and
the random control), with the bad-knob checks the CLI and the app rely on.

A schedule is a set of pruning depths (`models/decoder_protocol`: K = 0, 0.5, 1, …) and, per depth, the
tokens present after it — given as a target `keep` (the paper's count, solved into fractions that shrink by
`decay` per point), explicit fractions of the decoder's input visual tokens, or absolute token counts (as the
released SparseVLM's 300 / 200 / 110 of 576). Recycled tokens count as present: a method that recycles keeps fewer so that kept +
recycled meets the budget (`kept_for`).

    >>> s = PruneSchedule(None, keep=0.22).at(4)  # the default depths (0.5, 1.5, 2.5)
    >>> [round(f, 3) for f in s.fractions(4)]
    [0.203, 0.101, 0.051]
    >>> s.targets(0, torch.tensor([3136.0]), torch.tensor([3136]), 4).tolist()
    [636]
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from workbench.errors import InputError
from workbench.models.decoder_protocol import (SETTINGS, default_points, keep_fraction, solve_fractions,
                                               validate_points)


@dataclass(frozen=True)
class PruneSchedule:
    """points: pruning depths (None: `default_points(depth)`); exactly one of keep (the paper's count, solved
    into fractions shrinking by `decay` per point), fractions (of the decoder's input visual tokens present
    after each point, in (0, 1]) or counts (absolute tokens present after each point)."""

    points: tuple[float, ...] | None
    keep: float | None = None
    fractions_: tuple[float, ...] | None = None
    counts: tuple[int, ...] | None = None
    decay: float = 0.5

    def at(self, depth: int) -> "PruneSchedule":
        """This schedule with its depths resolved for a `depth`-layer decoder, checked (InputError on bad knobs)."""
        s = self if self.points is not None else replace(self, points=default_points(depth))
        given = s.fractions_ if s.fractions_ is not None else s.counts
        if given is not None and len(given) != len(s.points):
            where = f"the default depths for a {depth}-layer decoder, {s.points}" if self.points is None \
                else f"the depths {s.points}"
            raise InputError(SETTINGS, f"{len(given)} budgets for {where}: give one per depth")
        s.check(depth)
        return s

    def check(self, depth: int) -> None:
        validate_points(self.points, depth)
        if sum(x is not None for x in (self.keep, self.fractions_, self.counts)) != 1:
            raise InputError(SETTINGS, "give exactly one of keep (a fraction, the paper's count), per-depth "
                                       "fractions or per-depth token counts")
        if not 0 < self.decay <= 1:
            raise InputError(SETTINGS, f"decay must be in (0, 1], not {self.decay:g}")
        given = self.fractions_ if self.fractions_ is not None else self.counts
        if given is not None:
            if any(not x > 0 for x in given) or (self.fractions_ is not None and any(x > 1 for x in given)):
                raise InputError(SETTINGS, f"budgets must be positive (fractions at most 1), got {tuple(given)}")
            if list(given) != sorted(given, reverse=True):
                raise InputError(SETTINGS, f"budgets must not grow from one depth to the next, got {tuple(given)}")
        else:
            self.fractions(depth)  # raises when keep is out of reach

    def fractions(self, depth: int) -> tuple[float, ...] | None:
        """Fractions present after each point (None for absolute counts, which depend on the input)."""
        if self.keep is not None:
            if not 0 < self.keep <= 1:
                raise InputError(SETTINGS, f"keep must be in (0, 1], not {self.keep:g}")
            return solve_fractions(self.points, self.keep, depth, self.decay)
        return None if self.fractions_ is None else tuple(float(x) for x in self.fractions_)

    def planned_keep(self, depth: int) -> float | None:
        """The paper's count this schedule aims at (None for absolute counts)."""
        f = self.fractions(depth)
        return None if f is None else keep_fraction(self.points, f, depth)

    def targets(self, i: int, n_input: torch.Tensor, present: torch.Tensor, depth: int) -> torch.Tensor:
        """(B,) tokens to be present after point i (at most `present`); an absolute count above the tokens
        present is a user error, said in words."""
        if self.counts is not None:
            t = torch.full_like(present, int(self.counts[i]), dtype=torch.long)
            if bool((t > present).any()):
                j = int((t > present).nonzero()[0, 0])
                raise InputError(SETTINGS, f"budget {int(t[j])} tokens at depth {self.points[i]:g} is above the "
                                           f"{int(present[j])} visual tokens present; lower it or give a fraction")
            return t
        t = (self.fractions(depth)[i] * n_input).round().clamp_min(1).long()
        return t.minimum(present.long())


def explicit_budgets(cfg) -> None:
    """In a frozen method config with `keep`, `budgets` (fractions) and `counts`: normalise the tuples, and let
    explicit budgets replace the keep target (its default)."""
    for name, kind in (("budgets", float), ("counts", int)):
        val = getattr(cfg, name)
        if val is not None:
            object.__setattr__(cfg, name, tuple(kind(x) for x in val))
            object.__setattr__(cfg, "keep", None)


def clusters_for(pruned: int, frac: float, per_cluster: int) -> int:
    """Recycled tokens made from `pruned` tokens (SparseVLM: ⌊⌊frac·p⌋ + 1) / per_cluster⌋ + 1; 0 if none)."""
    if pruned <= 0:
        return 0
    m = min(int(pruned * frac) + 1, pruned)
    return m // per_cluster + 1


def kept_for(target: torch.Tensor, present: torch.Tensor, recycle: bool, frac: float = 0.3,
             per_cluster: int = 10) -> torch.Tensor:
    """(B,) tokens to keep so that kept (+ the recycled tokens they leave behind) ≈ target, within [1, present].

        >>> kept_for(torch.tensor([100]), torch.tensor([1000]), True).tolist()  # 72 kept + 28 from 928 pruned
        [72]
    """
    out = []
    for t, n in zip(target.tolist(), present.tolist()):
        t, n = int(min(t, n)), int(n)
        k = t
        if recycle and t < n:
            k = t - clusters_for(n - t, frac, per_cluster)
            while k + 1 <= t and k + 1 + clusters_for(n - k - 1, frac, per_cluster) <= t:
                k += 1
        out.append(max(1, min(k, n)))
    return torch.tensor(out, dtype=torch.long)


def select_top(view, scores: torch.Tensor, schedule: PruneSchedule, depth: int, renormalize: bool = False):
    """The Selection keeping the top-scoring visual slots up to the schedule's budget at this point (no recycling):
    FastV's and the random control's whole decision once their scores are known."""
    from workbench.methods.ops.prune import top_slots
    from workbench.models.decoder_protocol import Selection
    present = view.visual_valid.sum(1)
    target = schedule.targets(view.point_index, view.n_input, present, depth)
    keep, keep_valid = top_slots(scores, view.visual_valid, kept_for(target, present, recycle=False))
    return Selection(keep, keep_valid, scores, renormalize=renormalize)
