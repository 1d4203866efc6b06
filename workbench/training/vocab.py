"""The reference model's closed vocabulary: every word ShapesWorld and the gesture analog can produce.

    >>> v = build_vocabulary()
    >>> "circle" in v and "clapping" in v
    True
"""
from __future__ import annotations


def build_vocabulary() -> tuple[str, ...]:
    """Sorted words of both grammars (captions, questions, answers, prompts)."""
    from workbench.data import gestures, shapesworld
    return tuple(sorted(shapesworld.vocabulary() | gestures.gesture_vocabulary()))
