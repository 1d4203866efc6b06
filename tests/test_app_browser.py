"""The dashboard in a real headless Chromium (Playwright driving Debian's /usr/bin/chromium): upload a real
video, run STTF, see the caption and the patch overlay, scrub to another frame. Screenshot in test-artifacts/."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

MODEL = "tinyvlm-debug"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; `make system` does it)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(dashboard_server):
    return dashboard_server  # tests/conftest.py: the dashboard on tinyvlm-debug, served for this module


def overlay_title(page) -> str:
    return page.locator("#overlay .gtitle").first.text_content() or ""


def test_upload_real_video_run_sttf_and_scrub(browser, server, real_data, tmp_path):
    video_dir = real_data / "video"
    if not video_dir.is_dir():
        pytest.skip(f"{video_dir} is missing")
    video = tmp_path / "carphone.mp4"  # H.264 176×144, 4 s (see the folder's README)
    shutil.copy(video_dir / "carphone.mp4", video)
    page = browser.new_page(viewport={"width": 1600, "height": 2200})
    try:
        page.goto(server.local_url)
        page.wait_for_selector("#run", timeout=60_000)
        page.set_input_files("#upload input[type=file]", str(video))
        page.wait_for_selector("#upload >> text=carphone.mp4", timeout=30_000)
        page.locator("#frames label", has_text="8").click()
        page.locator("#method label", has_text="STTF").first.click()
        page.click("#run")
        page.wait_for_function("() => (document.querySelector('#caption textarea') || {}).value", timeout=180_000)
        page.wait_for_selector("#overlay .js-plotly-plot", timeout=60_000)
        caption = page.input_value("#caption textarea")
        assert caption.strip() and page.input_value("#caption-dense textarea").strip()
        title = overlay_title(page)
        assert title.startswith("frame 0 ·") and "recomputed" in title and "keyframe" in title
        assert page.locator("#overlay .layer-above image, #overlay image").count() >= 1  # the frame itself
        assert "carphone" in page.locator("#details").inner_text()
        # scrub: the number box of the slider drives every view
        box = page.locator("#frame input[type=number]")
        box.fill("5")
        box.press("Enter")
        page.wait_for_function("() => { const t = document.querySelector('#overlay .gtitle');"
                               " return t && t.textContent.startsWith('frame 5') }", timeout=60_000)
        assert "fused" in overlay_title(page) or "recomputed" in overlay_title(page)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard_sttf_carphone.png"), full_page=True)
        assert (ARTIFACTS / "dashboard_sttf_carphone.png").stat().st_size > 10_000
    finally:
        page.close()


def test_corrupt_upload_shows_an_error_toast(browser, server, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    try:
        page.goto(server.local_url)
        page.wait_for_selector("#run", timeout=60_000)
        page.set_input_files("#upload input[type=file]", str(bad))
        page.wait_for_selector("#upload >> text=broken.mp4", timeout=30_000)
        page.click("#run")
        page.wait_for_selector("text=broken.mp4:", timeout=60_000)  # the reader's message, naming the file
    finally:
        page.close()
