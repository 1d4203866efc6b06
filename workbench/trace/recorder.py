"""The trace recorder: opt-in, context-managed, and read-only with respect to the model.

Methods and the pipeline ask `active_recorder()`; when no `tracing(...)` block is open it returns None and
they skip all logging work. Recording only copies values out (detached, on CPU), so traced and untraced
runs produce identical outputs (tested).

    >>> import numpy as np
    >>> with tracing("run", "clip") as rec:
    ...     rec.log_grid("change_score", np.ones((2, 3)), site="sttf.gate")
    ...     rec.log("tokens_computed", 196, frame=0, site="encoder")
    >>> df = rec.to_polars(); df.height, sorted(set(df["kind"]))
    (7, ['change_score', 'tokens_computed'])
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import polars as pl

from workbench.trace.schema import TRACE_SCHEMA

_ACTIVE: ContextVar["TraceRecorder | None"] = ContextVar("workbench_trace", default=None)


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class TraceRecorder:
    """Accumulates rows column-wise; `to_polars()` builds the table once at the end."""

    def __init__(self, run_id: str, sample_id: str, debug: bool = False):
        self.run_id, self.sample_id, self.debug = run_id, sample_id, debug
        self._chunks: list[dict[str, np.ndarray]] = []
        self.meta: dict = {}

    def _add(self, kind, site, value, frame, layer, token, target):
        value = _np(value).astype(np.float64).ravel()
        n = len(value)

        def col(x, dtype):
            a = np.asarray(_np(x), dtype=dtype).ravel()
            return np.broadcast_to(a, (n,)) if a.size == 1 else a

        self._chunks.append({
            "frame": col(frame, np.int32), "layer": col(layer, np.int32), "site": np.full(n, site, object),
            "token": col(token, np.int32), "kind": np.full(n, kind, object), "value": value,
            "target": None if target is None else col(target, np.int64),
        })

    def log(self, kind: str, value, *, site: str = "", frame=-1, layer=-1, token=-1, target=None) -> None:
        """Scalar or 1-D values; frame/layer/token/target broadcast (scalars) or match value's length."""
        self._add(kind, site, value, frame, layer, token, target)

    def log_grid(self, kind: str, values, *, site: str = "", layer: int = -1, target=None,
                 frame_offset: int = 0) -> None:
        """A (T, N) frame × token grid (e.g. change scores, decisions); target optional (T, N) (−1 = none)."""
        v = _np(values)
        t, n = v.shape
        frames = np.repeat(np.arange(t, dtype=np.int32) + frame_offset, n)
        tokens = np.tile(np.arange(n, dtype=np.int32), t)
        tgt = None if target is None else _np(target).ravel()
        self._add(kind, site, v.ravel(), frames, layer, tokens, tgt)

    def log_frames(self, kind: str, values, *, site: str = "", layer: int = -1) -> None:
        """A per-frame series (T,)."""
        v = _np(values).ravel()
        self._add(kind, site, v, np.arange(len(v), dtype=np.int32), layer, -1, None)

    def to_polars(self) -> pl.DataFrame:
        if not self._chunks:
            return pl.DataFrame(schema=TRACE_SCHEMA)
        cat = lambda k: np.concatenate([c[k] for c in self._chunks])  # noqa: E731
        n = sum(len(c["value"]) for c in self._chunks)
        target = np.full(n, -1, np.int64)
        has_target = np.zeros(n, bool)
        pos = 0
        for c in self._chunks:
            k = len(c["value"])
            if c["target"] is not None:
                target[pos: pos + k] = c["target"]
                has_target[pos: pos + k] = c["target"] >= 0
            pos += k
        return pl.DataFrame({
            "run_id": np.full(n, self.run_id, object), "sample_id": np.full(n, self.sample_id, object),
            "frame": cat("frame"), "layer": cat("layer"), "site": cat("site"), "token": cat("token"),
            "kind": cat("kind"), "value": cat("value"),
            "target": pl.Series(np.where(has_target, target, 0)).cast(pl.Int32).set(~pl.Series(has_target), None),
        }, schema_overrides=TRACE_SCHEMA).select(list(TRACE_SCHEMA))


def active_recorder() -> TraceRecorder | None:
    """The recorder of the innermost open `tracing` block, or None (then skip logging work)."""
    return _ACTIVE.get()


@contextmanager
def tracing(run_id: str, sample_id: str, debug: bool = False):
    """Open a recorder for the block; methods and the pipeline log into it."""
    rec = TraceRecorder(run_id, sample_id, debug)
    token = _ACTIVE.set(rec)
    try:
        yield rec
    finally:
        _ACTIVE.reset(token)
