"""Where training runs: the device, and batches built in parallel worker processes.

Every training batch is a pure function of (config, step), so building batches in worker processes changes
nothing but speed: `ordered_map` yields them in step order. Workers are spawned (never forked), so they never
touch an accelerator the main process has initialised; they build CPU tensors and the loop moves each batch
with `Batch.to`. Inside `on_device(d)` factory calls without a device (torch.zeros, torch.arange, …) allocate
on `d`, so model code written for the CPU runs unchanged on a GPU.

    >>> list(ordered_map(abs, [-2, 1, -3]))
    [2, 1, 3]
    >>> with on_device("cpu") as dev:
    ...     dev.type
    'cpu'
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset


class _Items(Dataset):
    def __init__(self, fn: Callable, items: list):
        self.fn, self.items = fn, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.fn(self.items[i])


def ordered_map(fn: Callable, items: Iterable, workers: int = 0, prefetch: int = 4) -> Iterator:
    """fn(item) for each item, in order; computed ahead in `workers` spawned processes when workers > 0
    (then `fn` must pickle: a module-level function or a functools.partial of one)."""
    items = list(items)
    if workers <= 0 or len(items) == 0:
        return map(fn, items)
    return iter(DataLoader(_Items(fn, items), batch_size=None, num_workers=min(workers, len(items)),
                           prefetch_factor=prefetch, multiprocessing_context="spawn"))


@contextmanager
def on_device(device: str | torch.device = "cpu"):
    """Run the block with `device` as the default for new tensors (TF32 matmuls on CUDA)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but torch.cuda.is_available() is False")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    with dev:
        yield dev
