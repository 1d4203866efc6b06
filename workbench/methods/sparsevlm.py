"""SparseVLM — text-guided, training-free visual-token sparsification inside the decoder (METHODS.md §4).

At prefill, once:
1. **Raters** (chosen once, before layer 0, from the decoder's input embeddings, as the released code):
   relevance of text token j = mean over visual tokens v of softmax_j(v·tⱼ); raters = the text tokens (all of
   the prompt after the image: <bos> question <sep>) whose relevance is above the mean. Measured on TinyVLM: the
   raters are mostly "is" / "the", which come *before* the object word of "what color is the star" — under the
   causal mask their attention cannot depend on which object is asked about, so the kept set is often the same
   for two objects (it follows what is salient and the question's type). `raters="relevance+last"` (*proposal*)
   adds the last prompt token, the one position that has read the whole question; `"all"` uses every token.
2. **Scores** at each pruning point from that layer's real attention: P = head-mean attention probabilities,
   rater rows × visual columns (causal mask and key bias included); a visual token's score = its column mean.
3. **How many**: `rule="fixed"` — the schedule's budget (kept + recycled = budget); `rule="rank"` — the
   adaptive rule k = min(⌊scale · rank(P) + bias⌋, n − 1), rank at relative tolerance `rank_tol`, with the
   scale set per point to budget / `rank_ref` (so the rule keeps the fixed budget when rank(P) = rank_ref;
   questions whose raters attend alike — low rank — keep fewer tokens, diverse ones more).
4. **Recycling**: of the pruned tokens, the top `recycle_frac` by score are clustered with DPC-kNN (about one
   cluster per `per_cluster`, deterministic: ties by token order) and each cluster is merged (size-weighted
   mean of hidden states, its sizes summed) into one token inserted after the kept ones.

Pruning depths for TinyVLM's 4-layer decoder (default (0.5, 1.5, 2.5); the release prunes after layers 2, 6
and 15 of LLaVA's 32, i.e. early, mid, late): inside layers 0, 1 and 2, after each one's attention (which gives
the scores) and before its MLP. Mid-layer points let the pruned tokens skip that layer's MLP and every later
layer, which a 4-layer decoder needs to reach the paper's low budgets (see `decoder_protocol`; with points
at whole layers, keep ≥ 1/4 is the floor). `points=(0, 1.5, 2.5)` starts before layer 0 attends (for keeps
below 1/8).

No-op: keep = 1 (or budgets of 1.0) keeps every token and recycles none: dense, bit for bit (tested).

    >>> from workbench.models.registry import create_model
    >>> from workbench.data.shapesworld import make_clip
    >>> from workbench.pipeline import describe
    >>> d = describe(create_model("tinyvlm-debug"), make_clip(0), SparseVLM(SparseVLMConfig(keep=0.6)))
    >>> d.method, round(d.decoder_keep, 2)  # (a 1-layer decoder: one point, K = 0.5)
    ('sparsevlm', 0.6)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from workbench.errors import InputError
from workbench.methods.ops.prune import (column_scores, numerical_rank, pack, rank_keep, rater_relevance, recycle,
                                         select_raters, top_slots)
from workbench.methods.prune_schedule import PruneSchedule, explicit_budgets as _explicit_budgets, kept_for
from workbench.models.decoder_protocol import SETTINGS, PruneView, Selection
from workbench.trace import active_recorder

RULES = ("fixed", "rank")
RATERS = ("relevance", "relevance+last", "all")


@dataclass(frozen=True)
class SparseVLMConfig:
    """SparseVLM knobs (defaults documented in the module docstring)."""

    points: tuple[float, ...] | None = None  # None: default_points(depth) = (0.5, 1.5, 2.5) for TinyVLM
    keep: float | None = 0.33
    budgets: tuple[float, ...] | None = None  # per point: fraction of the input visual tokens present; replaces keep
    counts: tuple[int, ...] | None = None  # per point: absolute tokens present (the release's 300/200/110); replaces keep
    decay: float = 0.5  # keep → budgets: each point keeps this share of the previous point's
    rule: str = "fixed"
    rank_ref: float = 3.0  # rank rule: the rank(P) at which it keeps exactly the fixed budget
    rank_bias: float = 0.0
    rank_tol: float = 1e-2
    recycle: bool = True
    recycle_frac: float = 0.3
    per_cluster: int = 10
    renormalize: bool = False
    raters: str = "relevance"  # "relevance+last" adds the last prompt token (proposal), "all" every prompt token

    def __post_init__(self):
        if self.raters not in RATERS:
            raise InputError(SETTINGS, f"SparseVLM raters must be one of {RATERS}, not {self.raters!r}")
        if self.rule not in RULES:
            raise InputError(SETTINGS, f"SparseVLM rule must be one of {RULES}, not {self.rule!r}")
        if not 0 < self.recycle_frac <= 1 or self.per_cluster < 1 or self.rank_ref <= 0 or self.rank_tol <= 0:
            raise InputError(SETTINGS, "recycle_frac must be in (0, 1], per_cluster ≥ 1, rank_ref and rank_tol > 0")
        if self.points is not None:
            object.__setattr__(self, "points", tuple(float(p) for p in self.points))
        _explicit_budgets(self)

    @property
    def schedule(self) -> PruneSchedule:
        return PruneSchedule(self.points, self.keep, self.budgets, self.counts, self.decay)


@dataclass
class SparseVLMPlan:
    """One prefill's state: the raters (chosen at the first point) and the schedule."""

    cfg: SparseVLMConfig
    depth: int
    raters: torch.Tensor | None = None  # (B, R) indices into the prompt block
    raters_valid: torch.Tensor | None = None
    points: tuple[float, ...] = field(init=False)
    schedule: PruneSchedule = field(init=False)

    def __post_init__(self):
        self.schedule = self.cfg.schedule.at(self.depth)
        self.points = self.schedule.points

    def _choose_raters(self, view: PruneView) -> int:
        e, p0 = view.embeds, view.input_prompt
        m = int(p0[0, 0]) - view.input_visual_start
        vis = e[:, view.input_visual_start: view.input_visual_start + m]  # (B, M, D)
        text = e.gather(1, p0[..., None].expand(-1, -1, e.shape[-1]))  # (B, P, D)
        rel = rater_relevance(vis, text, view.visual_valid, view.prompt_valid)  # first point: the input block
        chosen = select_raters(rel, view.prompt_valid)
        if self.cfg.raters == "all":
            chosen = view.prompt_valid.clone()
        elif self.cfg.raters == "relevance+last":  # the one position that has read the whole question (causal)
            last = view.prompt_valid.long().cumsum(1).argmax(1)
            chosen[torch.arange(len(last)), last] = True
        self.raters, self.raters_valid = pack(chosen)
        rec = active_recorder() if e.shape[0] == 1 else None
        if rec is not None:
            j = torch.arange(rel.shape[1])
            rec.log("relevance", rel[0], site="sparsevlm.raters", token=j)
            rec.log("rater", chosen[0].float(), site="sparsevlm.raters", token=j)
        return 2 * vis.shape[0] * m * text.shape[1] * e.shape[-1]

    def select(self, view: PruneView) -> Selection:
        cfg = self.cfg
        flops = self._choose_raters(view) if self.raters is None else 0
        rows = view.prompt.gather(1, self.raters)  # (B, R) positions of the raters in the current sequence
        p = view.visual_columns(view.attention(rows, self.raters_valid))  # (B, R, n)
        scores = column_scores(p, self.raters_valid)
        present = view.visual_valid.sum(1)
        target = self.schedule.targets(view.point_index, view.n_input, present, self.depth)
        ranks = torch.tensor([numerical_rank(p[b][self.raters_valid[b]][:, view.visual_valid[b]], cfg.rank_tol)
                              for b in range(len(present))])  # rank(P_b) over the sample's real rows × columns
        if cfg.rule == "rank":  # the adaptive count, around the fixed budget (which a no-op budget = all keeps)
            target = torch.tensor([int(p_) if int(t) >= int(p_) else
                                   rank_keep(int(r), float(t) / cfg.rank_ref, cfg.rank_bias, int(p_))
                                   for r, t, p_ in zip(ranks, target, present)])
        k = kept_for(target, present, cfg.recycle, cfg.recycle_frac, cfg.per_cluster)
        keep, keep_valid = top_slots(scores, view.visual_valid, k)
        cluster = n_cl = None
        if cfg.recycle:
            kept = torch.zeros_like(view.visual_valid).scatter_(1, keep, keep_valid)
            cluster, n_cl, f = recycle(view.visual_hidden(), scores, view.visual_valid & ~kept, cfg.recycle_frac,
                                       cfg.per_cluster)
            flops += f
        info = {"rank": ranks.float(), "raters": self.raters_valid.sum(1).float()}
        return Selection(keep, keep_valid, scores, cluster, n_cl, flops, info, cfg.renormalize)


@dataclass(frozen=True)
class SparseVLM:
    """The decoder-side method plug-in: pass it to `describe(..., method=...)` (alone or stacked on an
    encoder-side method) or to `TinyVLM.generate(..., pruner=...)`."""

    cfg: SparseVLMConfig = field(default_factory=SparseVLMConfig)
    name: str = "sparsevlm"
    site: str = "decoder"

    def config(self) -> dict:
        return asdict(self.cfg)

    def plan(self, depth: int) -> SparseVLMPlan:
        return SparseVLMPlan(self.cfg, depth)
