"""The dashboard's "compare" tab: one clip, one budget, every method side by side (Gradio components only; the
work is in `compare_callbacks.py`).

Pick an input, a budget (visual tokens per frame reaching the decoder) and the methods; optionally a question.
Every method's kept / merged / dropped patches on the frame grid side by side (a frame slider moves all panels),
their captions or answers with tokens, FLOPs and latency ratios to dense, FLOPs and latency bars, and the Pareto
plot of the last `workbench sweep`. API endpoints: `/compare` (upload, sample, frames, budget, methods, question)
and `/compare_frame` (frame) — per-session state only; bad knobs are messages.
"""
from __future__ import annotations

import gradio as gr

from workbench.errors import CheckpointError, InputError
from workbench.ui import compare_callbacks as cc
from workbench.ui.callbacks import FRAME_CHOICES, SAMPLE_NAMES
from workbench.viz.style import message_figure

INTRO = ("Every method at **one budget**: B visual tokens per frame reaching the decoder (ToMe merges inside the "
         "encoder, Eventful and STTF gate over time, VisionZip keeps dominant tokens plus contextual merges, random "
         "and pooling are the floors; FastV / SparseVLM / random-prune count the paper's mean over decoder layers). "
         "A method that cannot hit B says what it hit. The same comparison over many clips: `workbench sweep "
         "--methods tome,eventful,visionzip,sparsevlm --budget 31 --seeds 0:40` (its Pareto plot appears below).")


def _error(e: Exception) -> gr.Error:
    if isinstance(e, (InputError, CheckpointError)):
        return gr.Error(str(e), duration=None)
    import logging
    logging.getLogger(__name__).exception("compare-tab callback failed")
    return gr.Error(f"internal error ({type(e).__name__}: {e}); the app keeps running — please report it",
                    duration=None)


def build_compare_tab(model_name: str = "tinyvlm-shapes", sweep_dir=cc.SWEEP_DIR) -> None:
    """Build the tab's components and events inside the current Blocks / Tab context."""
    state = gr.State(None, time_to_live=3600)
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            upload = gr.File(label="video or event file", file_count="single", type="filepath", elem_id="cmp-upload")
            sample = gr.Dropdown(SAMPLE_NAMES, value=SAMPLE_NAMES[1], label="…or a generated sample", elem_id="cmp-sample")
            frames = gr.Radio(list(FRAME_CHOICES), value=8, label="frames", elem_id="cmp-frames")
            budget = gr.Slider(4, 196, value=31, step=1, label="budget: visual tokens per frame", elem_id="cmp-budget")
            methods = gr.CheckboxGroup(list(cc.COMPARE_METHODS), value=list(cc.COMPARE_METHODS), label="methods",
                                       elem_id="cmp-methods")
            question = gr.Textbox("", label="question (empty = captions)", elem_id="cmp-question")
            run = gr.Button("Compare", variant="primary", elem_id="cmp-run")
        with gr.Column(scale=3):
            outputs = gr.Markdown(elem_id="cmp-outputs")
            frame = gr.Slider(0, 7, value=0, step=1, label="frame", elem_id="cmp-frame")
            tokens = gr.Plot(label="tokens on the frame grid", show_label=False, elem_id="cmp-tokens")
            costs = gr.Plot(label="FLOPs and latency", show_label=False, elem_id="cmp-costs")
            pareto = gr.Plot(label="Pareto plot of the last sweep", show_label=False, elem_id="cmp-pareto")

    def views(a, t):
        if not isinstance(a, cc.CompareAnalysis):
            empty = message_figure("run a comparison first", "")
            return [empty, empty, cc.last_sweep_figure(sweep_dir)]
        v = cc.compare_views(a, t)
        return [v.tokens, v.costs, v.pareto]

    def on_run(path, sample_name, n_frames, budget_, methods_, question_, progress=gr.Progress()):
        try:
            a = cc.analyse_compare(path, None if path else sample_name, float(budget_), list(methods_ or []),
                                   str(question_ or ""), model_name, int(n_frames), progress, sweep_dir)
            figs = views(a, 0)
        except Exception as e:  # noqa: BLE001 - every failure becomes a message; the server keeps serving
            raise _error(e) from None
        slider = gr.Slider(minimum=0, maximum=a.num_frames - 1, value=0, step=1)
        return (a, cc.outputs_markdown(a), slider, *figs)

    def on_frame(t, a):
        try:
            return views(a, t)[0]
        except Exception as e:  # noqa: BLE001
            raise _error(e) from None

    run.click(on_run, [upload, sample, frames, budget, methods, question],
              [state, outputs, frame, tokens, costs, pareto], api_name="compare")
    frame.input(on_frame, [frame, state], [tokens], api_name="compare_frame", trigger_mode="always_last",
                show_progress="hidden")
