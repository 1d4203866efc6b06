"""The synthetic DVS gesture analog: determinism, labels, splits, language, clip contract, semantics, separability."""
from __future__ import annotations

import re
import time
from dataclasses import replace

import numpy as np
import pytest

from workbench.data.clip import Clip
from workbench.data.events import EVENT_DTYPE
from workbench.data.gestures import (CLASS_PHRASES, DATASET_NOTE, GESTURE_CLASSES, GESTURE_SIM, GESTURE_SPLITS,
                                     OTHER_KINDS, gesture_split_seeds, gesture_vocabulary, make_gesture_clip,
                                     render_gesture)
from workbench.errors import InputError

WORDS = re.compile(r"^[a-z]+( [a-z]+)*$")


@pytest.fixture(scope="module")
def one_per_class() -> list[Clip]:
    return [make_gesture_clip(s) for s in range(11)]  # test-split seeds 0..10: labels 0..10


def rotation(frames: np.ndarray, half: str) -> float:
    """Signed angular sweep of the event centroid in one image half; > 0 = clockwise on screen (y points down)."""
    a = frames.sum(1)[:, :, :56] if half == "left" else frames.sum(1)[:, :, 56:]  # (T, 112, 56)
    ys, xs = np.mgrid[0:112, 0:56]
    m = a.sum((1, 2)) + 1e-6
    cx, cy = (a * xs).sum((1, 2)) / m, (a * ys).sum((1, 2)) / m
    dx, dy = cx - cx.mean(), cy - cy.mean()
    return float(np.sum(dx[:-1] * np.diff(cy) - dy[:-1] * np.diff(cx)) / (np.sum(dx ** 2 + dy ** 2) + 1e-6))


def features(frames: np.ndarray) -> np.ndarray:
    """Cheap hand-made features: where the activity is, how much it varies in time, centroid sweep per half."""
    a = frames.sum(1)  # (T, 112, 112)
    t = a.shape[0]
    grid = a.reshape(t, 4, 28, 4, 28).sum((2, 4)).reshape(t, 16)  # (T, 16) activity per 28-px cell
    layout = grid.sum(0) / (grid.sum() + 1e-6)
    temporal = grid.std(0) / (grid.mean(0) + 1e-3) * (layout > 0.01)
    ys, xs = np.mgrid[0:112, 0:112] / 112.0
    halves = []
    for half in (xs < 0.5, xs >= 0.5):
        m = (a * half).sum((1, 2)) + 1e-6
        cx, cy = (a * half * xs).sum((1, 2)) / m, (a * half * ys).sum((1, 2)) / m
        halves.append([rotation(frames, "left" if half[0, 0] else "right"), cx.std(), cy.std(), m.sum() / a.sum()])
    return np.concatenate([layout, temporal, np.ravel(halves)])


def test_dataset_is_labelled_as_an_analog():
    assert "ANALOG" in DATASET_NOTE and "not the real" in DATASET_NOTE
    import workbench.data.gestures as g
    assert "ANALOG" in g.__doc__ and "NOT the real dataset" in g.__doc__
    assert len(GESTURE_CLASSES) == 11
    assert GESTURE_CLASSES[0] == "Hand clapping" and GESTURE_CLASSES[-1] == "Other gestures"


@pytest.mark.parametrize("a, b, r", [((40.3, 64.7), (40.3, 64.7), 10.0), ((20.2, 30.0), (90.6, 75.1), 4.0),
                                     ((64.0, 10.0), (64.0, 110.0), 3.3), ((10.5, 50.0), (100.5, 50.0), 2.5)])
def test_rasteriser_covers_the_capsule_area(a, b, r):
    from workbench.data.gesture_body import _rasterise
    pa, pb = np.array(a, float)[None, None], np.array(b, float)[None, None]  # (N=1, S=1, 2)
    cov = _rasterise(pa, pb, np.array([r]), np.ones((1, 1), bool), 128, supersample=4)[:, 0, 0]  # (u, v)
    area = np.pi * r * r + 2 * r * np.hypot(*(pb - pa).ravel())
    assert cov.min() >= -1e-6 and cov.max() <= 1 + 1e-6 and cov.sum() == pytest.approx(area, rel=0.01)
    u, v = np.mgrid[0:128, 0:128]
    inside = cov[np.hypot(u - a[0], v - a[1]) < r - 1]
    assert inside.size == 0 or inside.min() > 0.999


def test_render_is_deterministic_and_in_range():
    f1, t1 = render_gesture(42, 3)
    f2, t2 = render_gesture(42, 3)
    assert np.array_equal(f1, f2) and np.array_equal(t1, t2)
    assert f1.shape == (201, 128, 128) and f1.dtype == np.float32 and 0.0 <= f1.min() and f1.max() <= 1.0
    assert t1[0] == 0 and t1[-1] == 2_000_000 and np.all(np.diff(t1) == 10_000)
    f3, _ = render_gesture(43, 3)
    assert not np.array_equal(f1, f3)
    small, _ = render_gesture(42, 3, duration_s=0.5, render_hz=50, size=64)
    assert small.shape == (26, 64, 64)


def test_clip_is_deterministic():
    a, b = make_gesture_clip(7), make_gesture_clip(7)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.events, b.events)
    assert a.captions == b.captions and a.qa == b.qa and a.meta == b.meta
    assert np.array_equal(a.motion_mask, b.motion_mask)


@pytest.mark.parametrize("seed", [0, 5, 10, 11, 1000, 1549, 100_000, 123_457])
def test_label_defaults_to_seed_mod_11(seed):
    clip = make_gesture_clip(seed, n_frames=4)
    assert clip.label == seed % 11 and clip.meta["class_name"] == GESTURE_CLASSES[seed % 11]
    assert make_gesture_clip(seed, label=2, n_frames=4).label == 2


def test_every_class_renders_events_and_the_clip_contract(one_per_class):
    for label, clip in enumerate(one_per_class):
        assert clip.label == label and clip.modality == "events"
        assert clip.frames.shape == (16, 2, 112, 112) and clip.frames.dtype == np.float32
        assert 0.0 <= clip.frames.min() and clip.frames.max() <= 1.0 and clip.frames.max() == 1.0
        assert clip.meta["num_events"] > 5000, (label, clip.meta["num_events"])
        assert clip.meta["sensor_size"] == (128, 128) and clip.meta["dataset"] == "synthetic-dvs-gesture (analog)"
        ev = clip.events
        assert ev.dtype == EVENT_DTYPE and len(ev) > 0.7 * clip.meta["num_events"]
        assert ev["x"].max() < 112 and ev["y"].max() < 112 and np.all(np.diff(ev["t"]) >= 0)
        assert clip.frame_times_us.tolist() == list(range(0, 2_000_001, 125_000))
        assert clip.patch_event_rate.shape == (16, 14, 14) and clip.motion_mask.shape == (16, 14, 14)
        assert clip.motion_mask.dtype == bool and 0.0 < clip.motion_mask.mean() < 0.6
        assert clip.sample_id == f"gesture-{label}" and clip.meta["split"] == "test"
        # every bin has events, the body moves all through the window (bins are 125 ms)
        assert np.all(clip.patch_event_rate.sum((1, 2)) > 0)


@pytest.mark.parametrize("label", range(11))
def test_events_fall_where_the_motion_mask_says(label):
    clip = make_gesture_clip(100_000 + label, label=label, sim=replace(GESTURE_SIM, shot_noise_hz=0.0))
    rate, mask = clip.patch_event_rate, clip.motion_mask
    inside = rate[mask].sum() / rate.sum()
    assert inside > 0.9, (clip.label, inside)  # the rest: flicker tipping pixels left at a threshold by a limb


def test_splits_are_disjoint_and_balanced():
    names = list(GESTURE_SPLITS)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ra, rb = GESTURE_SPLITS[a], GESTURE_SPLITS[b]
            assert ra.stop <= rb.start or rb.stop <= ra.start, (a, b)
    for split in ("test", "val"):
        labels = np.array(gesture_split_seeds(split)) % 11
        assert np.all(np.bincount(labels, minlength=11) == 50)
    assert list(gesture_split_seeds("train", 3)) == [100_000, 100_001, 100_002]
    with pytest.raises(InputError):
        gesture_split_seeds("holdout")
    assert make_gesture_clip(1000, n_frames=2).meta["split"] == "val"


def test_captions_and_qa_match_the_class(one_per_class):
    vocab = gesture_vocabulary()
    for label, clip in enumerate(one_per_class):
        assert len(clip.captions) == 5 and len(set(clip.captions)) == 5
        for cap in clip.captions:
            assert WORDS.match(cap), cap
            assert set(cap.split()) <= vocab, cap
        qa = dict(clip.qa)
        assert qa["what gesture is this ?"] == CLASS_PHRASES[label]
        assert qa["is the person clapping ?"] == ("yes" if label == 0 else "no")
        for q, a in clip.qa:
            assert set(q.replace("?", "").split()) <= vocab and WORDS.match(a) and set(a.split()) <= vocab
        text = " ".join(clip.captions)
        name = GESTURE_CLASSES[label].lower()
        side = "right" if name.startswith("right") else "left" if name.startswith("left") else None
        if side:
            assert all(side in c.split() for c in clip.captions)
            assert qa["which hand moves ?"] == f"the {side} hand"
        if label in (3, 5):
            assert "counterclockwise" not in text and "anticlockwise" not in text and "clockwise" in text
            assert qa["in which direction does the arm circle ?"] == "clockwise"
        if label in (4, 6):
            assert all("counterclockwise" in c or "anticlockwise" in c for c in clip.captions)
            assert qa["in which direction does the arm circle ?"] == "counterclockwise"
        if label not in (3, 4, 5, 6):
            assert qa["in which direction does the arm circle ?"] == "it does not circle"
        keywords = {0: "clap", 7: "roll", 8: "drum", 9: "guitar"}
        if label in keywords:
            assert sum(keywords[label] in c for c in clip.captions) >= 4
        if label == 10:
            assert clip.meta["other_kind"] in OTHER_KINDS
            assert not any(w in text for w in ("clap", "wave", "drum", "guitar", "roll", "circle", "clockwise"))


@pytest.mark.parametrize("label, half", [(1, "left"), (2, "right"), (3, "left"), (4, "left"), (5, "right"),
                                         (6, "right")])
def test_performers_right_is_the_images_left_and_circles_turn_the_right_way(label, half):
    for seed in (label, label + 11, label + 22):
        frames = make_gesture_clip(seed).frames
        act = frames.sum((0, 1, 2))  # (112,) activity per column
        left, right = act[:56].sum(), act[56:].sum()
        assert (left > 1.5 * right) if half == "left" else (right > 1.5 * left), (seed, left, right)
        if label in (3, 4, 5, 6):  # cw = clockwise as seen in the image
            r = rotation(frames, half)
            assert (r > 0.1) if label in (3, 5) else (r < -0.1), (seed, r)


def test_other_gestures_mix_several_behaviours():
    kinds = {make_gesture_clip(10 + 11 * i, n_frames=2).meta["other_kind"] for i in range(12)}
    assert len(kinds) >= 4, kinds


def test_bad_arguments_raise_input_errors():
    with pytest.raises(InputError):
        make_gesture_clip(0, label=11)
    with pytest.raises(InputError):
        render_gesture(0, 0, duration_s=0)
    with pytest.raises(InputError):
        make_gesture_clip(0, n_frames=0)


def test_generation_speed_is_reported():
    make_gesture_clip(100_000)
    times = []
    for seed in range(100_001, 100_012):
        t0 = time.perf_counter()
        make_gesture_clip(seed)
        times.append(time.perf_counter() - t0)
    print(f"\nmake_gesture_clip: median {np.median(times) * 1e3:.1f} ms, max {max(times) * 1e3:.1f} ms per clip")


def test_classes_are_separable_from_cheap_features():
    """Nearest-centroid and softmax regression on 40 hand-made features, 12 train / 5 held-out clips per class."""
    def data(seeds):
        clips = [make_gesture_clip(s) for s in seeds]
        return np.stack([features(c.frames) for c in clips]), np.array([c.label for c in clips])

    x_tr, y_tr = data(gesture_split_seeds("train", 12 * 11))
    x_te, y_te = data(gesture_split_seeds("val", 5 * 11))
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    z_tr, z_te = (x_tr - mu) / sd, (x_te - mu) / sd
    centroids = np.stack([z_tr[y_tr == k].mean(0) for k in range(11)])
    acc_nc = float((np.argmin(((z_te[:, None] - centroids[None]) ** 2).sum(-1), 1) == y_te).mean())
    w, b, onehot = np.zeros((z_tr.shape[1], 11)), np.zeros(11), np.eye(11)[y_tr]
    for _ in range(1000):
        logits = z_tr @ w + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) / len(z_tr)
        w -= 0.5 * (z_tr.T @ g + 1e-3 * w)
        b -= 0.5 * g.sum(0)
    acc_lr = float((np.argmax(z_te @ w + b, 1) == y_te).mean())
    print(f"\nseparability: nearest centroid {acc_nc:.3f}, softmax regression {acc_lr:.3f} (chance 0.091)")
    assert acc_nc > 0.5 and acc_lr > 0.5
