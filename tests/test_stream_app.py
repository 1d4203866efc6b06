"""The dashboard's stream tab: its callbacks called directly (generated stream, real video, damaged upload), a
real Gradio server driven by gradio_client, and a headless-Chromium run (subtitle track, no title overlap)."""
from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from workbench.data.video import write_video
from workbench.errors import InputError
from workbench.ui import stream_callbacks as sc
from workbench.ui.methods import MethodSpec

MODEL = "tinyvlm-debug"
SHAPES = list(sc.STREAM_SAMPLES)[0]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_generated_stream_runs_end_to_end_through_the_callbacks():
    a = sc.analyse_stream(None, SHAPES, sc.StreamSpec(MethodSpec("sttf", tau=0.05)), MODEL)
    assert a.num_frames == 300 and len(a.windows) == 19 and a.error is None and a.rtf > 0
    table = sc.windows_table(a)
    assert table.height == 19 and table["tokens_per_frame"].min() >= round(196 / 16, 1)
    with av.open(a.subtitles) as c:  # FFmpeg reads the subtitle file back
        assert c.format.name == "webvtt" and c.streams.subtitles
    assert Path(a.video).is_file()
    v = sc.stream_views(a, 299)
    assert v.overlay.layout.title.text.startswith("frame 299 (11.96 s) · window 18")
    bars = next(t for t in v.timeline.data if t.name == "tokens computed")
    assert len(bars.y) == 300 and bars.y[0] == 196 and list(bars.y) == a.log.computed
    assert "real-time factor" in sc.summary_markdown(a) and "ShapesWorld" not in " ".join(a.notes)


def test_a_real_video_says_how_it_was_fitted_and_what_the_model_knows(real_data, tmp_path):
    video = tmp_path / "carphone.mp4"
    shutil.copy(real_data / "video" / "carphone.mp4", video)
    a = sc.analyse_stream(str(video), None, sc.StreamSpec(MethodSpec("dense"), fps=10.0, window=8, fit="pad"), MODEL)
    assert a.num_frames == 40 and len(a.windows) == 5
    md = sc.summary_markdown(a)
    assert "letterboxed" in md and "procedural ShapesWorld" in md and "carphone.mp4" in md
    assert "--model hf:NAME_OR_PATH" in md  # where to go for captions of real scenes (issue 16 → issue 14)
    assert np.allclose(sc.frame_pixels(a, 0)[:, :5], 0)  # letterbox: black bars top and bottom


def test_damage_keeps_the_windows_before_it_and_bad_uploads_name_the_file(tmp_path):
    frames = (np.random.default_rng(0).random((60, 3, 48, 64)) * 0.2 + np.linspace(0, 0.8, 60)[:, None, None, None])
    path = write_video(tmp_path / "cut.mkv", frames.astype(np.float32), fps=10)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    a = sc.analyse_stream(str(path), None, sc.StreamSpec(MethodSpec("sttf")), MODEL)
    assert a.windows and a.error and "cut.mkv" in a.error and "broke mid-stream" in sc.summary_markdown(a)
    bad = tmp_path / "noise.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    with pytest.raises(InputError, match="noise.mp4") as e:
        sc.analyse_stream(str(bad), None, sc.StreamSpec(), MODEL)
    assert str(tmp_path) not in str(e.value)
    with pytest.raises(InputError, match="window"):
        sc.StreamSpec(window=64)


@pytest.fixture(scope="module")
def server(dashboard_server):
    return dashboard_server  # tests/conftest.py: the dashboard on tinyvlm-debug, served for this module


def test_stream_endpoints_over_a_real_server(server, tmp_path):
    from gradio_client import Client, handle_file
    client = Client(server.local_url, verbose=False)
    video, summary, table, timeline, slider, overlay = client.predict(
        None, SHAPES, "STTF", 0.05, 0.1, "native", 16, 0, "crop", api_name="/stream")
    assert video["subtitles"] and "19 windows" in summary and len(table["data"]) == 19
    timeline2, overlay2 = client.predict(120, api_name="/stream_frame")
    assert "frame 120" in str(overlay2)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with pytest.raises(Exception, match="broken.mp4"):
        client.predict(handle_file(str(bad)), None, "STTF", 0.05, 0.1, "native", 16, 0, "crop", api_name="/stream")
    again = client.predict(None, SHAPES, "dense", 0.05, 0.1, "8", 8, 0, "crop", api_name="/stream")
    assert "resampled" in again[1]  # the server kept serving


@pytest.mark.browser
def test_stream_tab_plays_the_video_with_its_caption_track(server):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; `make system` does it)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = b.new_page(viewport={"width": 1500, "height": 1800})
        try:
            page.goto(server.local_url)
            page.wait_for_selector("#run", timeout=60_000)
            # clip tab, STTF: the router timeline's title and its note must not overlap
            page.click("#run")
            page.wait_for_selector("#timeline .gtitle", timeout=120_000)
            title = page.locator("#timeline .gtitle").first.bounding_box()
            note = page.locator("#timeline .annotation", has_text="activity").first.bounding_box()
            assert title and note and title["y"] + title["height"] <= note["y"] + 0.5
            page.get_by_role("tab", name="stream").click()
            page.click("#stream-run")
            page.wait_for_selector("#stream-timeline .js-plotly-plot", timeout=120_000)
            page.wait_for_selector("#stream-video video", timeout=60_000)
            assert page.locator("#stream-video track").count() == 1
            assert "19 windows" in page.locator("#stream-summary").inner_text()
        finally:
            page.close()
            b.close()


def test_the_clip_tab_details_say_how_the_video_was_fitted_and_what_the_model_knows(real_data, tmp_path):
    from workbench.ui import callbacks as cb
    from workbench.ui.session import SessionCache
    video = tmp_path / "bikes.mp4"
    shutil.copy(real_data / "video" / "bikes.mp4", video)
    a = cb.analyse(str(video), None, MethodSpec("dense"), SessionCache(), MODEL, 8, metrics=False)
    md = cb.details_markdown(a)
    assert "640×272 picture (2.35:1) was centre-cropped" in md and "procedural ShapesWorld" in md
