"""The cells of a sweep: one (method, knobs, budget, clip) each, planned up front and fully resolved.

`plan_cells(spec, model)` expands a `SweepSpec` — methods × budgets × knob grids (`spec_from_file`) × clips —
into `Cell`s. Each cell carries the method's resolved config (`method.config()` after `methods/budget.at_budget`:
STTF's calibrated τ, ToMe's budget, the decoder-side keep and depths), so a worker process or a Ray task
rebuilds exactly what the planner resolved and nothing depends on which executor runs it. The dense baseline is
always planned (ratios are taken against it, clip by clip). A cell's `id` hashes what it computes (model,
method, knobs, budget, resolved config, clip, frames): a finished cell is found again by its id, which is how a
sweep resumes (and a method whose resolution changed is run again, not resumed).

    >>> from workbench.models.registry import create_model
    >>> cells = plan_cells(SweepSpec(("tome", "fastv"), (31.0,), range(0, 2), frames=8), create_model("tinyvlm-debug"))
    >>> [(c.method, c.budget, c.clip) for c in cells][:3], len(cells)
    ([('dense', None, 'shapes:0'), ('dense', None, 'shapes:1'), ('tome', 31.0, 'shapes:0')], 6)
"""
from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench.errors import InputError
from workbench.methods.budget import BUDGET_METHODS, FIXED, at_budget


@dataclass(frozen=True)
class SweepSpec:
    """What to run: methods, budgets (tokens per frame), ShapesWorld seeds (captions + QA), gesture seeds (the
    synthetic gesture analog), frames per clip, the model, knob grids per method ({name: {knob: [values]}}),
    latency repeats (interleaved with dense, median; 0 = no timing) and whether to keep traces."""

    methods: tuple[str, ...]
    budgets: tuple[float, ...]
    seeds: range
    gesture_seeds: range = range(0, 0)
    frames: int = 16
    model: str = "tinyvlm-shapes"
    grids: dict = field(default_factory=dict)
    repeats: int = 3
    traces: bool = False

    def __post_init__(self):
        bad = [m for m in self.methods if m not in BUDGET_METHODS]
        if bad:
            raise InputError("--methods", f"unknown method {', '.join(bad)}; choose from {', '.join(BUDGET_METHODS)}")
        for m in self.grids:
            if m not in self.methods:
                raise InputError("--spec", f"knob grid for {m!r}, which is not among the methods {list(self.methods)}")


@dataclass(frozen=True)
class Cell:
    method: str
    budget: float | None  # tokens per frame asked for (None: the method's own setting)
    knobs: str  # JSON of this cell's grid knobs (sorted keys), "{}" when none
    config: str  # JSON of the resolved method config
    clip: str  # "shapes:SEED" or "gesture:SEED"
    frames: int
    model: str
    repeats: int = 3
    traces: bool = False

    @property
    def id(self) -> str:
        key = json.dumps([self.model, self.method, self.knobs, self.budget, self.config, self.clip, self.frames])
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    @property
    def task(self) -> str:
        return "gesture" if self.clip.startswith("gesture:") else "captions"

    @property
    def seed(self) -> int:
        return int(self.clip.split(":")[1])

    def to_dict(self) -> dict:
        return asdict(self)


def knob_grid(grid: dict) -> list[dict]:
    """{knob: [values]} → every combination as a dict (one empty dict for no grid).

        >>> knob_grid({"schedule": ["constant", "decreasing"], "prop_attn": [True]})
        [{'prop_attn': True, 'schedule': 'constant'}, {'prop_attn': True, 'schedule': 'decreasing'}]
    """
    if not grid:
        return [{}]
    keys = sorted(grid)
    vals = [v if isinstance(v, list) else [v] for v in (grid[k] for k in keys)]
    return [dict(zip(keys, combo)) for combo in itertools.product(*vals)]


def spec_from_file(path: str | Path) -> dict:
    """A small TOML spec: optional `methods`, `budgets`, and one table of knob lists per method, e.g.

        methods = ["tome", "eventful"]
        budgets = [31, 16]
        [tome]
        schedule = ["constant", "decreasing"]

    Returns {"methods": ..., "budgets": ..., "grids": {method: {knob: [values]}}} (absent keys left out)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise InputError(str(p), f"cannot read the sweep spec: {e}") from None
    out: dict = {"grids": {k: v for k, v in data.items() if isinstance(v, dict)}}
    for key in ("methods", "budgets"):
        if key in data:
            out[key] = tuple(data[key])
    return out


def _clips(spec: SweepSpec) -> list[str]:
    return [f"shapes:{s}" for s in spec.seeds] + [f"gesture:{s}" for s in spec.gesture_seeds]


def plan_cells(spec: SweepSpec, model) -> list[Cell]:
    """Every cell of the sweep, dense first, then methods in order × budgets × knob combinations × clips."""
    cells: list[Cell] = []
    clips = _clips(spec)
    methods = ("dense",) + tuple(m for m in spec.methods if m != "dense")
    for name in methods:
        budgets = (None,) if name in FIXED else spec.budgets
        for budget in budgets:
            for knobs in knob_grid(spec.grids.get(name, {})):
                m = at_budget(name, budget, model, knobs, spec.frames)
                config = json.dumps(m.config(), sort_keys=True, default=str)
                kj = json.dumps(knobs, sort_keys=True)
                cells += [Cell(name, None if budget is None else float(budget), kj, config, c, spec.frames,
                               spec.model, spec.repeats, spec.traces) for c in clips]
    return cells
