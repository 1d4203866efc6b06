"""Bundled generated samples for the app and the notebooks (all from held-out test seeds).

    >>> sorted(SAMPLES)[:2]
    ['fast motion', 'gesture events']
"""
from __future__ import annotations

from functools import lru_cache

from workbench.data.clip import Clip
from workbench.data.gestures import make_gesture_clip
from workbench.data.shapesworld import make_clip, make_scene_cut_clip, split_seeds


def _first_test_seed(level: str, min_objects: int = 1) -> int:
    for seed in split_seeds("test"):
        c = make_clip(seed)
        if c.meta["motion_level"] == level and len(c.meta["objects"]) >= min_objects and not c.meta["shake"]:
            return seed
    raise LookupError(level)


SAMPLES = {
    "static scene": lambda: make_clip(_first_test_seed("static", 2)),
    "slow motion": lambda: make_clip(_first_test_seed("low")),
    "fast motion": lambda: make_clip(_first_test_seed("high", 2)),
    "scene cut": lambda: make_scene_cut_clip(_first_test_seed("static", 2), _first_test_seed("high", 2)),
    "gesture events": lambda: make_gesture_clip(3),  # test split seed 3: "Right arm cw"
}


@lru_cache(maxsize=None)
def load_sample(name: str) -> Clip:
    """A bundled sample by name (cached; treat the returned clip as read-only)."""
    if name not in SAMPLES:
        raise KeyError(f"unknown sample {name!r}; choose from {sorted(SAMPLES)}")
    return SAMPLES[name]()
