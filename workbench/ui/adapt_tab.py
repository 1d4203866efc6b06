"""The dashboard's "cloud-device" tab (Gradio components only; the work is in `adapt_callbacks.py`).

Choose a shifted domain and run adaptation rounds (a real cloud process is started on a free loopback port)
with a progress bar; then: per-round CIDEr on the target and the source domain vs the benchmark's baselines;
uplink / downlink bytes per round, stacked, vs send-everything; each streamed sample's confidence against the
gate; one uploaded sample's per-token uncertainty on its frame with the tokens that stayed on the device; the
last update's per-tensor sparsity and bits. API endpoints: `/adapt` (domain, rounds, clips per round) and
`/adapt_tokens` (sample, frame) — per-session state only.

`ui/layout.py` builds it inside the dashboard's `gr.Tab("cloud-device")`.
"""
from __future__ import annotations

import gradio as gr

from workbench.errors import CheckpointError, InputError
from workbench.ui import adapt_callbacks as ac
from workbench.viz.style import message_figure

INTRO = ("Cloud-device continual adaptation: the pocket device model (4-bit, 30 % pruned, ρ = 0.1 tokens) captions "
         "a stream from a shifted domain, uploads only low-confidence samples without their most uncertain tokens "
         "(UTS), the cloud teacher labels them and trains the device's adapters (AKD), and sends back a top-k (ρ = 0.5) 8-bit "
         "weight delta (DWC) with a domain router, so that only clips of the shifted domain meet the adapted weights "
         "(source clips keep the pocket's). A round takes a minute or two on 2 cores. The same runs from the command line: "
         "`workbench adapt --domain night --rounds 3 --json`.")


def _error(e: Exception) -> gr.Error:
    if isinstance(e, (InputError, CheckpointError)):
        return gr.Error(str(e), duration=None)
    import logging
    logging.getLogger(__name__).exception("adapt callback failed")
    return gr.Error(f"internal error ({type(e).__name__}: {e}); the app keeps running — please report it",
                    duration=None)


def build_adapt_tab(pocket: str | None = None, teacher: str | None = None, quick: bool = False) -> None:
    """Build the tab inside the current Blocks / Tab context (pocket / teacher: None = the shipped files;
    quick: smoke-sized rounds, for tests)."""
    state = gr.State(None, time_to_live=3600)
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            domain = gr.Dropdown(list(ac.DOMAIN_CHOICES), value=ac.DOMAIN_CHOICES[0], label="shifted domain",
                                 elem_id="adapt-domain")
            rounds = gr.Slider(1, 5, value=2, step=1, label="rounds", elem_id="adapt-rounds")
            stream = gr.Slider(1, 32, value=8, step=1, label="clips streamed per round", elem_id="adapt-stream")
            run = gr.Button("Run rounds", variant="primary", elem_id="adapt-run")
            summary = gr.Markdown(elem_id="adapt-summary")
        with gr.Column(scale=3):
            accuracy = gr.Plot(label="accuracy", show_label=False, elem_id="adapt-accuracy")
            wire = gr.Plot(label="bytes", show_label=False, elem_id="adapt-bytes")
            confidence = gr.Plot(label="gate", show_label=False, elem_id="adapt-confidence")
            with gr.Row():
                sample = gr.Dropdown([], label="uploaded sample", elem_id="adapt-sample")
                frame = gr.Slider(0, 15, value=0, step=1, label="frame", elem_id="adapt-frame")
            tokens = gr.Plot(label="tokens", show_label=False, elem_id="adapt-tokens")
            delta = gr.Plot(label="delta", show_label=False, elem_id="adapt-delta")

    def on_run(domain_, rounds_, stream_, progress=gr.Progress()):
        try:
            s = ac.run_rounds(domain_, int(rounds_), int(stream_), quick, pocket, teacher,
                              lambda f, text: progress(f, desc=text))
            v = ac.adapt_views(s)
            first = s.uploaded[0] if s.uploaded else None
            tok = ac.token_view(s, first, 0) if first else message_figure("no sample was uploaded", "tokens")
        except Exception as e:  # noqa: BLE001 - every failure becomes a message; the server keeps serving
            raise _error(e) from None
        return (s, ac.summary_markdown(s), v.accuracy, v.bytes, v.confidence,
                gr.Dropdown(choices=s.uploaded, value=first), tok, v.delta)

    def on_tokens(sample_id, frame_, s):
        if s is None or not sample_id:
            return message_figure("run some rounds first", "tokens")
        try:
            return ac.token_view(s, sample_id, int(frame_))
        except Exception as e:  # noqa: BLE001
            raise _error(e) from None

    run.click(on_run, [domain, rounds, stream], [state, summary, accuracy, wire, confidence, sample, tokens, delta],
              api_name="adapt", concurrency_limit=1)
    for comp in (sample, frame):
        comp.change(on_tokens, [sample, frame, state], tokens, api_name="adapt_tokens" if comp is sample else False)
