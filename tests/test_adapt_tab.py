"""The cloud-device tab: its figures as pure functions, then the tab standalone in a `gr.Blocks()` on a real
Gradio server, driven by gradio_client (which runs a real round against a real cloud process, tiny models)."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from workbench.errors import InputError
from workbench.ui import adapt_callbacks as ac
from workbench.viz import adapt as va

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_figures_are_pure_functions_of_tables():
    s = ac.demo_session()
    v = ac.adapt_views(s)
    assert [t.name for t in v.accuracy.data][:2] == ["this session (UTS+AKD+DWC) · target",
                                                     "this session (UTS+AKD+DWC) · source"]
    assert {t.name for t in v.bytes.data} >= {"uplink (UTS payloads)", "downlink (DWC update)",
                                               "send everything (uplink)"}
    assert {t.name for t in v.confidence.data} == {"uploaded", "kept on the device"}
    assert v.delta.data[0].x == ("projector.weight",)
    fig = va.uncertainty_figure(np.zeros((3, 112, 112)), np.eye(14), np.eye(14) == 0)
    assert len(fig.layout.shapes) == 14  # the diagonal tokens were not sent and are outlined
    assert va.bytes_figure(pl.DataFrame()).layout.annotations[0].text == "run some rounds first"
    with pytest.raises(InputError):
        ac.session_config("fog", 1, 1)
    with pytest.raises(InputError):
        ac.session_config("night", 9, 1)


def test_tab_standalone_on_a_real_server(tiny_adapt_files):
    import gradio as gr
    from gradio_client import Client
    from workbench.ui.adapt_tab import build_adapt_tab
    with gr.Blocks() as demo:
        build_adapt_tab(*map(str, tiny_adapt_files), quick=True)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        with pytest.raises(Exception, match="fog"):  # refused with a clear message (the dropdown checks first)
            client.predict("fog", 1, 2, api_name="/adapt")
        out = client.predict("night", 1, 2, api_name="/adapt")  # after the error the server keeps serving
        summary = out[0]
        assert "night" in summary and "send-everything" in summary and "downlink per round" in summary
        assert "2 samples uploaded" in summary or "of 2 samples uploaded" in summary
    finally:
        demo.close()
