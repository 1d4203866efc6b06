"""Text guidance, measured: for "what color is the <shape>" questions, the share of the visual tokens a
decoder-side method keeps that lie on the queried object's patches (ShapesWorld's ground truth).

A text-guided method (SparseVLM) should keep the asked-about object far above its area share; FastV keeps what
the last token attends to, random keeps the area share on average. Only original visual tokens count (a
recycled token stands for many patches; it is reported apart as `recycled`).

    >>> from workbench.models.registry import create_model
    >>> from workbench.methods.random_prune import RandomPrune, RandomPruneConfig
    >>> df = on_object_shares(create_model("tinyvlm-debug"), [3], {"random": RandomPrune(RandomPruneConfig(keep=0.6))})
    >>> sorted(df.columns)[:4], df["method"].unique().to_list()
    (['area_share', 'depth', 'kept', 'method'], ['random'])
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import polars as pl
import torch

from workbench.data import shapesworld
from workbench.data.shapesworld.render import object_patch_masks
from workbench.eval.qa import question_type
from workbench.models.tokenizer import normalise_text


def queried_object(question: str, scene) -> int | None:
    """Index of the object a "what color is the <shape>" question asks about (None for other questions)."""
    if question_type(question) != "color":
        return None
    shape = normalise_text(question).split()[-1]
    hits = [i for i, o in enumerate(scene.objects) if o.shape == shape]
    return hits[0] if hits else None


def kept_on_object(ids: torch.Tensor, vt, mask: np.ndarray) -> tuple[float, int, int]:
    """(share of the original tokens in `ids` lying on `mask` (T, g, g), original tokens, recycled tokens)."""
    ids = ids[ids >= 0]
    m = vt.num_tokens
    orig = ids[ids < m]
    if orig.numel() == 0:
        return float("nan"), 0, int((ids >= m).sum())
    g = mask.shape[-1]
    t0, t1, patch = vt.t_start[0, orig], vt.t_end[0, orig], vt.patch[0, orig]
    hit = [bool(mask[a: b + 1, p // g, p % g].any()) for a, b, p in zip(t0.tolist(), t1.tolist(), patch.tolist())]
    return float(np.mean(hit)), int(orig.numel()), int((ids >= m).sum())


def area_share(vt, mask: np.ndarray) -> float:
    """Share of all decoder-input visual tokens on the object (what uniform random selection keeps on average)."""
    return kept_on_object(torch.arange(vt.num_tokens), vt, mask)[0]


@torch.no_grad()
def on_object_shares(model, seeds: Iterable[int], methods: dict, encoder=None, num_frames: int = 16) -> pl.DataFrame:
    """One row per (clip, colour question, method, pruning point): share of kept tokens on the queried object,
    the object's area share, tokens kept and recycled. `encoder`: an encoder-side method (default dense)."""
    from workbench.pipeline import Dense
    encoder = encoder or Dense()
    rows = []
    for seed in seeds:
        clip = shapesworld.make_clip(seed, num_frames)
        scene = shapesworld.sample_scene(seed, num_frames)
        masks = object_patch_masks(scene)
        frames = torch.from_numpy(np.ascontiguousarray(clip.frames))[None]
        vt, _ = encoder.visual_tokens(model, frames, clip.modality, clip)
        for q, _ in clip.qa:
            obj = queried_object(q, scene)
            if obj is None:
                continue
            base = area_share(vt, masks[obj])
            for name, method in methods.items():
                stats = model.generate(vt, q, max_new_tokens=1, pruner=method, gesture=False).decoder
                for i, (depth, ids) in enumerate(zip(stats.points, stats.present)):
                    share, kept, rec = kept_on_object(ids[0], vt, masks[obj])
                    rows.append({"seed": seed, "question": q, "objects": len(scene.objects), "method": name,
                                 "point": i, "depth": depth, "share": share, "area_share": base, "kept": kept,
                                 "recycled": rec})
    return pl.DataFrame(rows)


def guidance_summary(df: pl.DataFrame) -> pl.DataFrame:
    """Per method and point: mean on-object share, mean area share, and their ratio (the guidance factor)."""
    return (df.group_by("method", "point", "depth")
              .agg(pl.col("share").mean().alias("on_object"), pl.col("area_share").mean(), pl.len().alias("n"))
              .with_columns((pl.col("on_object") / pl.col("area_share")).alias("vs_area"))
              .sort("method", "point"))


@torch.no_grad()
def kept_overlap(model, clip, method, question_a: str, question_b: str, encoder=None) -> list[float]:
    """Per pruning point: |kept(a) ∩ kept(b)| / |kept(a)| — how much two questions about the same clip keep alike
    (1.0: the same tokens; text guidance at work: lower)."""
    from workbench.pipeline import Dense
    frames = torch.from_numpy(np.ascontiguousarray(clip.frames))[None]
    vt, _ = (encoder or Dense()).visual_tokens(model, frames, clip.modality, clip)
    sets = [[set(p[0][p[0] >= 0].tolist()) for p in
             model.generate(vt, q, max_new_tokens=1, pruner=method, gesture=False).decoder.present]
            for q in (question_a, question_b)]
    return [len(a & b) / max(len(a), 1) for a, b in zip(*sets)]


def object_overlaps(model, seeds: Iterable[int], method, num_frames: int = 16) -> pl.DataFrame:
    """For clips with 2+ objects: kept-set overlap of "what color is the <shape A>" vs "… <shape B>", per point."""
    rows = []
    for seed in seeds:
        scene = shapesworld.sample_scene(seed, num_frames)
        if len(scene.objects) < 2:
            continue
        clip = shapesworld.make_clip(seed, num_frames)
        a, b = (f"what color is the {o.shape}" for o in scene.objects[:2])
        for i, ov in enumerate(kept_overlap(model, clip, method, a, b)):
            rows.append({"seed": seed, "point": i, "overlap": ov})
    return pl.DataFrame(rows, schema={"seed": pl.Int64, "point": pl.Int64, "overlap": pl.Float64})
