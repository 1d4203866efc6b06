"""Where the cells run: a local process pool (the default) or Ray — the same `worker.run_cell` either way.

- `run_local(cells, workers)`: a `ProcessPoolExecutor` of `workers` spawned processes (torch at one thread
  each: two busy threads per process on a shared 2-core machine make small ops 10–100× slower). Each cell's
  result depends only on the cell, so the pool's scheduling order never changes a number.
- `run_ray(cells, workers)`: the cells as Ray tasks (one CPU each) on the cluster at `RAY_ADDRESS` when it is
  set, else on a local Ray started for the run (`num_cpus=workers`, no dashboard) and shut down after it.
  Ray is an optional extra (`pip install -e '.[test]'` installs it); without it `--ray` says how to install it.

Both yield `(cell, row, trace)` as cells finish; the driver writes the files (`results.write_cell`), so a remote
cluster needs no shared file system.

    >>> from workbench.models.registry import create_model
    >>> from workbench.sweep.cells import SweepSpec, plan_cells
    >>> cells = plan_cells(SweepSpec((), (), range(0, 1), frames=8, model="tinyvlm-debug", repeats=0),
    ...                    create_model("tinyvlm-debug"))
    >>> [row["method"] for _, row, _ in run_local(cells, workers=1)]
    ['dense']
"""
from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from workbench.errors import InputError
from workbench.sweep.cells import Cell
from workbench.sweep.worker import run_cell

RAY_HINT = ("--ray needs Ray, an optional extra: pip install 'ray>=2.60' (or pip install -e '.[test]', which "
            "includes it); without --ray the sweep runs in a local process pool")


def _init_worker() -> None:
    import torch
    torch.set_num_threads(1)


def run_local(cells: Iterable[Cell], workers: int = 2) -> Iterator[tuple[Cell, dict, tuple | None]]:
    """Run cells in a pool of `workers` spawned processes; yield (cell, row, trace) as each finishes.
    workers=0 runs them one after the other in this process (debugging; the same numbers)."""
    cells = list(cells)
    if not cells:
        return
    if workers <= 0:
        for c in cells:
            yield (c, *run_cell(c))
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, min(workers, len(cells))), mp_context=ctx,
                             initializer=_init_worker) as pool:
        pending = {pool.submit(run_cell, c): c for c in cells}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                cell = pending.pop(fut)
                row, trace = fut.result()
                yield cell, row, trace


def ray_module():
    """The `ray` module, or an InputError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError("--ray", RAY_HINT) from None
    return ray


def _ray_cell(cell: Cell):
    _init_worker()
    return run_cell(cell)


def run_ray(cells: Iterable[Cell], workers: int = 2) -> Iterator[tuple[Cell, dict, tuple | None]]:
    """Run cells as Ray tasks (RAY_ADDRESS's cluster, else a local Ray for the run); yield as each finishes."""
    cells = list(cells)
    if not cells:
        return
    ray = ray_module()
    started = False
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)  # an existing cluster (its nodes need `workbench` installed)
        else:
            ray.init(num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False,
                     configure_logging=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        started = True
    try:
        task = ray.remote(num_cpus=1)(_ray_cell)
        refs = {task.remote(c): c for c in cells}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                cell = refs.pop(ref)
                row, trace = ray.get(ref)
                yield cell, row, trace
    finally:
        if started:
            ray.shutdown()
