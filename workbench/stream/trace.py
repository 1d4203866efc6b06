"""A stream run in the one trace schema (`workbench.trace.schema`): frame-level rows for the whole stream,
per-patch rows on demand for the frame being looked at.

A stream can be hours long, so its per-patch decisions are not expanded into rows up front (196 rows per
frame); `FrameLog` keeps them packed and `patch_rows(log, t)` expands one frame when a view needs it — the rows
`viz.overlay.patch_overlay` reads for clips. Frame-level kinds: `tokens_computed`, `keyframe`, `encoder_flops`,
`latency_ms` (site "stream.encoder"), `read_ms` ("stream.reader"), `route_choice` ("anc.router", target =
branch) when a router ran, and per window `tokens_to_decoder` at the window's first frame ("stream.window",
token = −1, target = window index).

    >>> import torch
    >>> from workbench.stream.encoders import FrameOut
    >>> from workbench.stream.runner import FrameLog
    >>> log = FrameLog(keep_masks=True)
    >>> log.add(0.0, 0.5, FrameOut(torch.zeros(4, 2), torch.tensor([True, False, True, True]), False), 1.0)
    >>> log_trace(log, [], "r", "s").filter(pl.col("kind") == "tokens_computed")["value"].to_list()
    [3.0]
    >>> rows = patch_rows(log, 0, 4, fuse=True, run_id="r", sample_id="s")
    >>> rows.filter(pl.col("kind") == "decision")["value"].to_list()
    [0.0, 2.0, 0.0, 0.0]
    >>> frames_table(log_trace(log, [], "r", "s")).columns
    ['frame', 'start_s', 'tokens_computed', 'keyframe', 'branch']
"""
from __future__ import annotations

import numpy as np
import polars as pl

from workbench.trace.schema import DECISIONS, TRACE_SCHEMA


def _rows(run_id: str, sample_id: str, frame, site: str, kind: str, value, target=None, token=None) -> pl.DataFrame:
    frame = np.asarray(frame, np.int32)
    n = len(frame)
    return pl.DataFrame({"run_id": [run_id] * n, "sample_id": [sample_id] * n, "frame": frame,
                         "layer": np.full(n, -1, np.int32), "site": [site] * n,
                         "token": np.full(n, -1, np.int32) if token is None else np.asarray(token, np.int32),
                         "kind": [kind] * n, "value": np.asarray(value, np.float64),
                         "target": pl.Series([None] * n, dtype=pl.Int32) if target is None else
                         np.asarray(target, np.int32)}, schema=TRACE_SCHEMA)


def log_trace(log, windows, run_id: str, sample_id: str) -> pl.DataFrame:
    """Frame-level trace rows of a stream run (FrameLog + its Windows)."""
    f = np.arange(len(log))
    parts = [_rows(run_id, sample_id, f, "stream.encoder", "tokens_computed", log.computed),
             _rows(run_id, sample_id, f, "stream.encoder", "keyframe", np.asarray(log.key, np.float64)),
             _rows(run_id, sample_id, f, "stream.encoder", "encoder_flops", log.flops),
             _rows(run_id, sample_id, f, "stream.encoder", "latency_ms", log.encode_ms),
             _rows(run_id, sample_id, f, "stream.reader", "read_ms", log.read_ms),
             _rows(run_id, sample_id, f, "stream.reader", "start_s", log.start_s)]
    branch = np.asarray(log.branch, np.int64)
    if len(branch) and branch.max() >= 0:
        parts.append(_rows(run_id, sample_id, f, "anc.router", "route_choice", branch.astype(np.float64), branch))
    if windows:
        parts.append(_rows(run_id, sample_id, [w.first_frame for w in windows], "stream.window", "tokens_to_decoder",
                           [w.tokens_to_decoder for w in windows], [w.index for w in windows]))
    return pl.concat(parts)


def frames_table(trace: pl.DataFrame) -> pl.DataFrame:
    """One row per frame: frame, start_s, tokens_computed, keyframe, branch (−1 without a router)."""
    rows = trace.filter(pl.col("token") == -1)

    def col(kind: str, default: float) -> pl.DataFrame:
        r = rows.filter(pl.col("kind") == kind).select("frame", pl.col("value").alias(kind))
        return r if r.height else rows.select("frame").unique().with_columns(pl.lit(default).alias(kind))
    base = col("start_s", 0.0).sort("frame")
    for kind, default in (("tokens_computed", 0.0), ("keyframe", 0.0), ("route_choice", -1.0)):
        base = base.join(col(kind, default), on="frame", how="left")
    return base.select(pl.col("frame"), pl.col("start_s"), pl.col("tokens_computed").cast(pl.Int64),
                       pl.col("keyframe").cast(pl.Boolean),
                       pl.col("route_choice").fill_null(-1.0).cast(pl.Int64).alias("branch"))


def patch_rows(log, t: int, n: int, fuse: bool, run_id: str = "", sample_id: str = "") -> pl.DataFrame:
    """Per-patch `decision` rows of frame t (site "sttf.fusion" with fusion, "sttf.gate" without): recomputed
    where the patch went through the encoder, else fused into its run's token (or reused), plus the frame's
    keyframe flag and router choice — what `patch_overlay` draws."""
    mask = log.mask(t, n)
    reused = DECISIONS["fused"] if fuse else DECISIONS["reused"]
    codes = np.where(mask, DECISIONS["recomputed"], reused).astype(np.float64)
    parts = [_rows(run_id, sample_id, np.full(n, t), "sttf.fusion" if fuse else "sttf.gate", "decision", codes,
                   token=np.arange(n)),
             _rows(run_id, sample_id, [t], "sttf.gate", "keyframe", [float(log.key[t])])]
    if log.branch[t] >= 0:
        parts.append(_rows(run_id, sample_id, [t], "anc.router", "route_choice", [float(log.branch[t])],
                           [log.branch[t]]))
    return pl.concat(parts)
