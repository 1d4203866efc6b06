"""Sweeps: every method side by side at matched budgets (issue 15), one runner, a local pool or Ray.

    cells.py      SweepSpec → Cell (method, knobs, budget, clip; resolved config; a stable id)
    worker.py     run_cell: caption, QA / gesture, FLOPs (counted + analytic), interleaved latency → one row
    executors.py  run_local (spawned process pool) | run_ray (RAY_ADDRESS or a local Ray for the run)
    results.py    cells/<id>.parquet, results.parquet (+ CIDEr), summary per (method, budget, knobs)
    runner.py     run_sweep: plan, skip finished cells (resume), execute, collect

    >>> from workbench.sweep import SweepSpec, run_sweep   # doctest: +SKIP
    >>> run_sweep(SweepSpec(("tome", "sparsevlm"), (31,), range(0, 40)), "data/generated/sweep").summary  # doctest: +SKIP
"""
from workbench.sweep.cells import Cell, SweepSpec, plan_cells, spec_from_file
from workbench.sweep.runner import DEFAULT_OUT, SweepResult, last_summary, run_sweep

__all__ = ["Cell", "SweepSpec", "plan_cells", "spec_from_file", "run_sweep", "SweepResult", "last_summary",
           "DEFAULT_OUT"]
