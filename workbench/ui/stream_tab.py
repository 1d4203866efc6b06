"""The dashboard's "stream" tab (Gradio components only; the work is in `stream_callbacks.py`).

Upload a long video (or an event file) or pick a generated stream → it is processed as a stream with a progress
bar; the video plays with the window captions as a subtitle track; the windows' captions in a table; the
stream-long timeline (tokens computed per frame, recompute rate, router branch, window edges); a frame slider
over the whole stream drives the patch overlay. API endpoints: `/stream` (upload, sample, method, τ,
hysteresis, fps, window, stride, fit) and `/stream_frame` (frame) — per-session state only.
"""
from __future__ import annotations

import gradio as gr

from workbench.errors import InputError
from workbench.ui import stream_callbacks as sc
from workbench.ui.methods import METHOD_LABELS, MethodSpec
from workbench.viz.style import message_figure

INTRO = ("Stream mode: a long video (or event recording) is read frame by frame at its native rate (or the rate "
         "you choose) and captioned window by window, with the method's state (references, caches, router) "
         "carried across the whole stream — no re-encode at window edges. Uploads up to 10 min. "
         "The same runs from the command line: `workbench caption FILE --fps native --srt FILE.srt`.")


def _error(e: Exception) -> gr.Error:
    from workbench.ui.layout import _user_error  # the app's one rule for messages (imported late: layout imports us)
    return _user_error(e)


def build_stream_tab(model_name: str = "tinyvlm-shapes", anc_module=None) -> None:
    """Build the tab's components and events inside the current Blocks / Tab context."""
    state = gr.State(None, time_to_live=3600)
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            upload = gr.File(label="long video or event file", file_count="single", type="filepath",
                             elem_id="stream-upload")
            sample = gr.Dropdown(list(sc.STREAM_SAMPLES), value=list(sc.STREAM_SAMPLES)[0],
                                 label="…or a generated stream", elem_id="stream-sample")
            method = gr.Radio(list(METHOD_LABELS.values()), value="STTF", label="method", elem_id="stream-method")
            tau = gr.Slider(0, 0.5, value=0.05, step=0.005, label="STTF threshold τ")
            hysteresis = gr.Slider(0, 0.5, value=0.1, step=0.01, label="ANC hysteresis")
            fps = gr.Dropdown(list(sc.FPS_CHOICES), value="native", allow_custom_value=True,
                              label="frame rate (native = the video's own; events: 8 bins/s)")
            window = gr.Slider(2, 32, value=16, step=1, label="frames per caption window")
            stride = gr.Slider(0, 32, value=0, step=1, label="stride in frames (0 = back to back)")
            fit = gr.Radio([("centre crop", "crop"), ("letterbox", "pad"), ("squash", "stretch")], value="crop",
                           label="non-square video → the square 112×112 model input")
            run = gr.Button("Stream", variant="primary", elem_id="stream-run")
        with gr.Column(scale=3):
            video = gr.Video(label="the stream, window captions as subtitles", interactive=False,
                             elem_id="stream-video")
            summary = gr.Markdown(elem_id="stream-summary")
            table = gr.Dataframe(label="window captions", interactive=False, elem_id="stream-windows",
                                 column_widths=["9%", "9%", "58%", "12%", "12%"])
            timeline = gr.Plot(label="stream timeline", show_label=False, elem_id="stream-timeline")
            frame = gr.Slider(0, 1, value=0, step=1, label="frame (whole stream)", elem_id="stream-frame")
            overlay = gr.Plot(label="patch overlay", show_label=False, elem_id="stream-overlay")

    def on_stream(path, sample_name, method_label, tau_, hyst, fps_, window_, stride_, fit_, progress=gr.Progress()):
        try:
            rate = None if str(fps_).strip().lower() in ("", "native") else _rate(fps_)
            spec = sc.StreamSpec(MethodSpec.from_label(method_label, tau=float(tau_), hysteresis=float(hyst)),
                                 rate, int(window_), int(stride_) or None, fit_)
            a = sc.analyse_stream(path, None if path else sample_name, spec, model_name, progress, anc_module)
            views = sc.stream_views(a, 0)
        except Exception as e:  # noqa: BLE001 - every failure becomes a message; the server keeps serving
            raise _error(e) from None
        slider = gr.Slider(minimum=0, maximum=max(a.num_frames - 1, 1), value=0, step=1)
        return (a, gr.Video(value=a.video, subtitles=a.subtitles), sc.summary_markdown(a), sc.windows_table(a),
                views.timeline, slider, views.overlay)

    def on_frame(t, a):
        if a is None:
            empty = message_figure("stream an input first", "")
            return empty, empty
        try:
            v = sc.stream_views(a, int(t or 0))
        except Exception as e:  # noqa: BLE001
            raise _error(e) from None
        return v.timeline, v.overlay

    run.click(on_stream, [upload, sample, method, tau, hysteresis, fps, window, stride, fit],
              [state, video, summary, table, timeline, frame, overlay], api_name="stream")
    frame.input(on_frame, [frame, state], [timeline, overlay], api_name="stream_frame", trigger_mode="always_last",
                show_progress="hidden")


def _rate(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise InputError("frame rate", f"choose 'native' or a number of frames per second, not {text!r}") from None
