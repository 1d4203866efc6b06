"""`workbench caption --fps …` as a user runs it (real subprocesses), its subtitle files read back by FFmpeg's own
SubRip / WebVTT demuxers (PyAV), and `python app.py` honouring gradio's environment variables."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest

from workbench.data.video import write_video

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
REPO = Path(__file__).resolve().parents[1]


def wb(*args, check=True):
    p = subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True, text=True, env=ENV,
                       timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"workbench {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return p


def read_cues(path: Path) -> list[tuple[float, float, str]]:
    """(start s, end s, text) of every cue, parsed by FFmpeg's demuxer for the file's format."""
    out = []
    with av.open(str(path)) as c:
        s = c.streams.subtitles[0]
        for pkt in c.demux(s):
            if pkt.size == 0:
                continue
            for sub in pkt.decode():
                text = sub.dialogue.decode() if hasattr(sub, "dialogue") else str(sub)
                out.append((float(pkt.pts * s.time_base), float((pkt.pts + pkt.duration) * s.time_base), text))
    return out


def test_stream_json_and_subtitles_of_a_real_video(real_data, tmp_path):
    srt, vtt = tmp_path / "carphone.srt", tmp_path / "carphone.vtt"
    p = wb("caption", str(real_data / "video" / "carphone.mp4"), "--model", "tinyvlm-debug", "--fps", "native",
           "--method", "sttf", "--json", "--srt", str(srt), "--vtt", str(vtt))
    rec = json.loads(p.stdout)
    ws = rec["windows"]
    assert rec["frames"] == 120 and len(ws) == 8 and rec["fps"] == pytest.approx(29.97, abs=0.01)
    assert all({"start_s", "end_s", "caption", "tokens_per_frame"} <= set(w) for w in ws)
    assert rec["rtf"] == pytest.approx(rec["wall_s"] / rec["media_s"], rel=1e-3, abs=2e-4) and rec["media_s"] == pytest.approx(4.004, abs=0.01)
    assert ws[0]["tokens_per_frame"] >= 196 / 16 and rec["error"] is None
    assert any("centre-cropped" in n for n in rec["notes"]) and any("ShapesWorld" in n for n in rec["notes"])
    for path, fmt in ((srt, "srt"), (vtt, "webvtt")):
        with av.open(str(path)) as c:
            assert c.format.name == fmt
        cues = read_cues(path)
        assert len(cues) == len(ws)
        for (a, b, text), w in zip(cues, ws):
            assert a == pytest.approx(w["start_s"], abs=1e-3) and b == pytest.approx(w["end_s"], abs=1e-3)
            assert w["caption"] in text
    assert vtt.read_text().startswith("WEBVTT\n\n") and srt.read_text().startswith("1\n00:00:00,000 --> ")


def test_text_mode_prints_timestamped_windows_then_a_summary(tmp_path):
    p = wb("caption", "shapes:5", "--model", "tinyvlm-debug", "--fps", "native", "--window", "8", "--stride", "4")
    lines = p.stdout.strip().splitlines()
    assert [ln.split("]")[0] for ln in lines] == ["[00:00.000 → 00:01.000", "[00:00.500 → 00:01.500",
                                                   "[00:01.000 → 00:02.000"]
    assert "3 windows" in p.stderr and "real-time factor" in p.stderr


def test_sttf_streams_encode_a_stride_of_frames_per_call_unless_told(tmp_path):
    """A stream's STTF encodes `stride` frames per call by default (the caption waits for them anyway) and gives
    the captions of frame-by-frame encoding; --chunk 1 is frame by frame."""
    args = ("caption", "shapes:5", "--model", "tinyvlm-debug", "--fps", "native", "--window", "8", "--stride", "4",
            "--method", "sttf", "--tau", "0.1", "--json")
    auto, one = (json.loads(wb(*args, *extra).stdout) for extra in ((), ("--chunk", "1")))
    assert auto["method_config"]["chunk"] == 4 and one["method_config"]["chunk"] == 1
    assert [w["caption"] for w in auto["windows"]] == [w["caption"] for w in one["windows"]]
    assert [w["tokens_computed"] for w in auto["windows"]] == [w["tokens_computed"] for w in one["windows"]]


def test_a_truncated_file_prints_its_windows_then_exits_2(tmp_path):
    yy, xx = np.mgrid[0:64, 0:80]
    frames = np.stack([np.stack([xx * 3 % 255, yy * 4 % 255, np.full_like(xx, (i * 9) % 255)], -1)
                       for i in range(80)]).astype(np.uint8)
    path = write_video(tmp_path / "cut.mkv", frames, fps=10)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    srt = tmp_path / "cut.srt"
    p = wb("caption", str(path), "--model", "tinyvlm-debug", "--fps", "native", "--srt", str(srt), check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    err = p.stderr.strip().splitlines()[-1]
    assert err.startswith("error: ") and "cut.mkv" in err and "truncated" in err and "windows before it were kept" in err
    printed = [ln for ln in p.stdout.splitlines() if ln.startswith("[")]
    assert len(printed) >= 1 and len(read_cues(srt)) == len(printed)


def test_an_event_file_streams_a_gesture_per_window(real_data):
    rec = json.loads(wb("caption", str(real_data / "events" / "dvs128_walking.aedat"), "--model", "tinyvlm-debug",
                        "--fps", "8", "--window", "8", "--json").stdout)
    assert rec["modality"] == "events" and rec["detected_format"] == "aedat2"
    assert rec["windows"] and all(w["gesture"] for w in rec["windows"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_python_app_py_listens_where_gradio_server_port_says():
    port = _free_port()
    env = {**ENV, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1"}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        status, deadline = None, time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    status = r.status
                    break
            except OSError:
                time.sleep(0.5)
        assert status == 200, proc.stdout.read() if proc.poll() is not None else "no answer"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
