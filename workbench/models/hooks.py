"""TransformerLens-style identity hook points.

A `HookPoint` is an identity module placed at a named site of the model. Hooks are opt-in: attach them for
the duration of a `with model.hooks(...)` block, or collect activations with `model.run_with_cache(...)`.
Without hooks a hook point costs one Python call and changes nothing.

    >>> import torch
    >>> class M(HookedModule):
    ...     def __init__(self):
    ...         super().__init__(); self.hook_x = HookPoint()
    ...     def forward(self, x):
    ...         return self.hook_x(x) * 2
    >>> m = M(); m.setup_hooks()
    >>> with m.hooks([("hook_x", lambda t, hook: t + 1)]):
    ...     m(torch.ones(1)).item()
    4.0
    >>> m(torch.ones(1)).item()
    2.0
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable

import torch
from torch import nn

HookFn = Callable[[torch.Tensor, "HookPoint"], torch.Tensor | None]


class HookPoint(nn.Module):
    """Identity at a named site. `name` is filled in by `HookedModule.setup_hooks()`."""

    def __init__(self):
        super().__init__()
        self.name: str = ""

    @property
    def active(self) -> bool:
        """True when a hook is attached (sites use this to compute optional values, e.g. attention probs)."""
        return bool(self._forward_hooks)

    def add_hook(self, fn: HookFn) -> torch.utils.hooks.RemovableHandle:
        """Attach fn(tensor, hook) -> tensor | None; a returned tensor replaces the activation."""
        return self.register_forward_hook(lambda module, args, out: fn(out, module))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class HookedModule(nn.Module):
    """Root module mixin: names its hook points, attaches hooks in a context, caches activations."""

    def setup_hooks(self) -> None:
        for name, mod in self.named_modules():
            if isinstance(mod, HookPoint):
                mod.name = name

    @property
    def hook_points(self) -> dict[str, HookPoint]:
        return {n: m for n, m in self.named_modules() if isinstance(m, HookPoint)}

    @contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[str | Callable[[str], bool], HookFn]]):
        """Attach (name or name-filter, fn) hooks for the duration of the block; always removed afterwards."""
        handles = []
        points = self.hook_points
        try:
            for key, fn in fwd_hooks:
                names = [key] if isinstance(key, str) else [n for n in points if key(n)]
                for n in names:
                    if n not in points:
                        raise KeyError(f"no hook point named {n!r}; available: {sorted(points)}")
                    handles.append(points[n].add_hook(fn))
            yield self
        finally:
            for h in handles:
                h.remove()

    def run_with_cache(self, *args, names_filter: Callable[[str], bool] | None = None, **kwargs):
        """Run forward and return (output, {hook name: detached activation}). Repeated sites keep a list."""
        cache: dict[str, torch.Tensor | list[torch.Tensor]] = {}

        def save(t: torch.Tensor, hook: HookPoint):
            prev = cache.get(hook.name)
            val = t.detach()
            cache[hook.name] = val if prev is None else (prev + [val] if isinstance(prev, list) else [prev, val])

        flt = names_filter or (lambda n: True)
        with self.hooks([(flt, save)]):
            out = self(*args, **kwargs)
        return out, cache
