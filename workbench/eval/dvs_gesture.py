"""`workbench eval gesture --root PATH`: accuracy on a local copy of the REAL IBM DVS128 Gesture test split.

Expected layout (the dataset as IBM distributes it): `ROOT/DvsGesture/userXX_<lighting>.aedat` (AEDAT 3.1)
with `userXX_<lighting>_labels.csv` beside each; `ROOT` may also be the folder holding the files. The test
split is users 24–29 (the dataset's `trials_to_test.txt`); users 01–23 are the training split and are never
read. Nothing is downloaded.

Per test recording: read with our AEDAT 3.1 reader, cut into labelled gestures (`cut_gesture_segments`), and
turn each gesture into a clip with `events_to_clip` — by default the first 2.0 s after the label's start time
(the window length the reference model was trained on), 16 frames; pass another `EventWindow` to change the
window start / length, frame count, fit or denoise. Each clip goes through `pipeline.describe` (via
`evaluate.gesture_eval`) under every method: accuracy, the 11×11 confusion matrix (rows = truth) and the mean
visual tokens per frame. Writes `results.json` and `dvs_gesture.parquet` (one row per method × gesture).

    >>> from workbench.models.registry import create_model
    >>> run_dvs_gesture_eval(create_model("tinyvlm-debug"), "/no/such/folder", "/tmp/out")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workbench.errors.InputError: /no/such/folder: no such folder; expected ...
"""
from __future__ import annotations

import json
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from workbench.data.clip import Clip
from workbench.data.load import EventWindow, events_to_clip
from workbench.data.readers import DVS_GESTURE_CLASSES, cut_gesture_segments, read_events, read_gesture_labels
from workbench.errors import CheckpointError, InputError
from workbench.eval.evaluate import gesture_eval
from workbench.models.tinyvlm import TinyVLM
from workbench.pipeline import Dense

TEST_USERS = range(24, 30)  # users 24..29: the DVS128 Gesture test split
DEFAULT_WINDOW = EventWindow(n_frames=16, start_s=0.0, duration_s=2.0)
LAYOUT = ("expected a local copy of the IBM DVS128 Gesture dataset: ROOT/DvsGesture/userXX_<lighting>.aedat "
          "(AEDAT 3.1) with userXX_<lighting>_labels.csv beside each, or ROOT being that folder; the test split "
          "is users 24-29")
_RECORDING = re.compile(r"^user(\d+)_(.+)\.aedat$", re.IGNORECASE)


@dataclass(frozen=True)
class Recording:
    """One DVS128 Gesture recording of the test split: the AEDAT 3.1 file and its label file."""

    aedat: Path
    labels: Path
    user: int
    lighting: str

    @property
    def name(self) -> str:
        return self.aedat.stem


def find_test_recordings(root) -> list[Recording]:
    """The test-split recordings (users 24–29) under `root` or `root/DvsGesture`, sorted by name.

    Raises InputError (naming `root` and the expected layout) when there is no such folder, no recording at
    all, only training users, or a recording without its label file.

    >>> find_test_recordings("/no/such/folder")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workbench.errors.InputError: /no/such/folder: no such folder; expected ...
    """
    root = Path(root)
    if not root.exists():
        raise InputError(root, f"no such folder; {LAYOUT}")
    if not root.is_dir():
        raise InputError(root, f"is a file, not a folder; {LAYOUT}")
    folders = [d for d in (root / "DvsGesture", root) if d.is_dir()]
    found: list[tuple[Path, re.Match]] = []
    for folder in folders:
        found = [(p, m) for p in sorted(folder.iterdir()) if p.is_file() and (m := _RECORDING.match(p.name))]
        if found:
            break
    if not found:
        raise InputError(root, f"holds no userXX_<lighting>.aedat recordings; {LAYOUT}")
    recs = []
    for path, m in found:
        user = int(m.group(1))
        if user not in TEST_USERS:
            continue  # training split: never read
        labels = path.with_name(f"{path.stem}_labels.csv")
        if not labels.is_file():
            raise InputError(path, f"has no label file {labels.name} beside it; {LAYOUT}")
        recs.append(Recording(path, labels, user, m.group(2)))
    if not recs:
        users = sorted({int(m.group(1)) for _, m in found})
        raise InputError(root, f"holds {len(found)} recordings of users {users[0]:02d}-{users[-1]:02d} but none of "
                         f"the test users 24-29; {LAYOUT}")
    return recs


def recording_clips(rec: Recording, window: EventWindow = DEFAULT_WINDOW) -> list[Clip]:
    """One labelled events Clip per gesture of a recording: `window` placed at the label's start time.

    The window starts `window.start_s` after the gesture's start and lasts `window.duration_s` (None = to the
    gesture's end), never past the gesture's end. `clip.meta` carries user, lighting, segment and spans.
    """
    stream = read_events(rec.aedat, format="aedat3.1")
    segments = read_gesture_labels(rec.labels)
    clips = []
    for i, ((part, label), seg) in enumerate(zip(cut_gesture_segments(stream, segments), segments)):
        t0 = seg.start_us + int(round(window.start_s * 1e6))
        t1 = seg.end_us if window.duration_s is None else min(seg.end_us, t0 + int(round(window.duration_s * 1e6)))
        clip = events_to_clip(part, window, sample_id=f"{rec.name}#{i}", label=label, t_range=(t0, t1),
                              recording=rec.name, user=rec.user, lighting=rec.lighting, segment=i,
                              class_name=seg.name, start_us=seg.start_us, end_us=seg.end_us)
        clips.append(clip)
    return clips


def _segment_info(clip: Clip) -> dict:
    """The per-gesture columns of the Parquet table, from a clip made by `recording_clips`."""
    m = clip.meta
    return {"sample_id": clip.sample_id, "recording": m["recording"], "user": m["user"], "lighting": m["lighting"],
            "segment": m["segment"], "class_name": m["class_name"], "start_us": m["start_us"], "end_us": m["end_us"],
            "window_start_us": m["window_us"][0], "window_end_us": m["window_us"][1], "num_events": m["num_events"]}


def run_dvs_gesture_eval(model: TinyVLM, root, out_dir, limit: int | None = None, methods: dict | None = None,
                         window: EventWindow = DEFAULT_WINDOW, progress: bool = True) -> dict:
    """Evaluate `model` on the real DVS128 Gesture test split under `root` (see the module docstring).

    limit: at most this many gestures (in recording order). methods: name → method object (default
    {"dense": Dense()}). Returns the results dict (also written to out_dir/results.json); "gesture" holds the
    first method's summary, "methods" every method's accuracy, n, confusion and tokens_per_frame.
    """
    if tuple(model.cfg.gesture_classes) != tuple(DVS_GESTURE_CLASSES):
        raise CheckpointError(f"model {model.cfg.name!r} predicts {list(model.cfg.gesture_classes)}, not the 11 "
                              "DVS128 Gesture classes in tonic's order")
    if limit is not None and int(limit) < 1:
        raise InputError("limit", f"must be at least 1 gesture, got {limit}")
    methods = dict(methods) if methods else {"dense": Dense()}
    recs = find_test_recordings(root)
    n_cls = len(DVS_GESTURE_CLASSES)
    conf = {name: np.zeros((n_cls, n_cls), np.int64) for name in methods}
    rows: list[dict] = []  # one per method × gesture
    done, used = 0, []
    for rec in tqdm(recs, desc="DVS128 Gesture", unit="recording", disable=not progress):
        if limit is not None and done >= limit:
            break
        clips = recording_clips(rec, window)
        if limit is not None:
            clips = clips[:limit - done]
        done += len(clips)
        used.append(rec.name)
        for name, method in methods.items():
            ge = gesture_eval(model, (), method=method, progress=False, clips=clips)
            conf[name] += ge.confusion
            for clip, r in zip(clips, ge.per_clip.iter_rows(named=True)):  # same order as the clips
                rows.append({"method": name, **_segment_info(clip), **r, "pred_name": DVS_GESTURE_CLASSES[r["pred"]],
                             "correct": r["pred"] == r["label"]})
    per = pl.DataFrame(rows)
    summary = {}
    for name in methods:
        rows = per.filter(pl.col("method") == name)
        c = conf[name]
        by_lighting = rows.group_by("lighting").agg(pl.col("correct").mean()).sort("lighting")
        summary[name] = {"accuracy": float(np.trace(c) / max(c.sum(), 1)), "n": int(c.sum()),
                         "tokens_per_frame": float(rows["tokens_per_frame"].mean()),
                         "by_lighting": dict(zip(by_lighting["lighting"], by_lighting["correct"])),
                         "confusion": c.tolist()}
    first = next(iter(methods))
    res = {"model": model.cfg.name, "dataset": "IBM DVS128 Gesture (real recordings)", "root": str(root),
           "split": "test (users 24-29)", "recordings": used,
           "window": {"start_s": window.start_s, "duration_s": window.duration_s, "n_frames": window.n_frames,
                      "fit": window.fit, "denoise_us": window.denoise_us, "placed_at": "label start"},
           "classes": list(DVS_GESTURE_CLASSES), "methods": summary,
           "gesture": {"method": first, "split": "DVS128 Gesture test (users 24-29)", **summary[first]},
           "date": time.strftime("%Y-%m-%d"),
           "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "torch": torch.__version__}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per.write_parquet(out / "dvs_gesture.parquet")
    (out / "results.json").write_text(json.dumps(res, indent=2))
    return res
