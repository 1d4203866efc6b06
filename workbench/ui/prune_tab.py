"""The dashboard's "question" tab: decoder-side pruning (SparseVLM, FastV, random, STTF + either) made visible
(Gradio components only; the work is in `prune_callbacks.py`).

Ask a question about an input; the dense answer and the pruned answer sit side by side; a frame slider and a
decoder-layer selector drive the patch overlay (kept / pruned / recycled-into-cluster on the frame grid, or the
method's scores), the patches still present per frame, the prompt with SparseVLM's raters highlighted by
relevance, and the visual tokens entering every decoder sublayer. API endpoints: `/prune` (upload, sample,
frames, method, question, keep, rule, recycle, K, τ, counts, frame, layer, view) and `/prune_frame` (frame,
layer, view) — per-session state only; bad knobs (an empty question, a budget above the tokens present, a keep
the decoder cannot reach) are messages, never tracebacks.
"""
from __future__ import annotations

import gradio as gr

from workbench.errors import CheckpointError, InputError
from workbench.ui import prune_callbacks as pc
from workbench.ui.callbacks import FRAME_CHOICES, SAMPLE_NAMES
from workbench.ui.inputs import sample_clip
from workbench.ui.session import SessionCache
from workbench.viz.style import message_figure

INTRO = ("Decoder-side pruning: **SparseVLM** keeps the visual tokens the question's *raters* attend to "
         "(training-free, with token recycling), **FastV** those the last prompt token attends to, **random** a "
         "seeded subset at the same depths. Pruning happens once, inside the 4-layer decoder at prefill (default "
         "depths 0.5 / 1.5 / 2.5: after the attention of layers 0, 1, 2); pruned tokens leave the hidden states "
         "and the caches. *keep* is the SparseVLM paper's count: the mean over the decoder's sublayers of the "
         "visual tokens entering them. The same runs from the command line: `workbench caption shapes:7 "
         "--method sparsevlm --keep 0.22 --prompt \"what color is the star\"`.")
LAYERS = [("decoder input", -1)] + [(f"leaving layer {i}", i) for i in range(4)]


def _error(e: Exception) -> gr.Error:
    if isinstance(e, (InputError, CheckpointError)):
        return gr.Error(str(e), duration=None)
    import logging
    logging.getLogger(__name__).exception("question-tab callback failed")
    return gr.Error(f"internal error ({type(e).__name__}: {e}); the app keeps running — please report it",
                    duration=None)


def sample_questions(name: str | None) -> list[str]:
    """The generated sample's questions (colour questions first), or a default for samples without any."""
    try:
        qa = sample_clip(name).qa if name else []
    except InputError:
        qa = []
    qs = [q for q, _ in qa]
    return sorted(qs, key=lambda q: not q.startswith("what color is the ")) or ["describe the clip"]


def build_prune_tab(model_name: str = "tinyvlm-shapes") -> None:
    """Build the tab's components and events inside the current Blocks / Tab context."""
    state = gr.State(None, time_to_live=3600)
    gr.Markdown(INTRO)
    first = SAMPLE_NAMES[1]
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            upload = gr.File(label="video or event file", file_count="single", type="filepath", elem_id="prune-upload")
            sample = gr.Dropdown(SAMPLE_NAMES, value=first, label="…or a generated sample", elem_id="prune-sample")
            frames = gr.Radio(list(FRAME_CHOICES), value=16, label="frames", elem_id="prune-frames")
            questions = sample_questions(first)
            question = gr.Dropdown(questions, value=questions[0], allow_custom_value=True,
                                   label="question (pick one of the sample's or type your own)", elem_id="prune-question")
            method = gr.Radio(list(pc.PRUNE_METHODS), value="SparseVLM", label="method", elem_id="prune-method")
            with gr.Accordion("knobs", open=True):
                keep = gr.Slider(0.13, 1.0, value=0.22, step=0.01, label="keep (mean over decoder sublayers)")
                rule = gr.Radio(["fixed", "rank"], value="fixed", label="SparseVLM: how many (fixed budgets / rank(P))")
                recycle = gr.Checkbox(True, label="SparseVLM: recycle pruned tokens (DPC-kNN clusters)")
                K = gr.Slider(0.5, 3.5, value=0.5, step=0.5, label="FastV depth K (layers; 0.5 = inside layer 0)")
                tau = gr.Slider(0, 0.5, value=0.05, step=0.005, label="STTF threshold τ (STTF + … modes)")
                counts = gr.Textbox("", label="token counts after each depth (e.g. 600, 300, 150; empty = use keep)")
            run = gr.Button("Answer", variant="primary", elem_id="prune-run")
        with gr.Column(scale=3):
            answers = gr.Markdown(elem_id="prune-answers")
            with gr.Row():
                frame = gr.Slider(0, 15, value=0, step=1, label="frame", elem_id="prune-frame")
                layer = gr.Dropdown(LAYERS, value=0, label="decoder layer", elem_id="prune-layer")
                view = gr.Radio(["decision", "score"], value="decision", label="overlay")
            with gr.Row():
                overlay = gr.Plot(label="patch overlay", show_label=False, elem_id="prune-overlay")
                with gr.Column():
                    raters = gr.Plot(label="prompt raters", show_label=False, elem_id="prune-raters")
                    per_frame = gr.Plot(label="patches per frame", show_label=False, elem_id="prune-per-frame")
            layers = gr.Plot(label="visual tokens per decoder sublayer", show_label=False, elem_id="prune-layers")

    def views(cache, t, lay, v):
        if not isinstance(cache, SessionCache) or cache.last_prune is None:
            return [message_figure("answer a question first", "")] * 4
        pv = pc.prune_views(cache.last_prune, t, lay, v)
        return [pv.overlay, pv.layers, pv.raters, pv.per_frame]

    def on_run(path, sample_name, n_frames, label, q, keep_, rule_, recycle_, K_, tau_, counts_, t, lay, v, cache,
               progress=gr.Progress()):
        cache = cache if isinstance(cache, SessionCache) else SessionCache()
        try:
            spec = pc.PruneSpec.from_ui(label, q, keep_, rule_, recycle_, K_, tau_, counts_)
            a = pc.analyse_prune(path, None if path else sample_name, spec, cache, model_name, int(n_frames), progress)
            cache.last_prune = a
            figs = views(cache, 0, lay, v)
        except Exception as e:  # noqa: BLE001 - every failure becomes a message; the server keeps serving
            raise _error(e) from None
        slider = gr.Slider(minimum=0, maximum=a.num_frames - 1, value=0, step=1)
        return (cache, pc.answer_markdown(a), slider, *figs)

    def on_frame(t, lay, v, cache):
        try:
            return views(cache, t, lay, v)
        except Exception as e:  # noqa: BLE001
            raise _error(e) from None

    plots = [overlay, layers, raters, per_frame]
    run.click(on_run, [upload, sample, frames, method, question, keep, rule, recycle, K, tau, counts, frame, layer,
                       view, state], [state, answers, frame, *plots], api_name="prune")
    frame.input(on_frame, [frame, layer, view, state], plots, api_name="prune_frame", trigger_mode="always_last",
                show_progress="hidden")
    for w in (layer, view):
        w.change(on_frame, [frame, layer, view, state], plots, api_visibility="private", show_progress="hidden")
    sample.change(lambda s: gr.Dropdown(choices=sample_questions(s), value=sample_questions(s)[0]), [sample],
                  [question], api_visibility="private", show_progress="hidden")
