"""ShapesWorld scene specs: what is in a clip and how it moves — sampled deterministically from a seed.

A `Scene` is pure data (no pixels): a background, 1–3 objects, each with a motion and a timing, and optional
camera shake / lighting flicker. `render.py` turns it into frames, `language.py` into captions and QA.

    >>> s = sample_scene(7)
    >>> s == sample_scene(7), 1 <= len(s.objects) <= 3
    (True, True)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

WORLD_VERSION = 1  # bump when sampling changes; mixed into every seed so old splits are never silently reused

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "ring")
ROTATABLE = ("square", "triangle", "diamond", "star", "cross")  # a spinning circle or ring shows no change
COLORS = {
    "red": (0.92, 0.16, 0.14), "green": (0.18, 0.80, 0.22), "blue": (0.20, 0.36, 0.98),
    "yellow": (0.97, 0.90, 0.16), "purple": (0.62, 0.22, 0.84), "orange": (1.00, 0.56, 0.10),
    "white": (0.96, 0.96, 0.96), "cyan": (0.10, 0.86, 0.90),
}
SIZES = {"small": 7.0, "medium": 11.0, "large": 15.5}  # radius in pixels on the 112-px frame
TEXTURES = ("solid", "striped", "dotted", "checkered")
BACKGROUND_KINDS = ("plain", "gradient", "textured", "noisy")
BACKGROUND_COLORS = {
    "black": (0.04, 0.04, 0.05), "gray": (0.38, 0.38, 0.40), "dark blue": (0.06, 0.09, 0.32),
    "dark green": (0.05, 0.24, 0.09), "brown": (0.30, 0.18, 0.08),
}
DIRECTIONS = {  # image coordinates: +x right, +y down
    "left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1),
    "up_left": (-1, -1), "up_right": (1, -1), "down_left": (-1, 1), "down_right": (1, 1),
}
MOTIONS = ("still", *DIRECTIONS, "rotating", "growing", "shrinking", "bouncing")
TIMINGS = ("whole", "starts", "stops", "burst")  # burst = still, a short move, still again


@dataclass(frozen=True)
class ObjectSpec:
    shape: str
    color: str
    size: str
    texture: str
    motion: str
    timing: str
    x0: float  # centre at frame 0, pixels
    y0: float
    angle0: float  # radians
    t0: float  # motion window in frame units, [t0, t1]
    t1: float
    amount: float  # px of travel, radians of rotation, final scale factor, or bounce speed px/frame
    vx: float = 0.0  # bounce velocity direction (unit vector) or translation direction
    vy: float = 0.0
    tex_phase: float = 0.0

    @property
    def moves(self) -> bool:
        return self.motion != "still"


@dataclass(frozen=True)
class Scene:
    seed: int
    num_frames: int
    background: str  # kind
    bg_color: str
    bg_angle: float
    bg_pattern_seed: int
    objects: tuple[ObjectSpec, ...]
    shake: float = 0.0  # max camera offset in px (0 = none)
    flicker: float = 0.0  # relative lighting amplitude (0 = none)
    meta: dict = field(default_factory=dict, compare=False)


def scene_rng(seed: int, stream: int = 0) -> np.random.Generator:
    """The generator for one seed (and an independent sub-stream), stable across numpy versions."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([WORLD_VERSION, int(seed), stream])))


def _motion_window(rng: np.random.Generator, timing: str, last: float) -> tuple[float, float]:
    if timing == "whole":
        return 0.0, last
    if timing == "starts":
        return float(rng.uniform(0.3, 0.6) * last), last
    if timing == "stops":
        return 0.0, float(rng.uniform(0.4, 0.7) * last)
    start = float(rng.uniform(0.2, 0.5) * last)  # burst
    return start, start + float(rng.uniform(0.2, 0.35) * last)


def _sample_motion(rng: np.random.Generator, shape: str, size: str, n_objects: int) -> tuple[str, str]:
    p_still = 0.25 if n_objects == 1 else 0.4
    if rng.random() < p_still:
        return "still", "whole"
    kinds = list(DIRECTIONS) + ["rotating", "growing", "shrinking", "bouncing"]
    weights = np.array([1.0] * 8 + [1.2, 1.0, 1.0, 1.0])
    if shape not in ROTATABLE:
        weights[kinds.index("rotating")] = 0.0
    if size == "large":
        weights[kinds.index("growing")] = 0.0
    if size == "small":
        weights[kinds.index("shrinking")] = 0.0
    motion = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    timing = "whole" if motion == "bouncing" else str(rng.choice(TIMINGS, p=[0.35, 0.2, 0.2, 0.25]))
    return motion, timing


def _place(rng: np.random.Generator, motion: str, radius: float, dx: float, dy: float,
           image: int) -> tuple[float, float]:
    """Pick a start centre so that the whole trajectory stays inside the frame."""
    lo, hi = radius + 2.0, image - radius - 2.0
    x_lo, x_hi = max(lo, lo - dx), min(hi, hi - dx)
    y_lo, y_hi = max(lo, lo - dy), min(hi, hi - dy)
    return float(rng.uniform(x_lo, max(x_lo, x_hi))), float(rng.uniform(y_lo, max(y_lo, y_hi)))


def sample_scene(seed: int, num_frames: int = 16, image: int = 112, static: bool | None = None) -> Scene:
    """Sample a scene. `static=True` forces every object still (for static-scene samples)."""
    rng = scene_rng(seed)
    last = float(num_frames - 1)
    n_obj = int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.20]))
    all_static = bool(rng.random() < 0.15) if static is None else static
    shapes = rng.choice(SHAPES, size=n_obj, replace=False)
    colors = rng.choice(list(COLORS), size=n_obj, replace=False)
    sizes = rng.choice(list(SIZES), size=n_obj)
    objects = []
    for shape, color, size in zip(shapes, colors, sizes):
        shape, color, size = str(shape), str(color), str(size)
        radius = SIZES[size]
        texture = str(rng.choice(TEXTURES, p=[0.4, 0.2, 0.2, 0.2]))
        motion, timing = ("still", "whole") if all_static else _sample_motion(rng, shape, size, n_obj)
        t0, t1 = _motion_window(rng, timing, last)
        vx = vy = 0.0
        dx = dy = 0.0
        amount = 0.0
        if motion in DIRECTIONS:
            ux, uy = DIRECTIONS[motion]
            norm = float(np.hypot(ux, uy))
            vx, vy = ux / norm, uy / norm
            amount = float(rng.uniform(18.0, 46.0) if timing == "whole" else rng.uniform(16.0, 34.0))
            dx, dy = vx * amount, vy * amount
        elif motion == "rotating":
            amount = float(rng.uniform(1.6, 4.5) * rng.choice([-1.0, 1.0]))
        elif motion == "growing":
            amount = float(rng.uniform(1.5, 1.9))
            radius *= amount
        elif motion == "shrinking":
            amount = float(rng.uniform(0.45, 0.6))
        elif motion == "bouncing":
            amount = float(rng.uniform(4.5, 7.0))
            a = float(rng.uniform(0.25, 1.3)) + float(rng.integers(0, 4)) * np.pi / 2
            vx, vy = float(np.cos(a)), float(np.sin(a))
        x0, y0 = _place(rng, motion, radius, dx, dy, image)
        objects.append(ObjectSpec(shape, color, size, texture, motion, timing, x0, y0,
                                  float(rng.uniform(0, 2 * np.pi)), t0, t1, amount, vx, vy,
                                  float(rng.uniform(0, 2 * np.pi))))
    # canonical order = drawing order = caption order: larger first, then left to right
    order = {"large": 0, "medium": 1, "small": 2}
    objects.sort(key=lambda o: (order[o.size], o.x0))
    background = str(rng.choice(BACKGROUND_KINDS))
    bg_color = str(rng.choice(list(BACKGROUND_COLORS)))
    shake = float(rng.uniform(1.0, 3.0)) if rng.random() < 0.15 else 0.0
    flicker = float(rng.uniform(0.05, 0.15)) if rng.random() < 0.15 else 0.0
    return Scene(int(seed), num_frames, background, bg_color, float(rng.uniform(0, 2 * np.pi)),
                 int(rng.integers(0, 2**31)), tuple(objects), shake, flicker)


def pose(obj: ObjectSpec, t: float, image: int = 112) -> tuple[float, float, float, float]:
    """Centre x, y, rotation angle and scale of an object at (fractional) frame time t."""
    span = max(obj.t1 - obj.t0, 1e-6)
    prog = float(np.clip((t - obj.t0) / span, 0.0, 1.0))
    x, y, ang, scale = obj.x0, obj.y0, obj.angle0, 1.0
    if obj.motion in DIRECTIONS:
        x, y = obj.x0 + obj.vx * obj.amount * prog, obj.y0 + obj.vy * obj.amount * prog
    elif obj.motion == "rotating":
        ang = obj.angle0 + obj.amount * prog
    elif obj.motion == "growing" or obj.motion == "shrinking":
        scale = 1.0 + (obj.amount - 1.0) * prog
    elif obj.motion == "bouncing":
        r = SIZES[obj.size]
        lo, hi = r + 1.0, image - r - 1.0
        travel = obj.amount * prog * span
        x = _reflect(obj.x0 + obj.vx * travel, lo, hi)
        y = _reflect(obj.y0 + obj.vy * travel, lo, hi)
    return x, y, ang, scale


def _reflect(v: float, lo: float, hi: float) -> float:
    """Fold a coordinate into [lo, hi] like a ball bouncing off two walls."""
    width = hi - lo
    u = (v - lo) % (2 * width)
    return lo + (u if u <= width else 2 * width - u)
