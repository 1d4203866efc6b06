"""Gradio Blocks layout of the visual-debugging dashboard; the work is done in `callbacks.py`.

`build_demo()` only builds; `app.py` (or `workbench app`) launches. Public API endpoints (for gradio_client):

- `/analyse` (upload, sample, frames, method, policy, tau, budget, keyframe_every, source, hysteresis,
  metrics, overlay view, event view, model — optional: the model box, default the app's model; `hf:FOLDER`
  runs a Hugging Face VLM on its own patch grid) → dense caption, compressed caption, metrics, frame slider, overlay,
  router timeline, tokens per frame, FLOPs per frame, event stream, summary table, trace file, details;
- `/frame` (frame, overlay view, event view) → the five linked figures at that frame, from the session's last
  analysis (nothing is recomputed);
- the "stream" tab (`stream_tab.py`): `/stream` and `/stream_frame` — a long input processed as a stream;
- the "question" tab (`prune_tab.py`): `/prune` and `/prune_frame` — a question answered dense and under a
  decoder-side method (SparseVLM, FastV, random, STTF + …), with the decoder-layer overlay;
- the "compare" tab (`compare_tab.py`): `/compare` and `/compare_frame` — every method at one budget, side by side;
- the "cloud-device" tab (`adapt_tab.py`): `/adapt` and `/adapt_tokens` — adaptation rounds of the shipped pocket
  model against a real cloud process on loopback (UTS uplink, AKD, DWC downlink), bytes and accuracy per round.

Per-session state only: one `SessionCache` per browser tab / client in a `gr.State` (dropped after an hour
idle). Bad inputs raise `gr.Error` with the reader's message — the user sees what is wrong and the server
keeps serving everyone else; the queue runs two jobs at a time.
"""
from __future__ import annotations

import logging

import gradio as gr

from workbench.errors import CheckpointError, InputError
from workbench.ui import callbacks as cb
from workbench.ui.methods import METHOD_LABELS, MethodSpec, method_status
from workbench.ui.adapt_tab import build_adapt_tab
from workbench.ui.compare_tab import build_compare_tab
from workbench.ui.session import SessionCache
from workbench.ui.prune_tab import build_prune_tab
from workbench.ui.stream_tab import build_stream_tab
from workbench.viz.style import message_figure

log = logging.getLogger(__name__)

TITLE = "Token-compression workbench"
INTRO = ("Upload a video (mp4, avi, webm, mov, mkv …) or an event-camera file (AEDAT 2/3.1/4, Prophesee "
         "DAT/EVT2/EVT3, N-MNIST, npy/npz, HDF5, CSV), or pick a generated sample. The reference TinyVLM runs it "
         "dense and under the chosen compression; every view below follows the frame slider. Runs offline on CPU. "
         f"Limits: {cb.MAX_UPLOAD_MB} MB per upload, videos up to 10 min and 3840×2160. The embedded TinyVLM knows "
         "only its procedural world (ShapesWorld, a synthetic gesture analog): on real footage its captions describe "
         "shapes and colours, not the scene. The **clip** tab samples 8 or 16 frames from the whole input; the "
         "**stream** tab reads every frame and captions it window by window.")
SESSION_TTL_S = 3600


def _user_error(e: Exception) -> gr.Error:
    if isinstance(e, (InputError, CheckpointError)):
        return gr.Error(str(e), duration=None)
    log.exception("dashboard callback failed")
    return gr.Error(f"internal error ({type(e).__name__}: {e}); the app keeps running — please report it",
                    duration=None)


def _views(cache: SessionCache | None, frame, overlay_view, event_view) -> list:
    if cache is None or cache.last is None:
        empty = message_figure("run an input first", "")
        return [empty] * 5
    v = cb.render_views(cache.last, int(frame or 0), overlay_view, event_view)
    return [v.overlay, v.timeline, v.tokens, v.flops, v.events]


def build_demo(model_name: str = "tinyvlm-shapes", anc_module=None) -> gr.Blocks:
    """The dashboard for `model_name`; `anc_module` overrides the shipped ANC weights (tests, notebooks)."""
    def status_line(label: str) -> str:
        if anc_module is not None and label in ("ANC", "STTF+ANC"):
            return "ANC with the module given to build_demo"
        try:
            model = cb.get_model(model_name)
        except CheckpointError as e:
            return f"⚠ {e}"
        return method_status(label, model)

    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        state = gr.State(None, time_to_live=SESSION_TTL_S)
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        with gr.Tab("clip", id="clip"):
            with gr.Row():
                with gr.Column(scale=1, min_width=320):
                    model_box = gr.Textbox(model_name, label="model: a preset, a .safetensors file, or hf:NAME_OR_PATH "
                                           "(a Hugging Face LLaVA-1.5 / Qwen2-VL / LLaVA-OneVision folder or "
                                           "local-cache name)", elem_id="model", max_lines=1)
                    upload = gr.File(label="video or event file", file_count="single", type="filepath", elem_id="upload")
                    sample = gr.Dropdown(cb.SAMPLE_NAMES, value=cb.SAMPLE_NAMES[1], label="…or a generated sample",
                                         elem_id="sample")
                    frames = gr.Radio(list(cb.FRAME_CHOICES), value=16, label="frames", elem_id="frames")
                    method = gr.Radio(list(METHOD_LABELS.values()), value="STTF", label="method", elem_id="method")
                    status = gr.Markdown(status_line("STTF"), elem_id="method-status")
                    with gr.Accordion("knobs", open=True):
                        policy = gr.Radio(["threshold", "budget"], value="threshold", label="STTF gate policy")
                        tau = gr.Slider(0, 0.5, value=0.05, step=0.005, label="STTF threshold τ (policy threshold)")
                        budget = gr.Slider(4, 196, value=31, step=1, label="STTF budget, tokens per frame (policy budget)")
                        keyframe = gr.Slider(0, 16, value=0, step=1, label="keyframe interval (0 = frame 0 + scene cuts)")
                        source = gr.Radio(["pixels", "events", "embedding"], value="pixels", label="change-score source")
                        hysteresis = gr.Slider(0, 0.5, value=0.1, step=0.01, label="ANC hysteresis")
                    metrics = gr.Checkbox(True, label="caption metrics vs references (METEOR starts Java: ~10 s once)")
                    run = gr.Button("Run", variant="primary", elem_id="run")
                    trace_file = gr.File(label="trace (Parquet, both runs)", interactive=False, elem_id="trace")
                with gr.Column(scale=3):
                    with gr.Row():
                        cap_dense = gr.Textbox(label="dense caption", interactive=False, elem_id="caption-dense")
                        cap_comp = gr.Textbox(label="compressed caption", interactive=False, elem_id="caption")
                    metrics_md = gr.Markdown(label="caption metrics", elem_id="metrics")
                    frame = gr.Slider(0, 15, value=0, step=1, label="frame", elem_id="frame")
                    with gr.Row():
                        with gr.Column():
                            overlay_view = gr.Radio(list(cb.OVERLAY_VIEWS), value="decision", label="patch overlay")
                            overlay = gr.Plot(label="patch overlay", elem_id="overlay", show_label=False)
                        with gr.Column():
                            timeline = gr.Plot(label="router timeline", elem_id="timeline", show_label=False)
                    with gr.Row():
                        tokens = gr.Plot(label="tokens per frame", elem_id="tokens", show_label=False)
                        flops = gr.Plot(label="FLOPs per frame", elem_id="flops", show_label=False)
                    event_view = gr.Radio(list(cb.EVENT_VIEWS), value="binned frames", label="event stream view")
                    events = gr.Plot(label="event stream", elem_id="events", show_label=False)
                    with gr.Row():
                        summary = gr.Dataframe(label="summary (dense vs compressed)", interactive=False, elem_id="summary",
                                               column_widths=["52%", "16%", "16%", "16%"])
                        details = gr.Markdown(label="details", elem_id="details")
        with gr.Tab("stream", id="stream"):
            build_stream_tab(model_name, anc_module)
        with gr.Tab("question (decoder pruning)", id="question"):
            build_prune_tab(model_name)
        with gr.Tab("compare", id="compare"):
            build_compare_tab(model_name)
        with gr.Tab("cloud-device", id="cloud-device"):
            build_adapt_tab()  # the shipped pocket + teacher, whatever the clip tab's model

        def on_run(path, sample_name, n_frames, method_label, policy_, tau_, budget_, key_every, source_, hyst,
                   with_metrics, ov_view, ev_view, model_text, cache, progress=gr.Progress()):
            cache = cache if isinstance(cache, SessionCache) else SessionCache()
            name = (model_text or "").strip() or model_name  # the model box (an empty box: the app's model)
            try:
                spec = MethodSpec.from_label(method_label, policy=policy_, tau=float(tau_), budget=int(budget_),
                                             keyframe_every=int(key_every), source=source_, hysteresis=float(hyst))
                a = cb.analyse(path, None if path else sample_name, spec, cache, name, int(n_frames),
                               bool(with_metrics), progress, anc_module)
                views = _views(cache, 0, ov_view, ev_view)
            except Exception as e:  # noqa: BLE001 - every failure becomes a message; the server keeps serving
                raise _user_error(e) from None
            slider = gr.Slider(minimum=0, maximum=a.num_frames - 1, value=0, step=1)
            return (cache, cb.caption_text(a.dense), cb.caption_text(a.result), cb.metrics_markdown(a), slider,
                    *views, cb.summary(a), a.trace_path, cb.details_markdown(a))

        def on_frame(t, ov_view, ev_view, cache):
            try:
                return _views(cache, t, ov_view, ev_view)
            except Exception as e:  # noqa: BLE001
                raise _user_error(e) from None

        plots = [overlay, timeline, tokens, flops, events]
        run.click(on_run, [upload, sample, frames, method, policy, tau, budget, keyframe, source, hysteresis, metrics,
                           overlay_view, event_view, model_box, state],
                  [state, cap_dense, cap_comp, metrics_md, frame, *plots, summary, trace_file, details],
                  api_name="analyse")
        frame.input(on_frame, [frame, overlay_view, event_view, state], plots, api_name="frame",
                    trigger_mode="always_last", show_progress="hidden")
        for radio in (overlay_view, event_view):
            radio.change(on_frame, [frame, overlay_view, event_view, state], plots, api_visibility="private",
                         show_progress="hidden")
        method.change(status_line, [method], [status], api_visibility="private", show_progress="hidden")
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, **kwargs):
    """Queue (2 concurrent jobs, other users wait in line) and serve offline with the upload limit."""
    return demo.queue(default_concurrency_limit=2).launch(server_name=host, server_port=port, share=False,
                                                          max_file_size=f"{cb.MAX_UPLOAD_MB}mb", **kwargs)
