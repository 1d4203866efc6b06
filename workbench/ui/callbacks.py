"""App callbacks: plain functions over the package (no gradio imports), testable without a browser.

`analyse` runs one input (upload or bundled sample) dense and under the chosen method, with traces, reusing
the session's cache; `render_views` turns an `Analysis` into the dashboard's linked figures at one frame;
`write_run_trace` saves both traces to Parquet. `describe_input` is the plain dense captioner (CLI-style).

    >>> from workbench.ui.session import SessionCache
    >>> a = analyse(None, "slow motion", MethodSpec("sttf"), SessionCache(), "tinyvlm-debug", 8, metrics=False)
    >>> a.clip.sample_id, a.dense.tokens_per_frame, a.result.method
    ('shapes-9', 196.0, 'sttf')
    >>> sorted(vars(render_views(a, 3)))
    ['events', 'flops', 'overlay', 'timeline', 'tokens']
"""
from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import polars as pl

from workbench.data.clip import Clip
from workbench.errors import InputError
from workbench.models.registry import create_model
from workbench.models.tinyvlm import TinyVLM
from workbench.pipeline import Dense, describe
from workbench.trace.schema import write_trace
from workbench.ui.inputs import (FRAME_CHOICES, SAMPLE_NAMES, UploadLimits, file_digest, input_key, load_upload,
                                 sample_clip)
from workbench.ui.methods import MethodSpec, build_method
from workbench.ui.session import Analysis, SessionCache
from workbench.viz.costs import flops_per_frame, tokens_per_frame
from workbench.viz.events_view import event_frames_figure
from workbench.viz.frames import frame_strip
from workbench.viz.overlay import patch_overlay
from workbench.viz.style import message_figure
from workbench.viz.summary import summary_table
from workbench.viz.timeline import router_timeline

__all__ = ["MAX_UPLOAD_MB", "SAMPLE_NAMES", "FRAME_CHOICES", "get_model", "load_input", "analyse", "render_views",
           "Views", "caption_metrics", "write_run_trace", "details_markdown", "describe_input", "Result", "gallery",
           "MethodSpec"]

MAX_UPLOAD_MB = 200
TRACE_ROOT = Path(tempfile.gettempdir()) / "workbench-traces"
TRACE_TTL_S = 3600
Progress = Callable[..., None]


@lru_cache(maxsize=4)
def get_model(name: str) -> TinyVLM:
    """Models are loaded once per process and shared read-only by all sessions."""
    return create_model(name)


def load_input(upload: str | os.PathLike | None, sample: str | None, n_frames: int = 16) -> Clip:
    """The uploaded file if there is one, else the chosen bundled sample."""
    if upload:
        return load_upload(upload, n_frames, UploadLimits(max_mb=MAX_UPLOAD_MB))
    if sample:
        return sample_clip(sample, n_frames)
    raise InputError("input", "upload a video or an event file, or pick a sample")


# ---- the dashboard run ------------------------------------------------------------------------------------------

def _noop(*_a, **_k) -> None:
    return None


def caption_metrics(references: list[str], dense_caption: str, caption: str) -> pl.DataFrame | str:
    """BLEU-1/4, METEOR and ROUGE-L of both captions against the clip's references (pycocoevalcap, one call),
    or a sentence saying why there are none. CIDEr is left out: its IDF comes from the scored set itself, so
    on a single clip every n-gram has IDF 0 and CIDEr is 0 by construction (see eval/metrics.py)."""
    if not references:
        return "no reference captions for this input (uploads have none; the generated samples do)"
    if not dense_caption.strip() or not caption.strip():
        return "a caption is empty, so it cannot be scored"
    from workbench.eval.metrics import score_captions
    try:
        s = score_captions({"dense": dense_caption, "compressed": caption},
                           {"dense": list(references), "compressed": list(references)}, spice=False)
    except (RuntimeError, ValueError, OSError) as e:
        return f"caption metrics unavailable here ({e})"
    cols = ("bleu1", "bleu4", "meteor", "rouge_l")
    return pl.DataFrame({"caption": ["dense", "compressed"],
                         **{c: [s.per_image["dense"][c], s.per_image["compressed"][c]] for c in cols}})


def analyse(upload: str | None, sample: str | None, spec: MethodSpec, cache: SessionCache,
            model_name: str = "tinyvlm-shapes", n_frames: int = 16, metrics: bool = True,
            progress: Progress | None = None, anc_module=None) -> Analysis:
    """Load (or reuse) the input, run dense and `spec` with traces (or reuse them), score the captions.

    Raises InputError (bad file, impossible settings, method not available); the cache is left consistent.
    """
    progress = progress or _noop
    if int(n_frames) not in FRAME_CHOICES:
        raise InputError("frames", f"choose {' or '.join(map(str, FRAME_CHOICES))} frames, not {n_frames}")
    n_frames = int(n_frames)
    reused = {}
    if upload:
        progress(0.02, desc="hashing the upload")
        if not Path(upload).is_file():
            raise InputError(Path(upload).name, "the upload did not arrive (no such file); please upload it again")
        key = input_key(cache.digest(upload, file_digest), None, n_frames)
    elif sample:
        key = input_key(None, sample, n_frames)
    else:
        raise InputError("input", "upload a video or an event file, or pick a sample")
    before = dict(cache.counters)
    progress(0.05, desc="reading the input")
    clip = cache.clip(key, lambda: load_input(upload, sample, n_frames))
    model = get_model(model_name)
    method = build_method(spec, model, clip, anc_module)  # raises before any work if the method cannot run
    progress(0.25, desc="dense baseline")
    dense = cache.dense_result(key, model_name, lambda: describe(model, clip, method=Dense(), trace=True))
    if spec.method == "dense":
        result = dense
    else:
        progress(0.55, desc=f"running {spec.label()}")
        result = cache.method_result(key, model_name, spec, lambda: describe(model, clip, method=method, trace=True))
    reused = {"clip": cache.counters["decodes"] == before["decodes"],
              "dense": cache.counters["dense_runs"] == before["dense_runs"],
              "run": spec.method != "dense" and cache.counters["method_runs"] == before["method_runs"]}
    scores = None
    if metrics:
        progress(0.8, desc="scoring captions")
        scores = cache.caption_metrics(key, (dense.caption, result.caption),
                                       lambda: caption_metrics(clip.captions, dense.caption, result.caption))
    a = Analysis(key, clip, model_name, spec, dense, result, scores, None, reused)
    progress(0.9, desc="writing the trace")
    a.trace_path = str(write_run_trace(a))
    cache.last = a
    progress(1.0, desc="done")
    return a


def write_run_trace(a: Analysis, folder: str | os.PathLike | None = None) -> Path:
    """Both runs' traces (dense baseline + method, told apart by run_id) in one Parquet file (`write_trace`);
    run metadata = the method run's, with the baseline's under "baseline" and the dashboard knobs."""
    folder = Path(folder) if folder else TRACE_ROOT
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in folder.glob("*.parquet"):  # traces are downloaded right away; keep the folder small
        try:
            if now - old.stat().st_mtime > TRACE_TTL_S:
                old.unlink()
        except OSError:
            pass
    parts = [a.dense.trace] + ([a.result.trace] if a.result is not a.dense else [])
    df = pl.concat([p for p in parts if p is not None])
    stem = f"{a.clip.sample_id}-{a.result.method}-{a.result.run_id}".replace("/", "_").replace("+", "_")
    path = folder / uuid.uuid4().hex[:8] / f"{stem}.parquet"
    path.parent.mkdir()
    run = {**a.result.run, "baseline": a.dense.run, "dashboard": {**asdict(a.spec), "input": a.key}}
    write_trace(df, path, run)
    return path


# ---- views -------------------------------------------------------------------------------------------------------

@dataclass
class Views:
    overlay: go.Figure
    timeline: go.Figure
    tokens: go.Figure
    flops: go.Figure
    events: go.Figure


OVERLAY_VIEWS = {"decision": "decision", "change score": "change_score", "motion (ground truth)": "motion"}
EVENT_VIEWS = {"binned frames": "binned", "time surface": "time_surface"}


def render_views(a: Analysis, frame_index: int = 0, overlay_view: str = "decision",
                 event_view: str = "binned") -> Views:
    """All linked figures of an analysis at one frame (views may be given by UI label or by name)."""
    t = int(np.clip(int(frame_index or 0), 0, a.num_frames - 1))
    ov = OVERLAY_VIEWS.get(overlay_view, overlay_view)
    ev = EVENT_VIEWS.get(event_view, event_view)
    clip, trace = a.clip, a.result.trace
    cfg = get_model(a.model_name).cfg
    step = getattr(cfg, "frames_per_step", 1)  # Hugging Face models: Qwen2-VL's tower sees frame pairs
    ft = t // step  # the trace's frame (the tower's), on the model's own patch grid
    motion = clip.motion_mask if cfg.grid == 14 else _mask_on_grid(clip.motion_mask, cfg.grid[0], step)
    overlay = patch_overlay(clip.frames[t], trace, ft, view=ov, motion_mask=motion)
    if clip.events is not None:
        side = int(clip.frames.shape[-1])
        events = event_frames_figure(clip.events, (side, side), clip.frame_times_us, t, model_frame=clip.frames[t],
                                     view=ev)
    else:
        events = message_figure("this input is not an event recording: upload an event file or pick the "
                                "'gesture events' sample to see the event stream", "event stream")
    return Views(overlay, router_timeline(trace, ft, fps=clip.fps / step), tokens_per_frame(a.dense.trace, trace, ft),
                 flops_per_frame(a.dense.trace, trace, ft), events)


def _mask_on_grid(mask: np.ndarray | None, g: int, step: int = 1) -> np.ndarray | None:
    """ShapesWorld's ground-truth motion mask (T, 14, 14) on another model's g×g patch grid and tower frames
    (a patch moves if any 14-grid patch it overlaps moves; a tower frame of `step` frames if any of them does)."""
    if mask is None:
        return None
    import torch
    m = torch.as_tensor(np.asarray(mask, np.float32))[None]  # (1, T, 14, 14)
    t = m.shape[1] - m.shape[1] % step if m.shape[1] >= step else m.shape[1]
    m = m[:, :t].reshape(1, t // step, step, *m.shape[2:]).amax(2) if step > 1 else m
    return (torch.nn.functional.adaptive_max_pool2d(m, g) if g < m.shape[-1] else
            torch.nn.functional.interpolate(m, size=(g, g), mode="nearest"))[0].numpy() > 0


def summary(a: Analysis) -> pl.DataFrame:
    """The summary table (rounded for display)."""
    df = summary_table(a.dense.trace, a.result.trace, fps=a.clip.fps)
    return df.with_columns(pl.col("dense", "compressed", "ratio").round(3))


def caption_text(d) -> str:
    """A Description's caption, with the gesture label for event clips. When the decoder's words contradict the
    gesture head ("waving with the right hand" next to "other gestures"), the head's sentence is shown and the
    decoder's words are quoted beside it (`stream.captions.gesture_caption`)."""
    from workbench.stream.captions import gesture_caption
    text, said = gesture_caption(d.caption, d.gesture)
    if d.gesture:
        text += f"  [gesture: {d.gesture}]"
    if said is not None:
        text += f"  (the decoder wrote {said!r}, which contradicts the gesture head)"
    return text


def metrics_markdown(a: Analysis) -> str:
    m = a.metrics
    if m is None:
        return "_caption metrics off_"
    if isinstance(m, str):
        return f"_{m}_"
    head = "| caption | BLEU-1 | BLEU-4 | METEOR | ROUGE-L |\n|---|---|---|---|---|\n"
    rows = "\n".join(f"| {r['caption']} | {r['bleu1']:.3f} | {r['bleu4']:.3f} | {r['meteor']:.3f} | "
                     f"{r['rouge_l']:.3f} |" for r in m.iter_rows(named=True))
    note = f"against the clip's {len(a.clip.captions)} reference captions (CIDEr needs a set of clips)"
    return f"{head}{rows}\n\n_{note}_"


def input_lines(c, suffix: str = "") -> list[str]:
    """Markdown lines describing a loaded clip: input, detected event format, video container."""
    lines = [f"**input** `{c.sample_id}` · {c.modality} · {c.num_frames} frames · {c.duration_s:.2f} s{suffix}"]
    if c.meta.get("format"):
        lines.append(f"**detected format** {c.meta['format']} · sensor {c.meta.get('sensor_size')} · "
                     f"{c.meta.get('num_events', 0):,} events in the window")
    if c.meta.get("codec"):
        lines.append(f"**video** {c.meta.get('container')} / {c.meta.get('codec')} · "
                     f"{c.meta.get('width')}×{c.meta.get('height')} · {c.meta.get('duration_s', 0):.1f} s")
    return lines


def details_markdown(a: Analysis) -> str:
    c, d, r = a.clip, a.dense, a.result
    lines = input_lines(c, f" · model `{a.model_name}`")
    model = get_model(a.model_name)
    if hasattr(model, "details"):  # a Hugging Face VLM: its family, patch grid and how video reaches it
        lines += model.notes()
    lines.append(f"**method** {a.spec.label()} · visual tokens to the decoder {r.tokens_per_frame:.1f} per frame "
                 f"(dense {d.tokens_per_frame:.0f}) · runs `{d.run_id}` (dense) / `{r.run_id}`")
    if c.label is not None and r.gesture_probs:
        top = sorted(r.gesture_probs.items(), key=lambda kv: -kv[1])[:3]
        truth = c.meta.get("class_name")
        lines.append("**gesture** " + " · ".join(f"{k} {v:.2f}" for k, v in top) + (f" (truth: {truth})" if truth else ""))
    lines.append("**reused from this session** " + " · ".join(
        f"{name} {'✓' if a.reused.get(k) else '✗'}" for k, name in
        (("clip", "decoded input"), ("dense", "dense baseline"), ("run", "method run"))))
    if c.captions:
        lines.append("**reference captions**\n" + "\n".join(f"- {s}" for s in c.captions))
    if c.meta.get("note"):
        lines.append(f"_{c.meta['note']}_")
    return "\n\n".join(lines)


# ---- plain dense captioning (CLI-style) ------------------------------------------------------------------------

@dataclass
class Result:
    clip: Clip
    caption: str
    gesture: str | None
    gesture_probs: dict[str, float] | None
    tokens_per_frame: float
    encode_ms: float
    decode_ms: float

    def details_markdown(self) -> str:
        c = self.clip
        lines = input_lines(c)
        lines.append(f"**visual tokens to the decoder** {self.tokens_per_frame:.0f} per frame · "
                     f"encode {self.encode_ms:.0f} ms · decode {self.decode_ms:.0f} ms")
        if self.gesture_probs:
            top = sorted(self.gesture_probs.items(), key=lambda kv: -kv[1])[:3]
            lines.append("**gesture** " + " · ".join(f"{k} {v:.2f}" for k, v in top))
        if c.captions:
            lines.append("**reference captions**\n" + "\n".join(f"- {s}" for s in c.captions))
        if c.meta.get("note"):
            lines.append(f"_{c.meta['note']}_")
        return "\n\n".join(lines)


def describe_input(upload: str | None, sample: str | None, model_name: str = "tinyvlm-shapes",
                   n_frames: int = 16) -> Result:
    """Load the input and caption it with the dense model. Raises InputError on bad input."""
    clip = load_input(upload, sample, n_frames)
    d = describe(get_model(model_name), clip, method=Dense())
    return Result(clip, d.caption, d.gesture, d.gesture_probs, d.tokens_per_frame, d.timings_ms["encode_ms"],
                  d.timings_ms["decode_ms"])


def gallery(clip: Clip) -> list[tuple[np.ndarray, str]]:
    return frame_strip(clip, scale=2)
