"""Per-session cache of the dashboard: decoded clips, dense baselines and method runs of one browser session.

One `SessionCache` lives in each session's `gr.State` (gradio keeps one per browser tab / API client and
drops it after `time_to_live`), so nothing a user uploads or computes is visible to another user. Only the
models and the ANC weights are shared, read-only, per process.

Re-running with new knobs reuses what it can: the Clip (no re-decoding of the upload, found by its content
hash), the dense baseline of that clip and model, and any method run already made with the same knobs.
Each cache is a small LRU (`max_inputs` clips, a few runs per clip) so a long session cannot grow without
bound. The counters record the work done, for the UI's details line and for tests.

    >>> cache = SessionCache()
    >>> calls = []
    >>> clip = cache.clip("k", lambda: calls.append(1) or "a clip")
    >>> clip = cache.clip("k", lambda: calls.append(1) or "a clip")
    >>> len(calls), cache.counters["decodes"], cache.counters["clip_hits"]
    (1, 1, 1)
"""
from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workbench.data.clip import Clip
from workbench.pipeline import Description
from workbench.ui.methods import MethodSpec

__all__ = ["SessionCache", "Analysis"]


@dataclass
class Analysis:
    """One finished dashboard run: the input, its dense baseline and the chosen method's run."""

    key: str  # input key (content hash or sample name, with the frame count)
    clip: Clip
    model_name: str
    spec: MethodSpec
    dense: Description
    result: Description  # == dense for the dense method
    metrics: Any = None  # polars DataFrame of caption metrics, or a str saying why there are none
    trace_path: str | None = None
    reused: dict = field(default_factory=dict)  # what came from the cache: {"clip": bool, "dense": bool, "run": bool}

    @property
    def num_frames(self) -> int:
        return self.clip.num_frames


def _lru_put(d: OrderedDict, key, value, limit: int) -> None:
    d[key] = value
    d.move_to_end(key)
    while len(d) > limit:
        d.popitem(last=False)


@dataclass
class SessionCache:
    """The per-session state of the dashboard (see the module docstring)."""

    max_inputs: int = 3
    max_runs: int = 8
    clips: OrderedDict = field(default_factory=OrderedDict)  # input key → Clip
    dense: OrderedDict = field(default_factory=OrderedDict)  # (input key, model) → Description
    runs: OrderedDict = field(default_factory=OrderedDict)  # (input key, model, spec.relevant()) → Description
    metrics: OrderedDict = field(default_factory=OrderedDict)  # (input key, dense caption, caption) → metrics
    digests: dict = field(default_factory=dict)  # (path, size, mtime_ns) → content hash
    last: Analysis | None = None
    last_prune: Any = None  # the question tab's last `prune_callbacks.PruneAnalysis`
    counters: dict = field(default_factory=lambda: {"decodes": 0, "clip_hits": 0, "dense_runs": 0, "dense_hits": 0,
                                                    "method_runs": 0, "run_hits": 0})

    def digest(self, path: str | os.PathLike, compute: Callable[[str], str]) -> str:
        """Content hash of an upload, remembered by (path, size, mtime) so a re-run does not re-read the file."""
        st = os.stat(path)
        k = (os.fspath(path), st.st_size, st.st_mtime_ns)
        if k not in self.digests:
            if len(self.digests) > 32:
                self.digests.clear()
            self.digests[k] = compute(os.fspath(path))
        return self.digests[k]

    def clip(self, key: str, load: Callable[[], Clip]) -> Clip:
        if key in self.clips:
            self.counters["clip_hits"] += 1
            self.clips.move_to_end(key)
            return self.clips[key]
        c = load()
        self.counters["decodes"] += 1
        _lru_put(self.clips, key, c, self.max_inputs)
        for d in (self.dense, self.runs, self.metrics):  # results of evicted inputs go with them
            for k in [k for k in d if k[0] not in self.clips]:
                del d[k]
        return c

    def dense_result(self, key: str, model_name: str, run: Callable[[], Description]) -> Description:
        k = (key, model_name)
        if k in self.dense:
            self.counters["dense_hits"] += 1
            self.dense.move_to_end(k)
            return self.dense[k]
        d = run()
        self.counters["dense_runs"] += 1
        _lru_put(self.dense, k, d, self.max_inputs * 2)
        return d

    def method_result(self, key: str, model_name: str, spec: MethodSpec, run: Callable[[], Description]) -> Description:
        k = (key, model_name, spec.relevant())
        if k in self.runs:
            self.counters["run_hits"] += 1
            self.runs.move_to_end(k)
            return self.runs[k]
        d = run()
        self.counters["method_runs"] += 1
        _lru_put(self.runs, k, d, self.max_runs)
        return d

    def caption_metrics(self, key: str, captions: tuple[str, str], compute: Callable[[], Any]) -> Any:
        k = (key, *captions)
        if k not in self.metrics:
            _lru_put(self.metrics, k, compute(), self.max_runs)
        return self.metrics[k]
