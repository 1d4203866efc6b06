"""Confusion matrix heatmap (rows = truth, columns = prediction), e.g. the 11 DVS128 Gesture classes.

Input is either the count matrix (`GestureEval.confusion`, the `"confusion"` list of an eval results.json) or
per-clip predictions (`GestureEval.per_clip`: columns `label`, `pred`) through `confusion_from_predictions`.

    >>> import polars as pl
    >>> per_clip = pl.DataFrame({"label": [0, 0, 1, 2], "pred": [0, 1, 1, 2]})
    >>> conf = confusion_from_predictions(per_clip, 3)
    >>> conf.tolist()
    [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    >>> fig = confusion_heatmap(conf, ["a", "b", "c"])
    >>> fig.data[0].z[0], fig.layout.title.text
    ([0.5, 0.5, 0.0], 'Confusion matrix — accuracy 75.0% (n = 4)')
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import polars as pl

__all__ = ["confusion_from_predictions", "confusion_heatmap"]


def confusion_from_predictions(per_clip: pl.DataFrame, n_classes: int, truth: str = "label",
                               pred: str = "pred") -> np.ndarray:
    """(n_classes, n_classes) int64 counts from one row per clip with integer class columns `truth`, `pred`."""
    for c in (truth, pred):
        if c not in per_clip.columns:
            raise ValueError(f"per-clip predictions need a {c!r} column (columns: {per_clip.columns})")
    t, p = per_clip[truth].to_numpy().astype(np.int64), per_clip[pred].to_numpy().astype(np.int64)
    bad = (t < 0) | (t >= n_classes) | (p < 0) | (p >= n_classes)
    if bad.any():
        raise ValueError(f"class indices must lie in [0, {n_classes}); got truth {t[bad][:3].tolist()}, "
                         f"prediction {p[bad][:3].tolist()}")
    conf = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(conf, (t, p), 1)
    return conf


def confusion_heatmap(conf, classes: Sequence[str], normalize: str | None = "true",
                      title: str = "Confusion matrix") -> go.Figure:
    """Heatmap of a (C, C) count matrix; the cell text shows the counts, the colour the rate.

    normalize: "true" (each row sums to 1: recall per class; rows without clips stay 0), "all" (the whole
    matrix sums to 1) or None (raw counts). The title gets the overall accuracy and n.
    """
    conf = np.asarray(conf)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {conf.shape}")
    if conf.shape[0] != len(classes):
        raise ValueError(f"{len(classes)} class names for a {conf.shape[0]}×{conf.shape[1]} matrix")
    if (conf < 0).any():
        raise ValueError("a confusion matrix holds counts (≥ 0)")
    counts = conf.astype(np.float64)
    if normalize == "true":
        rows = counts.sum(1, keepdims=True)
        z = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
        bar = "rate (row)"
    elif normalize == "all":
        z = counts / max(counts.sum(), 1.0)
        bar = "rate (all)"
    elif normalize is None:
        z = counts
        bar = "clips"
    else:
        raise ValueError(f"normalize must be 'true', 'all' or None, not {normalize!r}")
    n = int(conf.sum())
    acc = float(np.trace(conf)) / n if n else float("nan")
    names = [str(c) for c in classes]
    fig = go.Figure(go.Heatmap(
        z=z.tolist(), x=names, y=names, colorscale="Blues", zmin=0, zmax=1 if normalize else None,
        text=conf.astype(np.int64).tolist(), texttemplate="%{text}", colorbar={"title": bar},
        hovertemplate="truth %{y}<br>predicted %{x}<br>clips %{text}<br>rate %{z:.2f}<extra></extra>"))
    head = f"{title} — accuracy {100 * acc:.1f}% (n = {n})" if n else f"{title} — no clips"
    fig.update_layout(title=head, xaxis_title="predicted", yaxis_title="truth", template="plotly_white",
                      yaxis_autorange="reversed", xaxis_tickangle=-45, height=max(420, 120 + 40 * len(names)))
    return fig
