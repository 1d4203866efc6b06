"""`workbench eval`: caption metrics on the ShapesWorld test split and gesture accuracy on the gesture test split.

Every clip goes through `pipeline.describe` — the same path as the app and the CLI — under one method
(dense by default), so the numbers of a compressed run sit beside the dense baseline of the same code.

    >>> from workbench.models.registry import create_model
    >>> res = gesture_eval(create_model("tinyvlm-debug"), range(0, 3), progress=False)
    >>> res.confusion.shape
    (11, 11)
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from workbench.data import gestures, shapesworld
from workbench.eval.metrics import CaptionScores, score_captions
from workbench.models.tinyvlm import TinyVLM
from workbench.pipeline import describe


@dataclass
class CaptionEval:
    scores: CaptionScores
    per_clip: pl.DataFrame  # sample_id, seed, motion_level, caption, tokens_per_frame, encode_ms


@dataclass
class GestureEval:
    accuracy: float
    confusion: np.ndarray  # (classes, classes), rows = truth, columns = prediction
    per_clip: pl.DataFrame


def caption_eval(model: TinyVLM, seeds: Iterable[int], method=None, progress: bool = True) -> CaptionEval:
    """Caption every ShapesWorld clip of `seeds` and score against its five references."""
    rows, hyps, refs = [], {}, {}
    for seed in tqdm(list(seeds), desc="captions", disable=not progress, unit="clip"):
        clip = shapesworld.make_clip(seed)
        d = describe(model, clip, method)
        hyps[clip.sample_id] = d.caption if d.caption.strip() else "<empty>"
        refs[clip.sample_id] = clip.captions
        rows.append({"sample_id": clip.sample_id, "seed": seed, "motion_level": clip.meta["motion_level"],
                     "caption": d.caption, "tokens_per_frame": d.tokens_per_frame,
                     "encoder_tokens": float(d.stats.tokens_computed.sum()), "encode_ms": d.timings_ms["encode_ms"],
                     "decode_ms": d.timings_ms["decode_ms"]})
    scores = score_captions(hyps, refs)
    per = pl.DataFrame(rows)
    per = per.with_columns(pl.Series("cider", [scores.per_image.get(s, {}).get("cider", float("nan"))
                                               for s in per["sample_id"]]))
    return CaptionEval(scores, per)


def gesture_eval(model: TinyVLM, seeds: Iterable[int], method=None, progress: bool = True,
                 clips: Iterable | None = None) -> GestureEval:
    """Classify gesture clips (synthetic analog by default, or any iterable of labelled event Clips)."""
    n = len(model.cfg.gesture_classes)
    conf = np.zeros((n, n), np.int64)
    rows = []
    source = clips if clips is not None else (gestures.make_gesture_clip(s) for s in seeds)
    total = None if clips is not None else len(list(seeds))
    for clip in tqdm(source, desc="gestures", disable=not progress, unit="clip", total=total):
        d = describe(model, clip, method)
        pred = model.cfg.gesture_classes.index(d.gesture)
        conf[clip.label, pred] += 1
        rows.append({"sample_id": clip.sample_id, "label": clip.label, "pred": pred, "caption": d.caption,
                     "tokens_per_frame": d.tokens_per_frame, "encode_ms": d.timings_ms["encode_ms"]})
    acc = float(np.trace(conf) / max(conf.sum(), 1))
    return GestureEval(acc, conf, pl.DataFrame(rows))


def run_eval(model: TinyVLM, out_dir: str | Path, which: str = "all", limit: int | None = None, method=None,
             progress: bool = True) -> dict:
    """Evaluate and write `results.json` plus per-clip Parquet tables into out_dir; return the results dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    res: dict = {"model": model.cfg.name, "method": getattr(method, "name", "dense"),
                 "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                 "torch": torch.__version__}
    if which in ("all", "captions"):
        ce = caption_eval(model, shapesworld.split_seeds("test", limit), method, progress)
        res["captions"] = {"split": "shapesworld test", **ce.scores.to_dict(per_image=False)}
        res["captions"]["by_motion_level"] = {
            lvl: float(g["cider"].mean()) for (lvl,), g in ce.per_clip.group_by("motion_level")}
        ce.per_clip.write_parquet(out / "captions.parquet")
    if which in ("all", "gesture"):
        ge = gesture_eval(model, gestures.gesture_split_seeds("test", limit), method, progress)
        res["gesture"] = {"split": "synthetic gesture test (analog of DVS128 Gesture)", "accuracy": ge.accuracy,
                          "n": int(ge.confusion.sum()), "classes": list(model.cfg.gesture_classes),
                          "confusion": ge.confusion.tolist()}
        ge.per_clip.write_parquet(out / "gestures.parquet")
    (out / "results.json").write_text(json.dumps(res, indent=2))
    return res
