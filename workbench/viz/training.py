"""Training curves from the JSONL logs the trainers write beside the weights (`data/weights/*.log.jsonl`).

A log has one JSON object per line: {"kind": "train", "step", "loss", ...} every few steps and
{"kind": "eval", "step", ["epoch",] "<split>_<mode>_loss", "<split>_<mode>_token_acc", ...} every evaluation
interval (an "epoch": stage 1 logs it, the other stages do not). `read_training_log` turns it into one wide
polars table (a column per field, null where a row does not have it; nested objects flattened to
"parent.child" columns, lists kept as JSON text; records without a step, like a stage's "init" record, left
out) with an `epoch` on every row; `loss_curves` / `accuracy_curves` draw it.

    >>> import json, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "demo.log.jsonl"
    >>> rows = [{"kind": "train", "step": 0, "loss": 5.0}, {"kind": "train", "step": 10, "loss": 3.0},
    ...         {"kind": "eval", "step": 20, "epoch": 1, "val_loss": 2.5, "val_token_acc": 0.4}]
    >>> _ = p.write_text("\\n".join(json.dumps(r) for r in rows) + "\\n")
    >>> log = read_training_log(p)
    >>> log.select("run", "kind", "step", "epoch").rows()
    [('demo', 'train', 0, 0.0), ('demo', 'train', 10, 0.5), ('demo', 'eval', 20, 1.0)]
    >>> [t.name for t in loss_curves(log).data], [t.name for t in accuracy_curves(log).data]
    (['train loss', 'val_loss'], ['val_token_acc'])
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import polars as pl

__all__ = ["read_training_log", "read_training_logs", "eval_metrics", "loss_curves", "accuracy_curves"]


def _flatten(rec: dict, prefix: str = "") -> dict:
    """Nested objects → "parent.child" keys; lists → JSON text (one column type per field).

        >>> _flatten({"a": 1, "tau": {"pixels": 0.1}, "mix": [1, 2]})
        {'a': 1, 'tau.pixels': 0.1, 'mix': '[1, 2]'}
    """
    out = {}
    for k, v in rec.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def read_training_log(path: str | os.PathLike, run: str | None = None) -> pl.DataFrame:
    """One training log (JSONL) → a wide table: `run`, `kind`, `step`, `epoch` (float) and every other field.

    Rows sort by step (train before eval at equal steps); when a resumed run logged a step twice the last
    record wins. `epoch` is the logged one on eval rows (else the eval's rank: 1, 2, ...) and
    step / (steps per epoch) on train rows, the steps per epoch taken from the eval rows (null when the log has
    no eval row yet). Records without a `kind` and a `step` are metadata and left out. The last line may be cut
    off while a trainer is writing: it is skipped; a broken line anywhere else raises ValueError (file, line).
    """
    path = Path(path)
    run = run or path.name.removesuffix(".jsonl").removesuffix(".log")
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            if i == len(lines) - 1:  # a trainer is appending this line right now
                continue
            raise ValueError(f"{path}: line {i + 1} is not a training-log record ({e})") from None
        if "kind" in rec and isinstance(rec.get("step"), int | float):
            records.append(_flatten(rec))
    if not records:
        return pl.DataFrame(schema={"run": pl.Utf8, "kind": pl.Utf8, "step": pl.Int64, "epoch": pl.Float64})
    df = pl.from_dicts(records, infer_schema_length=None, strict=False)
    df = df.with_columns(pl.col("step").cast(pl.Int64), pl.lit(run).alias("run"))
    df = df.with_columns(pl.int_range(pl.len()).alias("_order"))
    df = (df.unique(subset=["kind", "step"], keep="last")
          .sort(["step", pl.col("kind") != "train", "_order"]).drop("_order"))
    if "epoch" not in df.columns:
        df = df.with_columns(pl.lit(None, dtype=pl.Float64).alias("epoch"))
    is_eval = pl.col("kind") == "eval"
    rank = pl.when(is_eval).then(is_eval.cast(pl.Int64).cum_sum().cast(pl.Float64))
    df = df.with_columns(pl.when(is_eval & pl.col("epoch").is_null()).then(rank)
                         .otherwise(pl.col("epoch").cast(pl.Float64, strict=False)).alias("epoch"))
    ev = df.filter(is_eval & pl.col("epoch").is_not_null() & (pl.col("epoch") > 0))
    per_epoch = float(np.median((ev["step"] / ev["epoch"]).to_numpy())) if ev.height else None
    est = pl.lit(None, dtype=pl.Float64) if per_epoch is None else pl.col("step") / per_epoch
    df = df.with_columns(pl.when(pl.col("epoch").is_not_null() & is_eval).then(pl.col("epoch"))
                         .otherwise(est).alias("epoch"))
    first = ["run", "kind", "step", "epoch"]
    return df.select(first + [c for c in df.columns if c not in first])


def read_training_logs(paths: Iterable[str | os.PathLike]) -> pl.DataFrame:
    """Several logs (e.g. `sorted(Path("data/weights").glob("*.log.jsonl"))`) in one table, `run` telling them
    apart (missing fields are null)."""
    frames = [read_training_log(p) for p in paths]
    frames = [f for f in frames if f.height]
    if not frames:
        return pl.DataFrame(schema={"run": pl.Utf8, "kind": pl.Utf8, "step": pl.Int64, "epoch": pl.Float64})
    return pl.concat(frames, how="diagonal_relaxed")


def eval_metrics(log: pl.DataFrame, suffix: str) -> list[str]:
    """Numeric eval columns ending in `suffix` ("_loss", "_acc") that have at least one value.

        >>> eval_metrics(pl.DataFrame({"kind": ["eval"], "a_loss": [1.0], "b_acc": [0.5], "c_loss": [None]}), "_loss")
        ['a_loss']
    """
    ev = log.filter(pl.col("kind") == "eval")
    return [c for c in log.columns if c.endswith(suffix) and log.schema[c].is_numeric()
            and ev[c].drop_nulls().len() > 0]


def _runs(log: pl.DataFrame) -> list[str]:
    return log["run"].unique(maintain_order=True).to_list() if "run" in log.columns else [None]


def _check_x(log: pl.DataFrame, x: str) -> None:
    if x not in ("step", "epoch"):
        raise ValueError(f"x must be 'step' or 'epoch', not {x!r}")
    if x not in log.columns:
        raise ValueError(f"the training log has no {x!r} column (columns: {log.columns})")


def _name(run: str | None, metric: str, multi: bool) -> str:
    return f"{run}: {metric}" if multi and run is not None else metric


def loss_curves(log: pl.DataFrame, x: str = "step", train: str = "loss", smooth: int = 1,
                title: str = "Loss") -> go.Figure:
    """Train loss (column `train` of the train rows, optionally a centred rolling mean over `smooth` points)
    and every eval `*_loss` column, against `x` ("step" or "epoch"); one set of curves per run."""
    _check_x(log, x)
    if smooth < 1:
        raise ValueError(f"smooth must be >= 1, got {smooth}")
    fig = go.Figure()
    runs = _runs(log)
    multi = len(runs) > 1
    metrics = eval_metrics(log, "_loss")
    for run in runs:
        part = log if run is None else log.filter(pl.col("run") == run)
        tr = part.filter((pl.col("kind") == "train") & pl.col(x).is_not_null())
        if train in tr.columns and tr[train].drop_nulls().len():
            tr = tr.filter(pl.col(train).is_not_null())
            y = tr[train]
            if smooth > 1:
                y = y.rolling_mean(smooth, min_samples=1, center=True)
            fig.add_trace(go.Scatter(x=tr[x].to_list(), y=y.to_list(), mode="lines",
                                     name=_name(run, f"train {train}", multi)))
        _add_eval_traces(fig, part, x, metrics, run, multi)
    fig.update_layout(title=title, xaxis_title=x, yaxis_title="loss", template="plotly_white")
    return fig


def _add_eval_traces(fig: go.Figure, part: pl.DataFrame, x: str, metrics: list[str], run, multi: bool) -> None:
    """One lines+markers trace per eval metric of one run's log rows."""
    ev = part.filter((pl.col("kind") == "eval") & pl.col(x).is_not_null())
    for m in metrics:
        e = ev.filter(pl.col(m).is_not_null())
        if e.height:
            fig.add_trace(go.Scatter(x=e[x].to_list(), y=e[m].to_list(), mode="lines+markers",
                                     name=_name(run, m, multi)))


def accuracy_curves(log: pl.DataFrame, x: str = "epoch", metrics: list[str] | None = None,
                    title: str = "Accuracy (eval)") -> go.Figure:
    """Every eval `*_acc` column (or the given `metrics`) against `x`, one set of curves per run; y in [0, 1]."""
    _check_x(log, x)
    metrics = eval_metrics(log, "_acc") if metrics is None else metrics
    missing = [m for m in metrics if m not in log.columns]
    if missing:
        raise ValueError(f"the training log has no columns {missing}")
    fig = go.Figure()
    runs = _runs(log)
    multi = len(runs) > 1
    for run in runs:
        part = log if run is None else log.filter(pl.col("run") == run)
        _add_eval_traces(fig, part, x, metrics, run, multi)
    fig.update_layout(title=title, xaxis_title=x, yaxis_title="accuracy", yaxis_range=[0, 1],
                      template="plotly_white")
    return fig
