"""`run_sweep`: plan the cells, skip the finished ones, run the rest (local pool or Ray), write the results table
and the summary. The one entry point of `workbench sweep`, the benchmark and the notebook.

    >>> import tempfile
    >>> spec = SweepSpec(("random",), (49.0,), range(0, 2), frames=8, model="tinyvlm-debug", repeats=0)
    >>> with tempfile.TemporaryDirectory() as out:
    ...     s = run_sweep(spec, out, workers=1)
    ...     again = run_sweep(spec, out, workers=1)
    >>> s.ran, again.ran, again.skipped, sorted(s.summary["method"])
    (4, 0, 4, ['dense', 'random'])
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from workbench.sweep.cells import Cell, SweepSpec, plan_cells
from workbench.sweep.executors import run_local, run_ray
from workbench.sweep.results import finished, read_rows, summarise, with_cider, write_cell

DEFAULT_OUT = Path("data/generated/sweep")


@dataclass
class SweepResult:
    out: Path
    cells: list[Cell]
    ran: int
    skipped: int
    results: pl.DataFrame  # every cell's row + cider
    summary: pl.DataFrame  # one record per (method, budget, knobs)
    seconds: float

    def records(self) -> list[dict]:
        """The summary as plain dicts (what `--json` prints)."""
        return self.summary.to_dicts()


def run_sweep(spec: SweepSpec, out: str | Path = DEFAULT_OUT, ray: bool = False, workers: int = 2,
              progress=None, model=None) -> SweepResult:
    """Run every cell of `spec` not already in `out` (a resumed sweep skips finished cells), then collect.
    progress: optional callable(done, total, cell) after each cell."""
    from workbench.models.registry import create_model
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model or create_model(spec.model)
    cells = plan_cells(spec, model)
    done = finished(out)
    todo = [c for c in cells if c.id not in done]
    execute = run_ray if ray else run_local
    for i, (cell, row, trace) in enumerate(execute(todo, workers), 1):
        write_cell(out, cell, row, trace)
        if progress is not None:
            progress(i, len(todo), cell)
    results = with_cider(read_rows(out, {c.id for c in cells}))
    summary = summarise(results)
    results.write_parquet(out / "results.parquet")
    summary.write_parquet(out / "summary.parquet")
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()} {platform.processor()}".strip(),
            "executor": "ray" if ray else f"local pool ({workers})", "model": spec.model, "frames": spec.frames,
            "methods": list(spec.methods), "budgets": list(spec.budgets), "grids": spec.grids,
            "seeds": [spec.seeds.start, spec.seeds.stop],
            "gesture_seeds": [spec.gesture_seeds.start, spec.gesture_seeds.stop], "repeats": spec.repeats,
            "cells": len(cells), "ran": len(todo)}
    (out / "summary.json").write_text(json.dumps({"meta": meta, "summary": summary.to_dicts()}, indent=2))
    return SweepResult(out, cells, len(todo), len(cells) - len(todo), results, summary,
                       time.perf_counter() - start)


def last_summary(out: str | Path = DEFAULT_OUT) -> pl.DataFrame | None:
    """The summary of the sweep last written to `out` (None when there is none)."""
    p = Path(out) / "summary.parquet"
    return pl.read_parquet(p) if p.is_file() else None
