"""Trade-off curves of a sweep: accuracy vs visual tokens (a τ / budget sweep) and accuracy vs FLOPs.

Pure functions: one row per setting in a polars DataFrame → a plotly Figure (never shown here). Settings
of the same `group` (a policy, a source, a method) are joined by a line in order of x; `label` (τ, ρ, a
cost bias) is printed beside each marker; an optional dense baseline is drawn as a star.

    >>> import polars as pl
    >>> df = pl.DataFrame({"tau": [0.0, 0.05, 0.2], "tokens_per_frame": [196.0, 60.0, 20.0],
    ...                    "accuracy": [0.80, 0.78, 0.60]})
    >>> fig = accuracy_vs_tokens(df, dense=(196.0, 0.80))
    >>> [t.name for t in fig.data], list(fig.data[0].x)
    (['sweep', 'dense'], [20.0, 60.0, 196.0])
"""
from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
import polars as pl

__all__ = ["accuracy_vs_tokens", "accuracy_vs_flops", "require_columns"]


def require_columns(df: pl.DataFrame, columns: Sequence[str | None], what: str) -> None:
    """Raise a ValueError naming the missing columns (None entries are ignored).

        >>> require_columns(pl.DataFrame({"a": [1]}), ["a", None], "demo")
        >>> require_columns(pl.DataFrame({"a": [1]}), ["b"], "demo")
        Traceback (most recent call last):
        ...
        ValueError: demo needs columns ['b']; the DataFrame has ['a']
    """
    missing = [c for c in columns if c is not None and c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs columns {missing}; the DataFrame has {df.columns}")


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _text(label: str, v) -> str:
    """Numbers as "label=value" (τ=0.05), names as they are."""
    return str(v) if isinstance(v, str) else f"{label}={_fmt(v)}"


def _tradeoff(df: pl.DataFrame, x: str, y: str, label: str | None, group: str | None,
              dense: tuple[float, float] | None, x_title: str, y_title: str, title: str,
              what: str) -> go.Figure:
    require_columns(df, [x, y, label, group], what)
    fig = go.Figure()
    groups = [(None, df)] if group is None else [
        (g, df.filter(pl.col(group) == g)) for g in df[group].unique(maintain_order=True).to_list()]
    for name, part in groups:
        part = part.filter(pl.col(x).is_not_null() & pl.col(y).is_not_null()).sort(x)
        text = [_text(label, v) for v in part[label].to_list()] if label else None
        fig.add_trace(go.Scatter(
            x=part[x].to_list(), y=part[y].to_list(), mode="lines+markers+text" if text else "lines+markers",
            name="sweep" if name is None else str(name), text=text,
            textposition=["top center" if i % 2 == 0 else "bottom center" for i in range(part.height)],  # neighbours apart
            hovertemplate=f"{x_title}: %{{x:.4g}}<br>{y_title}: %{{y:.4g}}"
                          + ("<br>%{text}" if text else "") + "<extra>%{fullData.name}</extra>"))
    if dense is not None:
        fig.add_trace(go.Scatter(x=[dense[0]], y=[dense[1]], mode="markers", name="dense",
                                 marker={"symbol": "star", "size": 14, "color": "black"},
                                 hovertemplate=f"dense<br>{x_title}: %{{x:.4g}}<br>{y_title}: %{{y:.4g}}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, template="plotly_white",
                      legend={"orientation": "h", "y": -0.2})
    return fig


def accuracy_vs_tokens(df: pl.DataFrame, x: str = "tokens_per_frame", y: str = "accuracy",
                       label: str | None = "tau", group: str | None = None,
                       dense: tuple[float, float] | None = None, y_title: str | None = None,
                       title: str = "Accuracy vs visual tokens per frame") -> go.Figure:
    """A τ (or budget) sweep: one marker per setting at (tokens per frame, accuracy), one line per `group`.

    df: one row per setting with columns `x`, `y`, `label` (printed beside the marker; None = no text) and
    `group` (None = all one curve). dense: (tokens, accuracy) of the dense baseline, drawn as a star.
    Numeric labels print as "tau=0.05", text labels as they are; labels alternate above / below the markers.

        >>> fig = accuracy_vs_tokens(pl.DataFrame({"tau": [0.1], "tokens_per_frame": [40.0],
        ...                                         "accuracy": [0.7]}))
        >>> fig.data[0].text
        ('tau=0.1',)
    """
    return _tradeoff(df, x, y, label, group, dense, "visual tokens per frame (to the decoder)", y_title or y,
                     title, "accuracy_vs_tokens")


def accuracy_vs_flops(df: pl.DataFrame, x: str = "flops_ratio", y: str = "accuracy", label: str | None = None,
                      group: str | None = "setting", dense: tuple[float, float] | None = None,
                      x_title: str | None = None, y_title: str | None = None,
                      title: str = "Accuracy vs encoder FLOPs") -> go.Figure:
    """Accuracy against compute: one marker per setting at (FLOPs — by default the ratio to dense —, accuracy).

    df: one row per setting with columns `x`, `y`, and optionally `label` / `group` (as in
    `accuracy_vs_tokens`). With a ratio on x the dense baseline sits at x = 1.

        >>> df = pl.DataFrame({"setting": ["anc", "anc"], "flops_ratio": [0.3, 0.1], "accuracy": [0.7, 0.6]})
        >>> fig = accuracy_vs_flops(df, dense=(1.0, 0.72))
        >>> [t.name for t in fig.data], list(fig.data[0].x)
        (['anc', 'dense'], [0.1, 0.3])
    """
    xt = x_title or ("encoder FLOPs / dense" if x == "flops_ratio" else x)
    return _tradeoff(df, x, y, label, group, dense, xt, y_title or y, title, "accuracy_vs_flops")
