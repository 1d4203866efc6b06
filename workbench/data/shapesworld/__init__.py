"""ShapesWorld — the procedural captioned-clip world the reference TinyVLM is trained and judged on.

Deterministic by seed; splits are disjoint seed ranges. Each clip: T frames at 112×112 (a 14×14 patch grid,
196 tokens per frame), five reference captions, question–answer pairs, and a per-frame ground-truth motion
mask per patch (so an STTF reuse mask can be scored against the truth).

    >>> clip = make_clip(5)
    >>> clip.frames.shape, len(clip.captions), clip.motion_mask.shape
    ((16, 3, 112, 112), 5, (16, 14, 14))
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np

from workbench.data.clip import Clip
from workbench.data.shapesworld.language import CAPTION_PROMPT, caption, captions, question_answers, vocabulary
from workbench.data.shapesworld.render import render_scene
from workbench.data.shapesworld.scene import (BACKGROUND_COLORS, BACKGROUND_KINDS, COLORS, MOTIONS, SHAPES, SIZES,
                                              TEXTURES, TIMINGS, WORLD_VERSION, Scene, sample_scene)

__all__ = ["CONCEPTS", "concept_vector", "SPLITS", "CAPTION_PROMPT", "make_clip", "split_seeds", "motion_level", "sample_scene", "render_scene",
           "captions", "caption", "question_answers", "vocabulary", "Scene"]

SPLITS = {"test": range(0, 500), "val": range(1000, 1500), "train": range(1_000_000, 2**31 - 1)}
FPS = 8.0
LOW_MOTION_MAX = 0.04  # mean fraction of moving patches per frame below which a clip counts as low-motion


def split_seeds(split: str, n: int | None = None) -> range:
    """Seeds of a split (`test`, `val`, `train`), optionally the first n."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, not {split!r}")
    r = SPLITS[split]
    return r if n is None else r[: min(n, len(r))]


def motion_level(mask: np.ndarray) -> str:
    """'static' (nothing moves), 'low' or 'high' from the ground-truth motion mask (T, g, g)."""
    frac = float(mask[1:].mean()) if len(mask) > 1 else 0.0
    if frac == 0.0:
        return "static"
    return "low" if frac < LOW_MOTION_MAX else "high"


CONCEPTS = ([f"color:{c}" for c in COLORS] + [f"shape:{x}" for x in SHAPES] + [f"size:{x}" for x in SIZES]
            + [f"texture:{x}" for x in TEXTURES] + [f"motion:{x}" for x in MOTIONS] + [f"timing:{x}" for x in TIMINGS]
            + [f"bg:{x}" for x in BACKGROUND_COLORS] + [f"bgkind:{x}" for x in BACKGROUND_KINDS]
            + [f"count:{n}" for n in (1, 2, 3)])


def concept_vector(meta: dict) -> np.ndarray:
    """Multi-hot (len(CONCEPTS),) of what a clip contains, from its metadata (for auxiliary supervision)."""
    on = {f"bg:{meta['bg_color']}", f"bgkind:{meta['background']}", f"count:{len(meta['objects'])}"}
    for o in meta["objects"]:
        on |= {f"color:{o['color']}", f"shape:{o['shape']}", f"size:{o['size']}", f"texture:{o['texture']}",
               f"motion:{o['motion']}"}
        if o["motion"] != "still":
            on.add(f"timing:{o['timing']}")
    return np.array([c in on for c in CONCEPTS], np.float32)


def make_clip(seed: int, num_frames: int = 16, static: bool | None = None) -> Clip:
    """Render the clip of one seed with its captions, QA pairs and ground-truth motion mask."""
    scene = sample_scene(seed, num_frames, static=static)
    frames, mask = render_scene(scene)
    split = next((name for name, r in SPLITS.items() if seed in r), "other")
    meta = {"dataset": "shapesworld", "world_version": WORLD_VERSION, "seed": int(seed), "split": split,
            "motion_level": motion_level(mask), "moving_fraction": float(mask[1:].mean()),
            "background": scene.background, "bg_color": scene.bg_color, "shake": scene.shake,
            "flicker": scene.flicker, "objects": [asdict(o) for o in scene.objects],
            "canonical_caption": caption(scene)}
    edges = (np.arange(num_frames + 1) * (1e6 / FPS)).astype(np.int64)
    return Clip(frames=frames, modality="rgb", sample_id=f"shapes-{seed}", fps=FPS, frame_times_us=edges,
                motion_mask=mask, captions=captions(scene), qa=question_answers(scene), meta=meta)


def make_scene_cut_clip(seed_a: int, seed_b: int, cut: int = 8, num_frames: int = 16) -> Clip:
    """Frames [0, cut) from scene a, [cut, T) from scene b: a hard scene cut for keyframe logic.

    The ground-truth mask marks every patch at the cut; the captions are scene b's (what the clip ends on).
    """
    a, b = make_clip(seed_a, num_frames), make_clip(seed_b, num_frames)
    frames = np.concatenate([a.frames[:cut], b.frames[cut:]])
    mask = np.concatenate([a.motion_mask[:cut], b.motion_mask[cut:]])
    mask[cut] = True
    meta = {**b.meta, "scene_cut_at": cut, "first_scene_seed": seed_a, "motion_level": "high"}
    return Clip(frames=frames, modality="rgb", sample_id=f"shapes-cut-{seed_a}-{seed_b}", fps=FPS,
                frame_times_us=b.frame_times_us, motion_mask=mask, captions=b.captions, qa=b.qa, meta=meta)
