"""Synthetic DVS gestures — a procedurally rendered ANALOG of IBM's DVS128 Gesture, NOT the real dataset.

Same 11 class names (tonic's order), same 128×128 sensor geometry, but every sample is a rendered stick-figure
silhouette (head, torso, upper arms, forearms, hands) whose events come from `workbench.data.eventsim`. Use it
to train and test the pipeline on the fly; numbers measured here are not DVS128 Gesture results.

Conventions: image x grows to the right, y downwards. The performer faces the camera, so the performer's
RIGHT arm appears on the image's LEFT. "cw"/"ccw" are as seen in the image. Each seed fixes appearance
(position, scale, limb sizes, background brightness and texture, contrast polarity, flicker) and timing
(speed, phase, amplitude, tempo wobble, body sway); splits are disjoint seed ranges.

    >>> clip = make_gesture_clip(3)
    >>> clip.label, clip.meta["class_name"], clip.frames.shape, clip.motion_mask.shape
    (3, 'Right arm cw', (16, 2, 112, 112), (16, 14, 14))
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from workbench.data.clip import IMAGE_SIZE, PATCH_SIZE, Clip
from workbench.data.eventsim import EventSimConfig, simulate_events
from workbench.data.events import EventStream
from workbench.data.gesture_body import GESTURE_VERSION, OTHER_KINDS, SENSOR, _render  # noqa: F401 (re-exported)
from workbench.data.readers.gesture_labels import DVS_GESTURE_CLASSES
from workbench.data.load import EventWindow, events_to_clip
from workbench.errors import InputError

DATASET_NOTE = ("Synthetic DVS gestures: a procedurally rendered ANALOG of IBM's DVS128 Gesture, not the real "
                "dataset. Same 11 class names and 128x128 sensor geometry; the events are simulated from rendered "
                "stick-figure silhouettes, so scores on it are not DVS128 Gesture results.")
GESTURE_CLASSES = DVS_GESTURE_CLASSES  # the real dataset's names and order (tonic's), defined once
GESTURE_SPLITS = {"test": range(0, 550), "val": range(1000, 1550), "train": range(100_000, 10**9)}
GESTURE_SIM = EventSimConfig(threshold=0.2, threshold_sigma=0.03, refractory_us=500, shot_noise_hz=0.1,
                             reference_jitter=0.5)
MOTION_REL_CHANGE = 0.1  # a patch "moved" in a bin when some pixel's intensity range in it exceeds 10 %


def gesture_split_seeds(split: str, n: int | None = None) -> range:
    """Seeds of a split (`test`, `val`, `train`), optionally the first n. Test and val hold 50 per class.

    >>> len(gesture_split_seeds("test")), gesture_split_seeds("val", 3)
    (550, range(1000, 1003))
    """
    if split not in GESTURE_SPLITS:
        raise InputError("split", f"must be one of {sorted(GESTURE_SPLITS)}, not {split!r}")
    r = GESTURE_SPLITS[split]
    return r if n is None else r[: min(int(n), len(r))]


def render_gesture(seed: int, label: int, duration_s: float = 2.0, render_hz: float = 100,
                   size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Intensity frames (N, size, size) float32 in [0, 1] and their times (N,) int64 µs, N = duration·hz + 1.

    >>> frames, times = render_gesture(0, 0)
    >>> frames.shape, int(times[-1])
    ((201, 128, 128), 2000000)
    """
    frames, times, _ = _render(seed, label, duration_s, render_hz, size)
    return frames, times


def gesture_motion_mask(frames: np.ndarray, times_us: np.ndarray, edges_us: np.ndarray, grid: int = IMAGE_SIZE,
                        patch: int = PATCH_SIZE, rel_change: float = MOTION_REL_CHANGE,
                        gain: np.ndarray | None = None) -> np.ndarray:
    """Ground-truth "the scene changed here" per bin and patch: (T, grid/patch, grid/patch) bool.

    Bin t spans [edges[t], edges[t+1]]; it uses the rendered frames from the last one at or before its start
    to the first one at or after its end (exactly the frame pairs whose events can land in the bin). A pixel
    changed when its intensity range over those frames exceeds `rel_change` × (its minimum + 0.02); `gain`
    (N,), the global illumination flicker, is divided out first, so only the scene itself counts. The square
    sensor is mapped onto the model grid like `fit_events_to_grid(..., fit="crop")`.

    >>> f = np.zeros((3, 128, 128), np.float32); f[2, :16, :16] = 1.0
    >>> m = gesture_motion_mask(f, np.array([0, 1000, 2000]), np.array([0, 1000, 2000]))
    >>> m.shape, bool(m[0].any()), bool(m[1, 0, 0]), int(m[1].sum())
    ((2, 14, 14), False, True, 4)
    """
    n, h, w = frames.shape
    t_count = len(edges_us) - 1
    start = np.clip(np.searchsorted(times_us, edges_us[:-1], "right") - 1, 0, n - 1)
    end = np.clip(np.searchsorted(times_us, edges_us[1:], "left"), 0, n - 1)
    changed = np.zeros((t_count, h, w), np.uint8)
    for k in range(t_count):
        seg = frames[start[k]:end[k] + 1]  # (F, H, W)
        if gain is not None:
            seg = seg / gain[start[k]:end[k] + 1, None, None]
        lo = seg.min(0)
        changed[k] = (seg.max(0) - lo) > rel_change * (lo + 0.02)
    side = min(h, w)  # centre-crop the square, then scale to the grid (as fit_events_to_grid does)
    y0, x0 = (h - side) // 2, (w - side) // 2
    cell = (np.arange(side) * grid // side) // patch  # sensor pixel → patch index
    starts = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1]])
    sub = changed[:, y0:y0 + side, x0:x0 + side]
    return np.maximum.reduceat(np.maximum.reduceat(sub, starts, axis=1), starts, axis=2).astype(bool)


# ---------------------------------------------------------------- language

SUBJECTS = ("a person", "someone", "the person", "a performer", "the performer")
CLASS_PHRASES = ("hand clapping", "right hand wave", "left hand wave", "right arm clockwise",
                 "right arm counterclockwise", "left arm clockwise", "left arm counterclockwise", "arm roll",
                 "air drums", "air guitar", "other gesture")
_TURN_WORDS = {"clockwise": ("clockwise",), "counterclockwise": ("counterclockwise", "anticlockwise")}
_TEMPLATES = {
    "clap": ("{s} claps their hands", "{s} is clapping", "{s} claps both hands together",
             "{s} is clapping hands in front of the chest", "{s} applauds", "{s} claps"),
    "wave": ("{s} waves the {side} hand", "{s} is waving with the {side} hand", "{s} waves hello with the {side} hand",
             "{s} raises the {side} hand and waves", "{s} waves the {side} hand from side to side"),
    "circle": ("{s} circles the {side} arm {turn}", "{s} rotates the {side} arm {turn}",
               "{s} swings the {side} arm around {turn}", "{s} turns the {side} arm in {turn} circles",
               "{s} makes {turn} circles with the {side} arm"),
    "roll": ("{s} rolls the arms", "{s} rolls both forearms around each other",
             "{s} is rolling the arms in front of the chest",
             "{s} makes a rolling motion with both arms", "{s} rolls the hands around each other"),
    "drums": ("{s} plays air drums", "{s} is drumming in the air", "{s} pretends to play the drums",
              "{s} beats imaginary drums with both hands", "{s} plays the air drums"),
    "guitar": ("{s} plays air guitar", "{s} is playing an air guitar", "{s} pretends to play the guitar",
               "{s} strums an imaginary guitar", "{s} strums an air guitar with the {side} hand"),
    "other": ("{s} makes some other gesture", "{s} makes a different gesture", "{s} does some other movement"),
    "raise": ("{s} raises both arms", "{s} lifts both arms up and down", "{s} raises the arms to the sides"),
    "bend": ("{s} bends the body from side to side", "{s} leans from side to side", "{s} sways the upper body"),
    "head": ("{s} puts both hands on the head", "{s} raises the hands to the head",
             "{s} touches the head with both hands"),
    "jitter": ("{s} moves the arms around randomly", "{s} fidgets with the arms",
               "{s} makes small random arm movements"),
    "point": ("{s} raises the {side} arm to the side", "{s} points with the {side} arm", "{s} lifts the {side} arm"),
}
QUESTIONS = ("what gesture is this ?", "which hand moves ?", "in which direction does the arm circle ?",
             "is the person clapping ?")
_KIND = {0: "clap", 1: "wave", 2: "wave", 3: "circle", 4: "circle", 5: "circle", 6: "circle", 7: "roll", 8: "drums",
         9: "guitar"}


def gesture_captions(seed: int, label: int, info: dict, n: int = 5) -> list[str]:
    """`n` distinct reference captions (lower-case words only) for a rendered sample's class and details.

    >>> caps = gesture_captions(3, 3, {"hands": "the right hand", "turn": "clockwise", "sub": None})
    >>> len(caps), all("right arm" in c for c in caps)
    (5, True)
    """
    rng = np.random.default_rng(np.random.SeedSequence([GESTURE_VERSION, int(seed), int(label), 7]))
    side = info["hands"].split()[1] if info["hands"].startswith("the ") and "hand" in info["hands"] else ""
    if label == 10:
        pool = list(_TEMPLATES["other"]) + list(_TEMPLATES[info["sub"]])
        side = side or "right"
    else:
        pool = list(_TEMPLATES[_KIND[label]])
    order = rng.permutation(len(pool))[:n]
    caps = []
    for i in order:
        turns = _TURN_WORDS.get(info["turn"], ("",))
        text = pool[i].format(s=SUBJECTS[int(rng.integers(len(SUBJECTS)))], side=side,
                              turn=turns[int(rng.integers(len(turns)))])
        caps.append(" ".join(text.split()))
    while len(caps) < n:  # pools hold >= 5 templates; keep the contract for larger n
        caps.append(caps[len(caps) % max(len(order), 1)])
    return caps


def gesture_qa(label: int, info: dict) -> list[tuple[str, str]]:
    """Question–answer pairs consistent with the class and the rendered details.

    >>> gesture_qa(8, {"hands": "both hands", "turn": "no circle"})[:2]
    [('what gesture is this ?', 'air drums'), ('which hand moves ?', 'both hands')]
    """
    turn = info["turn"] if info["turn"] in _TURN_WORDS else "it does not circle"
    return [(QUESTIONS[0], CLASS_PHRASES[label]), (QUESTIONS[1], info["hands"]), (QUESTIONS[2], turn),
            (QUESTIONS[3], "yes" if label == 0 else "no")]


def gesture_vocabulary() -> set[str]:
    """Every word the gesture captions, questions and answers can use (plus the caption prompt).

    >>> {"clockwise", "drums", "guitar"} <= gesture_vocabulary()
    True
    """
    text = ["describe the clip", *SUBJECTS, *CLASS_PHRASES, *QUESTIONS, "the right hand the left hand both hands",
            "the whole body it does not circle yes no right left", *[w for v in _TURN_WORDS.values() for w in v]]
    text += [t.replace("{s}", "").replace("{side}", "").replace("{turn}", "") for v in _TEMPLATES.values() for t in v]
    return {w for s in text for w in s.replace("?", " ").split()}


# ---------------------------------------------------------------- the clip

def make_gesture_clip(seed: int, label: int | None = None, n_frames: int = 16, duration_s: float = 2.0,
                      sim: EventSimConfig | None = None) -> Clip:
    """Render one gesture, simulate its 128×128 events and bin them into an events Clip on the 112 grid.

    label defaults to seed % 11. The sensor's threshold map and noise are drawn from (sim.seed, seed), so two
    clips never share the same noise. frames: normalised (n_frames, 2, 112, 112); events: fitted to the grid;
    patch_event_rate from the raw counts; motion_mask from the rendering (see `gesture_motion_mask`).

    >>> c = make_gesture_clip(12)
    >>> c.label, c.captions[0].islower(), c.qa[0]
    (1, True, ('what gesture is this ?', 'right hand wave'))
    """
    seed = int(seed)
    label = seed % len(GESTURE_CLASSES) if label is None else int(label)
    if int(n_frames) < 1:
        raise InputError("n_frames", f"must be >= 1, got {n_frames}")
    frames_i, times, info = _render(seed, label, duration_s, 100, SENSOR)
    cfg = sim or GESTURE_SIM
    cfg = replace(cfg, seed=int(np.random.SeedSequence([GESTURE_VERSION, cfg.seed, seed]).generate_state(1)[0]))
    events = simulate_events(frames_i, times, cfg)
    t0, t1 = int(times[0]), int(times[-1])
    split = next((name for name, r in GESTURE_SPLITS.items() if seed in r), "other")
    meta = {"dataset": "synthetic-dvs-gesture (analog)", "note": DATASET_NOTE, "class_name": GESTURE_CLASSES[label],
            "seed": seed, "split": split, "hands": info["hands"], "turn": info["turn"], "other_kind": info["sub"],
            "dark_body": bool(info["appearance"]["dark_body"]), "version": GESTURE_VERSION}
    # the same code path as a real recording (workbench.data.load.events_to_clip)
    stream = EventStream(events, (SENSOR, SENSOR), source=f"gesture-{seed}", format="synthetic")
    clip = events_to_clip(stream, EventWindow(n_frames=int(n_frames)), sample_id=f"gesture-{seed}", label=label,
                          t_range=(t0, t1), **meta)
    clip.motion_mask = gesture_motion_mask(frames_i, times, clip.frame_times_us, clip.frames.shape[-1], PATCH_SIZE,
                                           gain=info["gain"])
    clip.captions, clip.qa = gesture_captions(seed, label, info), gesture_qa(label, info)
    return clip
