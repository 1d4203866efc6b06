"""The trace schema (long format) and its Parquet round trip.

| column | type | meaning |
|---|---|---|
| run_id | str | which run (hash of model + method config + input + seed) |
| sample_id | str | which clip |
| frame | i32 | frame index (−1 when not per frame) |
| layer | i32 | encoder/decoder layer (−1 when not per layer) |
| site | str | where it was measured (hook point or method stage, e.g. "sttf.gate") |
| token | i32 | token / patch index (−1 for frame-level values) |
| kind | str | what was measured: change_score, decision, ref_age, drift, tokens_computed, ... |
| value | f64 | the measurement |
| target | i32 (nullable) | fused-into token, chosen branch, recycled cluster |

Run metadata (model, method, config, versions, git revision, input) is stored as JSON in the Parquet file's
key-value metadata under "workbench.run", so one file is self-describing; `read_trace` returns both.
A per-frame mask is then a filter + pivot:

    >>> import polars as pl
    >>> df = pl.DataFrame({"run_id": ["r"] * 2, "sample_id": ["s"] * 2, "frame": [0, 0], "layer": [-1, -1],
    ...     "site": ["sttf.gate"] * 2, "token": [0, 1], "kind": ["decision"] * 2, "value": [1.0, 0.0],
    ...     "target": [None, None]}, schema=TRACE_SCHEMA)
    >>> df.filter(pl.col("kind") == "decision")["value"].to_list()
    [1.0, 0.0]
"""
from __future__ import annotations

import json
import os

import polars as pl
import pyarrow.parquet as pq

TRACE_SCHEMA = {
    "run_id": pl.Utf8, "sample_id": pl.Utf8, "frame": pl.Int32, "layer": pl.Int32, "site": pl.Utf8,
    "token": pl.Int32, "kind": pl.Utf8, "value": pl.Float64, "target": pl.Int32,
}
META_KEY = b"workbench.run"

# decision codes used by every method that logs per-token decisions (kind == "decision")
DECISIONS = {"recomputed": 0, "reused": 1, "fused": 2, "pruned": 3, "kept": 4, "recycled": 5}


def empty_trace() -> pl.DataFrame:
    return pl.DataFrame(schema=TRACE_SCHEMA)


def write_trace(df: pl.DataFrame, path: str | os.PathLike, run: dict | None = None) -> None:
    """Write a trace table (cast to the schema) with run metadata to one Parquet file."""
    df = df.select([pl.col(c).cast(t) for c, t in TRACE_SCHEMA.items()])
    table = df.to_arrow()
    meta = dict(table.schema.metadata or {})
    meta[META_KEY] = json.dumps(run or {}, sort_keys=True, default=str).encode()
    pq.write_table(table.replace_schema_metadata(meta), os.fspath(path))


def read_trace(path: str | os.PathLike) -> tuple[pl.DataFrame, dict]:
    """(trace table, run metadata) from a file written by `write_trace`."""
    table = pq.read_table(os.fspath(path))
    meta = table.schema.metadata or {}
    run = json.loads(meta[META_KEY]) if META_KEY in meta else {}
    df = pl.from_arrow(table)
    missing = set(TRACE_SCHEMA) - set(df.columns)
    if missing:
        raise ValueError(f"{path}: not a workbench trace (missing columns {sorted(missing)})")
    return df.select([pl.col(c).cast(t) for c, t in TRACE_SCHEMA.items()]), run
