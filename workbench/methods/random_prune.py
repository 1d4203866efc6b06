"""The random control for decoder-side pruning: at the same depths and budgets as SparseVLM (or FastV),
keep a uniformly random subset of the visual tokens (seeded; every sample of a batch draws as it would alone).

Recent papers find random or uniform selection surprisingly strong against attention-based pruning (FastV
keeps tokens from the top of the image); this is the floor every text-guided method must beat.

    >>> from workbench.models.registry import create_model
    >>> from workbench.data.shapesworld import make_clip
    >>> from workbench.pipeline import describe
    >>> m = create_model("tinyvlm-debug")
    >>> a = describe(m, make_clip(0), RandomPrune(RandomPruneConfig(keep=0.6, seed=3)))  # a 1-layer decoder
    >>> b = describe(m, make_clip(0), RandomPrune(RandomPruneConfig(keep=0.6, seed=3)))
    >>> a.caption == b.caption, round(a.decoder_keep, 2)
    (True, 0.6)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from workbench.methods.prune_schedule import PruneSchedule, explicit_budgets, select_top
from workbench.models.decoder_protocol import PruneView, Selection


@dataclass(frozen=True)
class RandomPruneConfig:
    points: tuple[float, ...] | None = None  # None: default_points(depth) = (0.5, 1.5, 2.5) for TinyVLM  # SparseVLM's default depths
    keep: float | None = 0.33
    budgets: tuple[float, ...] | None = None  # fractions present after each point; replace keep
    counts: tuple[int, ...] | None = None  # absolute tokens present after each point; replace keep
    decay: float = 0.5
    seed: int = 0
    renormalize: bool = False

    def __post_init__(self):
        if self.points is not None:
            object.__setattr__(self, "points", tuple(float(p) for p in self.points))
        explicit_budgets(self)

    @property
    def schedule(self) -> PruneSchedule:
        return PruneSchedule(self.points, self.keep, self.budgets, self.counts, self.decay)


@dataclass
class RandomPrunePlan:
    cfg: RandomPruneConfig
    depth: int

    def __post_init__(self):
        self.schedule = self.cfg.schedule.at(self.depth)
        self.points = self.schedule.points

    def select(self, view: PruneView) -> Selection:
        b, n = view.visual_valid.shape
        g = torch.Generator().manual_seed(self.cfg.seed * 1009 + view.point_index)
        scores = torch.rand(n, generator=g).expand(b, -1)  # one draw per point, the same for every sample
        return select_top(view, scores, self.schedule, self.depth, self.cfg.renormalize)


@dataclass(frozen=True)
class RandomPrune:
    cfg: RandomPruneConfig = field(default_factory=RandomPruneConfig)
    name: str = "random-prune"
    site: str = "decoder"

    def config(self) -> dict:
        return asdict(self.cfg)

    def plan(self, depth: int) -> RandomPrunePlan:
        return RandomPrunePlan(self.cfg, depth)
