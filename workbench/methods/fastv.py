"""FastV — prune visual tokens once inside the decoder by the attention they get from the last text token.

At depth K (`models/decoder_protocol`: K = 1 is FastV's "after layer K − 1 = 0"; K = 0.5 inside layer 0,
after its attention), the visual tokens are ranked by the head-mean attention of the last prompt token
(<sep>, the position that emits the first answer word) in the layer that gave the scores, and the top
(1 − R) stay (FastV's R = the fraction pruned). `keep` replaces R with the paper's count (the mean over
sublayers; see `decoder_protocol`), so FastV and SparseVLM compare at one budget. `scorer="all"` ranks by the
mean attention a token receives from every query (FastV paper's alternative formulation). No recycling.
Default K = 0.5: with 4 decoder layers, a FastV point after a whole layer cannot go below a keep of 1/4.

R = 0 (or keep = 1) keeps every token: dense, bit for bit (tested).

    >>> from workbench.models.registry import create_model
    >>> from workbench.data.shapesworld import make_clip
    >>> from workbench.pipeline import describe
    >>> d = describe(create_model("tinyvlm-debug"), make_clip(0), FastV(FastVConfig(K=0.5, R=0.75)))
    >>> round(d.decoder_keep, 3)  # 1 decoder layer: (1 + 1 · 0.25) / 2
    0.625
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from workbench.errors import InputError
from workbench.methods.prune_schedule import PruneSchedule, select_top
from workbench.models.decoder_protocol import SETTINGS, PruneView, Selection

SCORERS = ("last", "all")


@dataclass(frozen=True)
class FastVConfig:
    K: float = 0.5
    R: float = 0.5
    keep: float | None = None  # the paper's count; replaces R when given
    scorer: str = "last"
    renormalize: bool = False

    def __post_init__(self):
        if self.scorer not in SCORERS:
            raise InputError(SETTINGS, f"FastV scorer must be one of {SCORERS}, not {self.scorer!r}")
        if not 0 <= self.R < 1:
            raise InputError(SETTINGS, f"FastV R (the fraction pruned) must be in [0, 1), not {self.R:g}")

    @property
    def schedule(self) -> PruneSchedule:
        if self.keep is not None:
            return PruneSchedule((float(self.K),), keep=self.keep)
        return PruneSchedule((float(self.K),), fractions_=(1.0 - self.R,))


@dataclass
class FastVPlan:
    cfg: FastVConfig
    depth: int

    def __post_init__(self):
        self.schedule = self.cfg.schedule.at(self.depth)
        self.points = self.schedule.points

    def select(self, view: PruneView) -> Selection:
        b, length = view.hidden.shape[:2]
        if self.cfg.scorer == "last":
            rows = torch.full((b, 1), length - 1, dtype=torch.long)
        else:
            rows = torch.arange(length).expand(b, -1)
        p = view.visual_columns(view.attention(rows, torch.ones_like(rows, dtype=torch.bool)))  # (B, R, n)
        return select_top(view, p.mean(1), self.schedule, self.depth, self.cfg.renormalize)


@dataclass(frozen=True)
class FastV:
    cfg: FastVConfig = field(default_factory=FastVConfig)
    name: str = "fastv"
    site: str = "decoder"

    def config(self) -> dict:
        return asdict(self.cfg)

    def plan(self, depth: int) -> FastVPlan:
        return FastVPlan(self.cfg, depth)
