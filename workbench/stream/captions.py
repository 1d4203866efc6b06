"""Captions a user can trust: a gesture caption never contradicts the gesture head.

On event input the embedded TinyVLM answers twice: the decoder writes a caption and the gesture head (trained
on the same tokens, 97.5 % on the synthetic analog) names a class. The decoder hardly uses vision for gesture
captions (README, model card), so it can write "someone is waving with the right hand" next to a head that says
"Other gestures". `gesture_caption` reads which class a caption describes (the analog's caption templates,
`data/gestures.py`) and, when that contradicts the head, replaces the caption by the head's class in words;
the decoder's own words are kept for whoever wants them (`Window.decoder_caption`, the CLI's JSON).

    >>> gesture_caption("someone is waving with the right hand", "Other gestures")
    ('a person makes some other gesture', 'someone is waving with the right hand')
    >>> gesture_caption("a person waves the right hand", "Right hand wave")
    ('a person waves the right hand', None)
    >>> caption_class("the performer plays air drums")
    8
"""
from __future__ import annotations

import re

# the gesture analog's class order (TinyVLMConfig.gesture_classes) and one plain sentence per class
HEAD_SENTENCES = ("a person claps their hands", "a person waves the right hand", "a person waves the left hand",
                  "a person circles the right arm clockwise", "a person circles the right arm counterclockwise",
                  "a person circles the left arm clockwise", "a person circles the left arm counterclockwise",
                  "a person rolls the arms", "a person plays air drums", "a person plays air guitar",
                  "a person makes some other gesture")
REAL_FOOTAGE_NOTE = ("the embedded TinyVLM was trained only on the procedural ShapesWorld and a synthetic gesture "
                     "analog: on real footage its captions describe shapes, colours and motion in those terms, not "
                     "the scene; for captions of the scene itself bring your own Hugging Face VLM (--model "
                     "hf:NAME_OR_PATH, or the clip tab's model box; short looks, not stream mode)")

_OTHER = re.compile(r"\b(other|different|random|randomly|fidgets|raises both|raises the arms|lifts both|bends|leans|"
                    r"sways|head|points|lifts the|raises the \w+ arm)\b")


def caption_class(caption: str) -> int | None:
    """The gesture class (index into `HEAD_SENTENCES`) a caption describes, or None when it names none."""
    c = f" {caption.lower()} "
    side = "left" if re.search(r"\bleft\b", c) else "right" if re.search(r"\bright\b", c) else None
    if re.search(r"\b(clap|claps|clapping|applauds)\b", c):
        return 0
    if re.search(r"\b(wave|waves|waving)\b", c):
        return 2 if side == "left" else 1
    if re.search(r"\b(circles|circle|rotates|swings|turns)\b", c) and re.search(r"\barm\b", c):
        ccw = bool(re.search(r"\b(counterclockwise|anticlockwise)\b", c))
        return {("right", False): 3, ("right", True): 4, ("left", False): 5, ("left", True): 6}[(side or "right", ccw)]
    if re.search(r"\b(roll|rolls|rolling)\b", c):
        return 7
    if re.search(r"\b(drums|drumming)\b", c):
        return 8
    if re.search(r"\b(guitar|strums)\b", c):
        return 9
    if _OTHER.search(c):
        return 10
    return None


def gesture_caption(caption: str, gesture: str | None, classes: tuple[str, ...] | None = None) -> tuple[str, str | None]:
    """(caption to show, the decoder's caption when it was replaced else None) for a gesture-head label.

    `classes`: the model's gesture class names (default: DVS128 Gesture's 11, in `HEAD_SENTENCES` order). A
    caption that names no gesture, or the head's own class, is kept as it is.
    """
    if gesture is None:
        return caption, None
    from workbench.data.readers.gesture_labels import DVS_GESTURE_CLASSES
    names = tuple(classes or DVS_GESTURE_CLASSES)
    if gesture not in names or len(names) != len(HEAD_SENTENCES):
        return caption, None
    head = names.index(gesture)
    said = caption_class(caption)
    if said is None or said == head:
        return caption, None
    return HEAD_SENTENCES[head], caption
