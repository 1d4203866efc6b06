"""The frame with its 14×14 patch grid overlaid: what happened to each patch, why, and was that right.

    patch_overlay(frame, trace, frame_index, view="decision" | "change_score" | "motion",
                  motion_mask=None, grid=None, site=None, title=None) -> go.Figure

frame: the model's input frame — (3, H, W) RGB or (2, H, W) event floats (a `Clip.frames[t]`), or an
(H, W, 3) image. trace: one run's long-format trace (`workbench.trace.schema`). Views:

- "decision": recomputed / reused / fused cells (DECISIONS colours) from the run's `decision` rows (the
  fusion site when there is one: STTF logs "sttf.fusion"), with fused groups outlined: the boundary of every
  region of fused cells, and of cells fused into one shared decoder token when a method merges in space.
  Runs without per-patch decisions are drawn from their frame-level facts: ANC's `route_choice` (skip →
  every patch reused, any other branch → recomputed); a dense run → every patch recomputed.
- "change_score": the gate's `change_score` heatmap (colour bar), recomputed cells outlined.
- "motion": the ground-truth motion mask of that frame (`Clip.motion_mask`, (T, g, g) or (g, g)), recomputed
  cells outlined, and in the title how well the gate agreed with the truth (recall on moving patches,
  reuse rate on still ones).

Every cell's hover says its patch, decision, change score, reference age and fused-into token (with the run
length of that token). `decision_grid` gives the same (g, g) codes as an array for tests and notebooks.

    >>> import numpy as np, polars as pl
    >>> from workbench.trace.schema import TRACE_SCHEMA
    >>> codes = np.array([0, 2, 2, 1])  # recomputed, fused, fused, reused on a 2×2 grid
    >>> df = pl.DataFrame({"run_id": "r", "sample_id": "s", "frame": 0, "layer": -1, "site": "sttf.fusion",
    ...     "token": np.arange(4), "kind": "decision", "value": codes.astype(float), "target": [0, 1, 2, 3]},
    ...     schema=TRACE_SCHEMA)
    >>> decision_grid(df, 0).codes.tolist()
    [[0, 2], [2, 1]]
    >>> fig = patch_overlay(np.zeros((3, 16, 16), np.float32), df, 0)
    >>> [t.name for t in fig.data][:3], fig.layout.title.text
    (['frame', 'decision', 'recomputed (1)'], 'frame 0 · 1 recomputed · 1 reused · 2 fused (sttf.fusion)')
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import polars as pl

from workbench.trace.schema import DECISIONS
from workbench.viz.style import DECISION_COLORS, DECISION_NAMES, base_layout, image_data_uri, to_rgb_image

__all__ = ["patch_overlay", "decision_grid", "DecisionGrid", "VIEWS"]

VIEWS = ("decision", "change_score", "motion")
RECOMPUTED, REUSED, FUSED = DECISIONS["recomputed"], DECISIONS["reused"], DECISIONS["fused"]
RECYCLED = DECISIONS["recycled"]


@dataclass
class DecisionGrid:
    """Per-patch facts of one frame on a (g, g) grid (row-major patch order, as the encoder's tokens)."""

    codes: np.ndarray  # (g, g) int, DECISIONS codes
    targets: np.ndarray  # (g, g) int, fused-into decoder token (−1 = none)
    score: np.ndarray | None  # (g, g) change score, when logged
    ref_age: np.ndarray | None  # (g, g) frames since last recompute, when logged
    source: str  # where the codes came from: a site name, "anc.route_choice = <branch>" or "dense"
    keyframe: bool = False
    scene_cut: bool = False


def _grid_values(rows: pl.DataFrame, g: int, fill: float) -> np.ndarray:
    out = np.full(g * g, fill, np.float64)
    tok = rows["token"].to_numpy()
    ok = (tok >= 0) & (tok < g * g)
    out[tok[ok]] = rows["value"].to_numpy()[ok]
    return out.reshape(g, g)


def _frame_flag(trace: pl.DataFrame, kind: str, frame_index: int) -> bool:
    r = trace.filter((pl.col("kind") == kind) & (pl.col("frame") == frame_index) & (pl.col("token") == -1))
    return bool(r.height and r["value"].max() > 0)


def infer_grid(trace: pl.DataFrame, default: int = 14) -> int:
    """Grid side from the largest patch index of the per-patch rows (196 tokens → 14)."""
    rows = trace.filter(pl.col("kind").is_in(["decision", "change_score"]) & (pl.col("token") >= 0))
    if rows.height == 0:
        return default
    return max(1, int(np.ceil(np.sqrt(int(rows["token"].max()) + 1))))


def decision_grid(trace: pl.DataFrame, frame_index: int, grid: int | None = None,
                  site: str | None = None) -> DecisionGrid:
    """The (g, g) decision codes (and targets, scores, ages) of one frame; see the module docstring."""
    g = grid or infer_grid(trace)
    at = trace.filter(pl.col("frame") == frame_index)
    dec = at.filter((pl.col("kind") == "decision") & (pl.col("token") >= 0))
    if site is None and dec.height:
        sites = sorted(set(dec["site"].to_list()))
        site = next((s for s in sites if s.endswith("fusion")), sites[0])
    score_rows = at.filter((pl.col("kind") == "change_score") & (pl.col("token") >= 0))
    age_rows = at.filter((pl.col("kind") == "ref_age") & (pl.col("token") >= 0))
    score = _grid_values(score_rows, g, np.nan) if score_rows.height else None
    age = _grid_values(age_rows, g, np.nan) if age_rows.height else None
    key, cut = _frame_flag(trace, "keyframe", frame_index), _frame_flag(trace, "scene_cut", frame_index)
    if dec.height:
        rows = dec.filter(pl.col("site") == site)
        codes = _grid_values(rows, g, RECOMPUTED).astype(np.int64)
        tgt = rows.with_columns(pl.col("target").fill_null(-1).cast(pl.Float64).alias("value"))
        return DecisionGrid(codes, _grid_values(tgt, g, -1).astype(np.int64), score, age, site, key, cut)
    route = at.filter((pl.col("kind") == "route_choice") & (pl.col("token") == -1))
    if route.height:
        from workbench.viz.timeline import BRANCH_NAMES
        choice = int(route["value"][0])
        name = BRANCH_NAMES[choice] if 0 <= choice < len(BRANCH_NAMES) else str(choice)
        codes = np.full((g, g), REUSED if choice == 0 else RECOMPUTED, np.int64)
        return DecisionGrid(codes, np.full((g, g), -1), score, age, f"anc.route_choice = {name}", key, cut)
    return DecisionGrid(np.full((g, g), RECOMPUTED, np.int64), np.full((g, g), -1), score, age, "dense", key, cut)


def _edges(key: np.ndarray, draw: np.ndarray, p: float) -> tuple[list, list]:
    """Line segments (x, y with None breaks) between 4-neighbour cells whose `key` differs where at least one
    side is in `draw`, plus the image border around `draw` cells. Cell (r, c) spans [c·p, (c+1)·p] × [r·p, …]."""
    g = key.shape[0]
    xs: list = []
    ys: list = []

    def seg(x0, y0, x1, y1):
        xs.extend([x0, x1, None])
        ys.extend([y0, y1, None])

    pad_k = np.pad(key, 1, constant_values=np.iinfo(np.int64).min)
    pad_d = np.pad(draw, 1, constant_values=False)
    for r in range(g + 1):  # horizontal edges above row r (between padded rows r and r+1)
        for c in range(g):
            a, b = (r, c + 1), (r + 1, c + 1)
            if (pad_d[a] or pad_d[b]) and pad_k[a] != pad_k[b]:
                seg(c * p, r * p, (c + 1) * p, r * p)
    for c in range(g + 1):  # vertical edges left of column c
        for r in range(g):
            a, b = (r + 1, c), (r + 1, c + 1)
            if (pad_d[a] or pad_d[b]) and pad_k[a] != pad_k[b]:
                seg(c * p, r * p, c * p, (r + 1) * p)
    return xs, ys


def _fused_keys(codes: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Group key per cell: −2 not grouped, −1 fused (one region), t ≥ 0 fused into a token shared in space,
    −3 − t merged into recycled token t (decoder-side recycling: one outline per cluster)."""
    fused = codes == FUSED
    vals, counts = np.unique(targets[fused & (targets >= 0)], return_counts=True)
    shared = set(vals[counts > 1].tolist())
    key = np.where(fused, -1, -2).astype(np.int64)
    for t in shared:
        key[fused & (targets == t)] = t
    rec = (codes == RECYCLED) & (targets >= 0)
    key[rec] = -3 - targets[rec]
    return key


def _run_lengths(trace: pl.DataFrame, site: str) -> dict[int, int]:
    rows = trace.filter((pl.col("kind") == "decision") & (pl.col("site") == site) & pl.col("target").is_not_null())
    if rows.height == 0:
        return {}
    counts = rows.group_by("target", "token").len().group_by("target").agg(pl.col("len").max())
    return dict(zip(counts["target"].to_list(), counts["len"].to_list()))


def _hover(dg: DecisionGrid, runs: dict[int, int], mask: np.ndarray | None) -> np.ndarray:
    g = dg.codes.shape[0]
    text = np.empty((g, g), dtype=object)
    for r in range(g):
        for c in range(g):
            parts = [f"patch {r * g + c} (row {r}, col {c})", DECISION_NAMES.get(int(dg.codes[r, c]), "?")]
            if dg.score is not None and np.isfinite(dg.score[r, c]):
                parts.append(f"change score {dg.score[r, c]:.4g}")
            if dg.ref_age is not None and np.isfinite(dg.ref_age[r, c]):
                parts.append(f"reference age {int(dg.ref_age[r, c])}")
            t = int(dg.targets[r, c])
            if t >= 0 and dg.codes[r, c] == RECYCLED:
                parts.append(f"→ merged into recycled token {t}")
            elif t >= 0:
                parts.append(f"→ decoder token {t}" + (f" (run of {runs[t]} frames)" if t in runs else ""))
            if mask is not None:
                parts.append("moving (truth)" if mask[r, c] else "still (truth)")
            text[r, c] = "<br>".join(parts)
    return text


def _motion_title(mask: np.ndarray, codes: np.ndarray) -> str:
    computed = codes == RECOMPUTED
    moving = int(mask.sum())
    still = mask.size - moving
    rec = f"{(computed & mask).sum() / moving:.0%} of {moving} moving patches recomputed" if moving else "nothing moves"
    reuse = f"{(~computed & ~mask).sum() / still:.0%} of {still} still patches reused" if still else ""
    return " · ".join(x for x in (rec, reuse) if x)


def patch_overlay(frame: np.ndarray, trace: pl.DataFrame, frame_index: int, view: str = "decision",
                  motion_mask: np.ndarray | None = None, grid: int | None = None, site: str | None = None,
                  title: str | None = None, height: int = 520) -> go.Figure:
    """Figure of `frame` with the patch grid of `trace` at `frame_index` (see the module docstring)."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, not {view!r}")
    img = to_rgb_image(frame)
    h, w = img.shape[:2]
    dg = decision_grid(trace, frame_index, grid, site)
    g = dg.codes.shape[0]
    p = w / g
    uri, scale = image_data_uri(img)
    centers = (np.arange(g) + 0.5) * p
    fig = go.Figure(go.Image(source=uri, x0=0, y0=0, dx=1 / scale, dy=1 / scale, name="frame", hoverinfo="skip"))
    mask = None
    if motion_mask is not None:
        mask = np.asarray(motion_mask)
        mask = (mask[frame_index] if mask.ndim == 3 else mask).astype(bool)
        if mask.shape != (g, g):
            raise ValueError(f"motion mask {mask.shape} does not match the {g}×{g} patch grid")
    runs = _run_lengths(trace, dg.source) if (dg.targets >= 0).any() else {}
    hover = _hover(dg, runs, mask)
    common = dict(x=centers, y=centers, text=hover, hovertemplate="%{text}<extra></extra>", xgap=0, ygap=0)
    outline_key = outline_draw = None
    if view == "decision":
        present = sorted(set(np.unique(dg.codes).tolist()))
        scale_ = [[i / 5, DECISION_COLORS.get(DECISION_NAMES.get(i, ""), "#000")] for i in range(6)]
        fig.add_trace(go.Heatmap(z=dg.codes, zmin=0, zmax=5, colorscale=scale_, opacity=0.45, showscale=False,
                                 name="decision", **common))
        for code in present:
            nm = DECISION_NAMES.get(code, str(code))
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"{nm} ({int((dg.codes == code).sum())})",
                                     marker=dict(symbol="square", size=12, color=DECISION_COLORS.get(nm, "#000"))))
        outline_key, outline_draw = _fused_keys(dg.codes, dg.targets), (dg.codes == FUSED) | (dg.codes == RECYCLED)
        counts = " · ".join(f"{int((dg.codes == DECISIONS[n]).sum())} {n}" for n in DECISION_COLORS
                            if (dg.codes == DECISIONS[n]).any())
        auto = f"frame {frame_index} · {counts} ({dg.source})"
    elif view == "change_score":
        if dg.score is None or not np.isfinite(dg.score).any():
            auto = f"frame {frame_index} · no change scores in this run ({dg.source})"
        else:
            fig.add_trace(go.Heatmap(z=dg.score, colorscale="Viridis", opacity=0.6, name="change score",
                                     colorbar=dict(title=dict(text="score"), thickness=12), **common))
            auto = f"frame {frame_index} · change score (max {np.nanmax(dg.score):.3g}) · recomputed outlined"
        outline_key, outline_draw = (dg.codes == RECOMPUTED).astype(np.int64), dg.codes == RECOMPUTED
    else:
        if mask is None:
            auto = f"frame {frame_index} · no ground-truth motion mask for this input"
        else:
            fig.add_trace(go.Heatmap(z=mask.astype(float), zmin=0, zmax=1, colorscale=[[0, "rgba(0,0,0,0)"],
                                     [1, "#ffd400"]], opacity=0.55, showscale=False, name="motion (truth)", **common))
            auto = f"frame {frame_index} · truth vs gate: {_motion_title(mask, dg.codes)}"
        outline_key, outline_draw = (dg.codes == RECOMPUTED).astype(np.int64), dg.codes == RECOMPUTED
    if dg.keyframe or dg.scene_cut:
        auto += " · " + ("scene cut" if dg.scene_cut else "keyframe")
    lines = np.arange(g + 1) * p  # the patch grid
    gx = sum(([x, x, None] for x in lines), []) + sum(([0, w, None] for _ in lines), [])
    gy = sum(([0, h, None] for _ in lines), []) + sum(([y, y, None] for y in lines), [])
    fig.add_trace(go.Scatter(x=gx, y=gy, mode="lines", line=dict(color="rgba(255,255,255,0.35)", width=0.6),
                             hoverinfo="skip", showlegend=False, name="grid"))
    if outline_key is not None and outline_draw.any():
        ox, oy = _edges(outline_key, outline_draw, p)
        color = "#ffffff" if view == "decision" else DECISION_COLORS["recomputed"]
        label = ("recycled clusters" if (dg.codes == RECYCLED).any() else "fused groups") if view == "decision" \
            else "recomputed"
        fig.add_trace(go.Scatter(x=ox, y=oy, mode="lines", line=dict(color=color, width=2.5), hoverinfo="skip",
                                 name=f"outline: {label}", showlegend=True))
    fig.update_layout(**base_layout(title or auto, height))
    fig.update_xaxes(range=[0, w], visible=False, constrain="domain")
    fig.update_yaxes(range=[h, 0], visible=False, scaleanchor="x", scaleratio=1, constrain="domain")
    return fig
