"""ShapesWorld language: reference captions (a grammar with paraphrases) and question–answer pairs.

Each reference picks, slot by slot, the canonical phrase with probability `CANONICAL_P` and otherwise one of
its paraphrases, so the five references of a clip agree on content and vary in wording — as COCO-style
evaluation expects. Text is lower case, words and spaces only (no punctuation), so the PTB tokenizer and the
word-level tokenizer see the same tokens.

    >>> from workbench.data.shapesworld.scene import sample_scene
    >>> caps = captions(sample_scene(0))
    >>> len(caps), caps[0] == captions(sample_scene(0))[0]
    (5, True)
"""
from __future__ import annotations

import numpy as np

from workbench.data.shapesworld.scene import DIRECTIONS, ObjectSpec, Scene, scene_rng

CANONICAL_P = 0.5
CAPTION_PROMPT = "describe the clip"

SIZE_WORDS = {"small": ["small", "little", "tiny"], "medium": ["medium", "medium sized", "mid sized"],
              "large": ["large", "big", "huge"]}
COLOR_WORDS = {"purple": ["purple", "violet"]}
SHAPE_WORDS = {"circle": ["circle", "disc"], "square": ["square", "box"], "cross": ["cross", "plus sign"],
               "ring": ["ring", "donut"]}
TEXTURE_PRE = {"striped": ["striped"], "dotted": ["dotted", "spotted"], "checkered": ["checkered", "checked"]}
TEXTURE_POST = {"striped": "with stripes", "dotted": "with dots", "checkered": "with a checkered pattern"}
DIRECTION_WORDS = {"left": "left", "right": "right", "up": "up", "down": "down", "up_left": "up and to the left",
                   "up_right": "up and to the right", "down_left": "down and to the left",
                   "down_right": "down and to the right"}
# (base form, third person) paraphrases per motion; the first is canonical
VERBS = {
    "rotating": [("spin", "spins"), ("rotate", "rotates"), ("spin around", "spins around"), ("turn around", "turns around")],
    "growing": [("grow", "grows"), ("get bigger", "gets bigger"), ("grow larger", "grows larger"), ("expand", "expands")],
    "shrinking": [("shrink", "shrinks"), ("get smaller", "gets smaller"), ("shrink down", "shrinks down")],
    "bouncing": [("bounce around", "bounces around"), ("bounce off the walls", "bounces off the walls"), ("bounce", "bounces")],
}
STILL = ["stays still", "does not move", "sits still", "remains still", "stays in place"]
TIMING = {
    "whole": ["{third}"],
    "starts": ["starts to {base}", "begins to {base}", "waits and then {third}"],
    "stops": ["{third} and then stops", "{third} and stops", "{third} and then comes to a stop"],
    "burst": ["briefly {third}", "{third} for a moment", "{third} for a short time"],
}
BACKGROUND = {
    "plain": ["on a plain {c} background", "on a {c} background", "in front of a plain {c} background"],
    "gradient": ["on a {c} gradient background", "on a background with a {c} gradient", "on a shaded {c} background"],
    "textured": ["on a textured {c} background", "on a patterned {c} background", "on a {c} background with a texture"],
    "noisy": ["on a noisy {c} background", "on a grainy {c} background", "on a {c} background full of noise"],
}
NUMBERS = {1: "one", 2: "two", 3: "three"}


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    """Canonical (first) option with probability CANONICAL_P, else a uniform paraphrase."""
    if len(options) == 1 or rng.random() < CANONICAL_P:
        return options[0]
    return options[1 + int(rng.integers(len(options) - 1))]


def _direction_verbs(motion: str) -> list[tuple[str, str]]:
    d = DIRECTION_WORDS[motion]
    forms = [("move " + d, "moves " + d), ("slide " + d, "slides " + d), ("go " + d, "goes " + d)]
    if motion in ("left", "right"):
        forms.insert(1, ("move to the " + d, "moves to the " + d))
    return forms


def noun_phrase(obj: ObjectSpec, rng: np.random.Generator | None = None) -> str:
    """'a large red striped circle' (canonical when rng is None)."""
    pick = (lambda xs: xs[0]) if rng is None else (lambda xs: _pick(rng, xs))
    size = pick(SIZE_WORDS[obj.size])
    color = pick(COLOR_WORDS.get(obj.color, [obj.color]))
    shape = pick(SHAPE_WORDS.get(obj.shape, [obj.shape]))
    if obj.texture == "solid":
        return f"a {size} {color} {shape}"
    if rng is not None and rng.random() >= CANONICAL_P:
        return f"a {size} {color} {shape} {TEXTURE_POST[obj.texture]}"
    return f"a {size} {color} {pick(TEXTURE_PRE[obj.texture])} {shape}"


def verb_phrase(obj: ObjectSpec, rng: np.random.Generator | None = None) -> str:
    """'moves left and then stops' (canonical when rng is None)."""
    pick = (lambda xs: xs[0]) if rng is None else (lambda xs: _pick(rng, xs))
    if obj.motion == "still":
        return pick(STILL)
    forms = _direction_verbs(obj.motion) if obj.motion in DIRECTIONS else VERBS[obj.motion]
    base, third = forms[0] if rng is None else forms[0 if rng.random() < CANONICAL_P else 1 + int(rng.integers(len(forms) - 1))]
    return pick(TIMING[obj.timing]).format(base=base, third=third)


def caption(scene: Scene, rng: np.random.Generator | None = None) -> str:
    """One caption; canonical wording when rng is None."""
    clauses = [f"{noun_phrase(o, rng)} {verb_phrase(o, rng)}" for o in scene.objects]
    if len(clauses) == 1:
        body = clauses[0]
    else:
        joiner = "while" if (rng is not None and len(clauses) == 2 and rng.random() >= CANONICAL_P) else "and"
        body = f" {joiner} ".join(clauses)
    bg = (BACKGROUND[scene.background][0] if rng is None else _pick(rng, BACKGROUND[scene.background]))
    return f"{body} {bg.format(c=scene.bg_color)}"


def captions(scene: Scene, n: int = 5) -> list[str]:
    """`n` reference captions for a scene, drawn independently from the grammar (deterministic by seed).

    No reference is forced to the canonical wording: a model is scored against paraphrases, as on COCO.
    """
    rng = scene_rng(scene.seed, stream=10)
    return [caption(scene, rng) for _ in range(n)]


def _motion_answer(obj: ObjectSpec) -> str:
    if obj.motion == "still":
        return "it stays still"
    if obj.motion in DIRECTIONS:
        return DIRECTION_WORDS[obj.motion]
    return "it " + VERBS[obj.motion][0][1]


def _name(obj: ObjectSpec) -> str:
    return f"the {obj.color} {obj.shape}"


def question_answers(scene: Scene) -> list[tuple[str, str]]:
    """Question–answer pairs about colour, shape, count, direction and what is moving.

    Objects in a scene have distinct colours and distinct shapes, so every question is unambiguous.
    """
    rng = scene_rng(scene.seed, stream=11)
    objs = scene.objects
    qa = [("how many objects are there", NUMBERS[len(objs)]),
          ("what color is the background", scene.bg_color)]
    o = objs[int(rng.integers(len(objs)))]
    qa.append((f"what color is the {o.shape}", o.color))
    o = objs[int(rng.integers(len(objs)))]
    qa.append((f"what shape is the {o.color} object", o.shape))
    for o in objs:
        qa.append((f"how does {_name(o)} move", _motion_answer(o)))
    moving = [_name(o) for o in objs if o.moves]
    qa.append(("what is moving", " and ".join(moving) if moving else "nothing"))
    return qa


def vocabulary() -> set[str]:
    """Every word this grammar can produce (captions, questions, answers, prompt)."""
    from workbench.data.shapesworld.scene import BACKGROUND_COLORS, COLORS, SHAPES, SIZES, TEXTURES
    text = [CAPTION_PROMPT, "how many objects are there what color is the background shape object how does move",
            "what is moving and nothing it stays still while a the with", *NUMBERS.values(), *STILL,
            *TEXTURE_POST.values(), *DIRECTION_WORDS.values(), *BACKGROUND_COLORS, *COLORS, *SHAPES, *SIZES,
            *TEXTURES]
    for table in (SIZE_WORDS, COLOR_WORDS, SHAPE_WORDS, TEXTURE_PRE, TIMING, BACKGROUND):
        text += [s for v in table.values() for s in v]
    text += [w for forms in VERBS.values() for pair in forms for w in pair]
    text += [w for m in DIRECTIONS for pair in _direction_verbs(m) for w in pair]
    return {w for s in text for w in s.replace("{third}", "").replace("{base}", "").replace("{c}", "").split()}
