"""The app with a Hugging Face model: the clip tab's model box (a real Gradio server, gradio_client) and the same
trace and figures on the model's own patch grid (4×4 here: 16-px tiny towers with 4-px patches; 24×24 for a
CLIP-336, 27×27 for a SigLIP-384), the model's name and grid in the details."""
from __future__ import annotations

import json

import pytest

from workbench.ui.callbacks import MethodSpec, analyse, details_markdown, render_views, summary
from workbench.ui.session import SessionCache
from workbench.viz.overlay import decision_grid


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folders(hf_folders):
    return hf_folders


@pytest.mark.parametrize("family", ("llava", "qwen2vl", "onevision"))
def test_clip_tab_figures_on_the_models_grid(folders, family):
    name = f"hf:{folders[family]}"
    a = analyse(None, "slow motion", MethodSpec("sttf", tau=0.02), SessionCache(), name, 8, metrics=False)
    step = 2 if family == "qwen2vl" else 1  # Qwen2-VL's tower sees frame pairs
    assert decision_grid(a.result.trace, 0).codes.shape == (4, 4)  # the model's 4×4 patch grid
    v = render_views(a, 5)
    assert v.overlay.layout.title.text.startswith(f"frame {5 // step} ·")
    assert "per frame" in v.tokens.layout.title.text
    md = details_markdown(a)
    assert name in md and "4×4 patches per tower frame" in md
    rows = {r["metric"]: r for r in summary(a).iter_rows(named=True)}
    dense_lm = rows[next(k for k in rows if k.startswith("visual tokens to the decoder"))]["dense"]
    # LM tokens per tower frame: Qwen2-VL merges 2×2; OneVision pools 2×2 and adds one newline token per video
    assert dense_lm == {"llava": 16, "qwen2vl": 4, "onevision": 4 + 1 / 8}[family]


def test_model_box_runs_an_hf_folder_through_the_server(dashboard_server, folders):
    from gradio_client import Client
    c = Client(dashboard_server.local_url, verbose=False)
    args = (None, "slow motion", 8, "STTF", "threshold", 0.02, 31, 0, "pixels", 0.1, False, "decision",
            "binned frames", f"hf:{folders['llava']}")
    out = c.predict(*args, api_name="/analyse")
    details, overlay = out[-1], out[4]
    assert f"hf:{folders['llava']}" in details and "LLaVA-1.5" in details
    assert json.loads(overlay["plot"])["layout"]["title"]["text"].startswith("frame 0 ·")
    bad = args[:-1] + ("hf:some-org/not-downloaded",)
    with pytest.raises(Exception, match="not in the local Hugging Face cache"):
        c.predict(*bad, api_name="/analyse")
    assert c.predict(*args[:-1], api_name="/analyse")[-1].count("tinyvlm-debug")  # the box left out: the app's model


def test_question_tab_on_an_hf_model(folders):
    """The decoder-layer views place the LM's own tokens (Qwen2-VL: merged 2×2 windows of frame pairs)."""
    from workbench.ui.prune_callbacks import PruneSpec, analyse_prune, prune_views
    a = analyse_prune(None, "slow motion", PruneSpec("sparsevlm", "what color is the background", keep=0.5),
                      SessionCache(), f"hf:{folders['qwen2vl']}", 8)
    v = prune_views(a, 5, 1)
    assert v.overlay.layout.title.text.startswith("frame 2 · leaving layer 1")  # tower frame 2 holds frames 4–5
    assert a.words[1:4] == ["what", "color", "is"] and abs(a.result.decoder_keep - 0.5) < 0.1  # after <|vision_end|>
