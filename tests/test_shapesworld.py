"""ShapesWorld: determinism, splits, and consistency of captions, QA and ground-truth motion masks."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from workbench.data import shapesworld
from workbench.data.shapesworld import SPLITS, make_clip, motion_level, split_seeds
from workbench.data.shapesworld.language import COLOR_WORDS, SHAPE_WORDS, caption, captions, question_answers
from workbench.data.shapesworld.render import render_scene
from workbench.data.shapesworld.scene import DIRECTIONS, ROTATABLE, sample_scene

SEEDS = list(range(0, 60)) + [1_000_123, 1_234_567]


def test_same_seed_same_clip():
    a, b = make_clip(11), make_clip(11)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.motion_mask, b.motion_mask)
    assert a.captions == b.captions and a.qa == b.qa and a.meta == b.meta
    assert not np.array_equal(make_clip(12).frames, a.frames)


def test_splits_are_disjoint_and_test_is_large_enough():
    names = list(SPLITS)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            rx, ry = SPLITS[x], SPLITS[y]
            assert max(rx.start, ry.start) >= min(rx.stop, ry.stop), f"{x} and {y} overlap"
    assert len(split_seeds("test")) >= 500
    assert make_clip(split_seeds("test")[0]).meta["split"] == "test"
    with pytest.raises(ValueError):
        split_seeds("dev")


@pytest.mark.parametrize("seed", SEEDS)
def test_clip_contract(seed):
    c = make_clip(seed)
    assert c.frames.shape == (16, 3, 112, 112) and c.frames.dtype == np.float32
    assert 0.0 <= c.frames.min() and c.frames.max() <= 1.0
    assert c.motion_mask.shape == (16, 14, 14) and c.motion_mask.dtype == bool and not c.motion_mask[0].any()
    assert len(c.captions) == 5 and all(s == s.lower() and s.replace(" ", "").isalpha() for s in c.captions)
    assert c.frame_times_us.shape == (17,) and np.all(np.diff(c.frame_times_us) > 0)
    vocab = shapesworld.vocabulary()
    for text in c.captions + [w for qa in c.qa for w in qa]:
        assert set(text.split()) <= vocab


@pytest.mark.parametrize("seed", SEEDS)
def test_captions_mention_every_object_with_its_attributes_and_motion(seed):
    scene = sample_scene(seed)
    for cap in captions(scene):
        for obj in scene.objects:
            assert any(w in cap for w in COLOR_WORDS.get(obj.color, [obj.color]))
            assert any(w in cap for w in SHAPE_WORDS.get(obj.shape, [obj.shape]))
            if obj.motion in ("left", "right", "up", "down"):
                assert obj.motion in cap
        assert scene.bg_color in cap
    # the canonical caption is the grammar's first choice in every slot
    assert caption(scene) == make_clip(seed).meta["canonical_caption"]


@pytest.mark.parametrize("seed", SEEDS)
def test_question_answers_agree_with_the_scene(seed):
    scene = sample_scene(seed)
    qa = dict(question_answers(scene))
    assert qa["how many objects are there"] == ["one", "two", "three"][len(scene.objects) - 1]
    assert qa["what color is the background"] == scene.bg_color
    by_shape = {o.shape: o for o in scene.objects}
    by_color = {o.color: o for o in scene.objects}
    assert len(by_shape) == len(by_color) == len(scene.objects), "attributes are unique within a scene"
    for q, a in qa.items():
        if q.startswith("what color is the ") and q != "what color is the background":
            assert by_shape[q.removeprefix("what color is the ")].color == a
        if q.startswith("what shape is the "):
            assert by_color[q.split()[4]].shape == a
    moving = [o for o in scene.objects if o.moves]
    assert (qa["what is moving"] == "nothing") == (not moving)


@pytest.mark.parametrize("seed", SEEDS)
def test_motion_mask_marks_only_moving_objects(seed):
    scene = sample_scene(seed)
    _, mask = render_scene(scene)
    if not any(o.moves for o in scene.objects):
        assert not mask.any()
        return
    # the same scene with every object frozen has no motion, whatever the shake, flicker or noise
    still = replace(scene, objects=tuple(replace(o, motion="still") for o in scene.objects))
    _, still_mask = render_scene(still)
    assert not still_mask.any()
    # motion outside each object's window leaves no trace
    for t in range(1, scene.num_frames):
        active = any(o.moves and o.t0 - 1 <= t <= o.t1 + 1 for o in scene.objects)
        if not active:
            assert not mask[t].any()


def test_a_moving_object_produces_mask_where_it_is():
    for seed in range(200):
        scene = sample_scene(seed)
        if len(scene.objects) == 1 and scene.objects[0].motion == "right" and scene.objects[0].timing == "whole":
            break
    else:
        pytest.skip("no single right-moving object in the first 200 seeds")
    frames, mask = render_scene(scene)
    obj = scene.objects[0]
    cols = np.nonzero(mask[1:].any(axis=(0, 1)))[0]
    assert cols.min() * 8 <= obj.x0 + 8 and cols.max() * 8 + 8 >= obj.x0 + obj.amount - 8
    assert mask.sum() > 0 and motion_level(mask) in ("low", "high")


def test_static_flag_and_motion_levels():
    c = make_clip(3, static=True)
    assert c.meta["motion_level"] == "static" and not c.motion_mask.any()
    levels = {make_clip(s).meta["motion_level"] for s in range(40)}
    assert levels == {"static", "low", "high"}


def test_motion_vocabulary_is_used_sensibly():
    seen = set()
    for seed in range(300):
        for o in sample_scene(seed).objects:
            seen.add(o.motion)
            if o.motion == "rotating":
                assert o.shape in ROTATABLE
            if o.motion == "growing":
                assert o.size != "large"
            if o.motion == "bouncing":
                assert o.timing == "whole"
    assert seen >= {"still", "rotating", "growing", "shrinking", "bouncing", *DIRECTIONS}


def test_objects_stay_inside_the_frame():
    for seed in range(100):
        scene = sample_scene(seed)
        for o in scene.objects:
            if o.motion in DIRECTIONS:
                for t in (0, scene.num_frames - 1):
                    x, y, _, _ = shapesworld.scene.pose(o, t)
                    assert 0 <= x <= 112 and 0 <= y <= 112
