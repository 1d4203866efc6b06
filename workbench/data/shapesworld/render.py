"""Render a ShapesWorld `Scene` to RGB frames and per-patch ground-truth motion masks.

Everything is analytic (signed distance fields evaluated at pixel centres), so camera shake is a shift of the
sampling grid and frames can be rendered at any fractional time (the event simulator uses that).

    >>> from workbench.data.shapesworld.scene import sample_scene
    >>> frames, mask = render_scene(sample_scene(3))
    >>> frames.shape, mask.shape, frames.dtype
    ((16, 3, 112, 112), (16, 14, 14), dtype('float32'))
"""
from __future__ import annotations

import numpy as np

from workbench.data.shapesworld.scene import (BACKGROUND_COLORS, COLORS, SIZES, ObjectSpec, Scene, pose,
                                              scene_rng)

MASK_PIXEL_DELTA = 0.15  # an object-layer pixel counts as changed above this max-channel difference
MASK_MIN_PIXELS = 3  # a patch is "moving" when at least this many of its 64 pixels changed


def _sdf_unit(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (in units of the object radius) to a unit-size shape; negative inside."""
    if shape == "circle":
        return np.hypot(u, v) - 1.0
    if shape == "ring":
        return np.abs(np.hypot(u, v) - 0.72) - 0.28
    if shape == "square":
        return _box(u, v, 0.82, 0.82)
    if shape == "diamond":
        return (np.abs(u) + np.abs(v) - 1.05) / np.sqrt(2.0)
    if shape == "cross":
        return np.minimum(_box(u, v, 0.95, 0.32), _box(u, v, 0.32, 0.95))
    if shape == "triangle":  # equilateral, circumradius 1.1, pointing up (−v)
        d = -v
        for a in (np.pi / 6, 5 * np.pi / 6):
            d = np.maximum(d, u * np.cos(a) + v * np.sin(a))
        return d - 0.55
    if shape == "star":  # five points, outer radius 1.1, inner 0.48
        r, th = np.hypot(u, v), np.arctan2(u, -v)
        k = (th / (2 * np.pi / 5)) % 1.0
        tri = np.abs(2.0 * k - 1.0)  # 1 at a point, 0 between
        return (r - (0.48 + 0.62 * tri)) * 0.75
    raise ValueError(f"unknown shape {shape!r}")


def _box(u, v, bx, by):
    qx, qy = np.abs(u) - bx, np.abs(v) - by
    return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)


def _texture(texture: str, lu: np.ndarray, lv: np.ndarray, phase: float) -> np.ndarray:
    """Brightness multiplier of the object's surface pattern, in local (rotating) pixel coordinates."""
    if texture == "striped":
        return np.where(np.sin(2 * np.pi * lu / 5.0 + phase) > 0, 1.0, 0.42)
    if texture == "dotted":
        du, dv = (lu + phase) % 5.0 - 2.5, (lv + phase) % 5.0 - 2.5
        return np.where(du * du + dv * dv < 1.8, 0.38, 1.0)
    if texture == "checkered":
        return np.where((np.floor((lu + phase) / 4.0) + np.floor(lv / 4.0)) % 2 == 0, 1.0, 0.48)
    return np.ones_like(lu)


def draw_object(obj: ObjectSpec, t: float, xs: np.ndarray, ys: np.ndarray, image: int = 112):
    """Coverage alpha (H, W) and premultiplied colour (3, H, W) of one object at time t on world coordinates."""
    cx, cy, ang, scale = pose(obj, t, image)
    radius = SIZES[obj.size] * scale
    h, w = ys.shape[0], xs.shape[0]
    alpha = np.zeros((h, w), np.float32)
    color = np.zeros((3, h, w), np.float32)
    ext = radius * 1.3 + 2.0
    # only evaluate inside the bounding box (xs / ys are sorted pixel-centre coordinates)
    j0, j1 = np.searchsorted(xs, cx - ext), np.searchsorted(xs, cx + ext)
    i0, i1 = np.searchsorted(ys, cy - ext), np.searchsorted(ys, cy + ext)
    if j1 <= j0 or i1 <= i0:
        return alpha, color
    gx, gy = np.meshgrid(xs[j0:j1] - cx, ys[i0:i1] - cy)  # (h', w') offsets from the centre
    c, s = np.cos(-ang), np.sin(-ang)
    lu, lv = c * gx - s * gy, s * gx + c * gy  # rotate into the object's frame
    sdf = _sdf_unit(obj.shape, lu / radius, lv / radius) * radius
    a = np.clip(0.5 - sdf, 0.0, 1.0).astype(np.float32)
    shade = _texture(obj.texture, lu, lv, obj.tex_phase).astype(np.float32)
    alpha[i0:i1, j0:j1] = a
    color[:, i0:i1, j0:j1] = np.asarray(COLORS[obj.color], np.float32)[:, None, None] * (shade * a)[None]
    return alpha, color


def _background(scene: Scene, xs: np.ndarray, ys: np.ndarray, rng: np.random.Generator, image: int) -> np.ndarray:
    base = np.asarray(BACKGROUND_COLORS[scene.bg_color], np.float32)[:, None, None]
    gx, gy = np.meshgrid(xs, ys)
    if scene.background == "gradient":
        d = (np.cos(scene.bg_angle) * (gx - image / 2) + np.sin(scene.bg_angle) * (gy - image / 2)) / image + 0.5
        return base + 0.30 * np.clip(d, 0, 1)[None].astype(np.float32)
    if scene.background == "textured":
        prng = np.random.default_rng(scene.bg_pattern_seed)
        pat = np.zeros_like(gx)
        for _ in range(3):
            a, f, ph = prng.uniform(0, np.pi), prng.uniform(0.15, 0.45), prng.uniform(0, 2 * np.pi)
            pat += np.sin(f * (np.cos(a) * gx + np.sin(a) * gy) + ph)
        return base + 0.07 * (pat / 3.0 + 1.0)[None].astype(np.float32)
    if scene.background == "noisy":
        return base + rng.normal(0.0, 0.045, (3, len(ys), len(xs))).astype(np.float32)
    return np.broadcast_to(base, (3, len(ys), len(xs))).astype(np.float32)


def _composite(scene: Scene, t: float, xs, ys, image) -> tuple[np.ndarray, np.ndarray]:
    """Objects only, over nothing: (premultiplied colour (3,H,W), coverage (H,W)); later objects on top."""
    col = np.zeros((3, len(ys), len(xs)), np.float32)
    cov = np.zeros((len(ys), len(xs)), np.float32)
    for obj in scene.objects:
        a, c = draw_object(obj, t, xs, ys, image)
        col = col * (1.0 - a)[None] + c
        cov = cov * (1.0 - a) + a
    return col, cov


def camera_offsets(scene: Scene, times: np.ndarray) -> np.ndarray:
    """Per-frame camera shake offsets (dx, dy) in pixels, (N, 2); zeros when the scene has no shake."""
    if scene.shake <= 0:
        return np.zeros((len(times), 2))
    rng = scene_rng(scene.seed, stream=1)
    return np.round(rng.uniform(-scene.shake, scene.shake, (len(times), 2)))


def render_scene(scene: Scene, times: np.ndarray | None = None, image: int = 112, patch: int = 8,
                 with_mask: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Frames (N, 3, image, image) float32 in [0, 1] at frame times `times` (default 0..T-1), and the
    ground-truth motion mask (N, image/patch, image/patch) bool.

    mask[t] marks patches where the objects-only layer changed between times[t-1] and times[t] (same camera
    offset for both, so shake and flicker are not "motion"); mask[0] is all False (no predecessor).
    """
    times = np.arange(scene.num_frames, dtype=np.float64) if times is None else np.asarray(times, np.float64)
    offsets = camera_offsets(scene, times)
    noise_rng = scene_rng(scene.seed, stream=2)
    flick_rng = scene_rng(scene.seed, stream=3)
    f_freq, f_phase = flick_rng.uniform(0.08, 0.35), flick_rng.uniform(0, 2 * np.pi)
    centres = np.arange(image, dtype=np.float64) + 0.5
    grid = image // patch
    frames = np.empty((len(times), 3, image, image), np.float32)
    mask = np.zeros((len(times), grid, grid), bool) if with_mask else None
    for k, t in enumerate(times):
        xs, ys = centres + offsets[k, 0], centres + offsets[k, 1]
        col, cov = _composite(scene, t, xs, ys, image)
        img = _background(scene, xs, ys, noise_rng, image) * (1.0 - cov)[None] + col
        if scene.flicker > 0:
            img = img * (1.0 + scene.flicker * np.sin(2 * np.pi * f_freq * t + f_phase))
        frames[k] = np.clip(img, 0.0, 1.0)
        if with_mask and k > 0 and any(pose(o, t) != pose(o, times[k - 1]) for o in scene.objects):
            prev, _ = _composite(scene, times[k - 1], xs, ys, image)
            changed = np.abs(col - prev).max(0) > MASK_PIXEL_DELTA  # (H, W)
            per_patch = changed.reshape(grid, patch, grid, patch).sum((1, 3))  # (gh, gw)
            mask[k] = per_patch >= MASK_MIN_PIXELS
    return frames, mask


def object_patch_masks(scene: Scene, times: np.ndarray | None = None, image: int = 112, patch: int = 8,
                       min_pixels: int = 8) -> np.ndarray:
    """Where each object is: (n_objects, N, image/patch, image/patch) bool, True where at least `min_pixels`
    of the patch's pixels are mostly covered (alpha > 0.5) by that object (camera shake included; occlusion
    by later objects ignored). For measuring what a pruning method keeps of a queried object.

        >>> from workbench.data.shapesworld.scene import sample_scene
        >>> m = object_patch_masks(sample_scene(3))
        >>> m.shape[1:], bool(m.any())
        ((16, 14, 14), True)
    """
    times = np.arange(scene.num_frames, dtype=np.float64) if times is None else np.asarray(times, np.float64)
    offsets = camera_offsets(scene, times)
    centres = np.arange(image, dtype=np.float64) + 0.5
    grid = image // patch
    out = np.zeros((len(scene.objects), len(times), grid, grid), bool)
    for k, t in enumerate(times):
        xs, ys = centres + offsets[k, 0], centres + offsets[k, 1]
        for i, obj in enumerate(scene.objects):
            alpha, _ = draw_object(obj, t, xs, ys, image)
            out[i, k] = (alpha > 0.5).reshape(grid, patch, grid, patch).sum((1, 3)) >= min_pixels
    return out
