"""Streams: any-length input read frame by frame, captioned per window with the methods' state carried.

Real decoding (PyAV) of the shared real videos and of videos written here; the real TinyVLM code paths (the
small `tinyvlm-debug` preset: exactness and carried state do not depend on the weights).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.data.clip import Clip
from workbench.data.video import VideoSampling, read_video, write_video
from workbench.errors import CorruptFileError, InputError
from workbench.methods.anc import ANC, ANCConfig, route_clip
from workbench.methods.anc_modules import ANCModule
from workbench.methods.combined import STTFANC
from workbench.methods.sttf import STTF, STTFConfig
from workbench.models.registry import create_model
from workbench.pipeline import Dense, describe
from workbench.stream import FrameLog, StreamConfig, caption_stream, open_stream
from workbench.stream.encoders import as_tensor, frame_encoder
from workbench.stream.window import WindowSchedule, window_tokens

MODEL = "tinyvlm-debug"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small per-frame work: one torch thread (on a busy 2-core machine two threads make it ~10× slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    return create_model(MODEL)


@pytest.fixture(scope="module")
def anc_module(model):
    return ANCModule.for_model(model, seed=1)


def moving_frames(n: int, h: int = 72, w: int = 96, still_after: int | None = None) -> np.ndarray:
    """uint8 (n, h, w, 3): a textured background and a bright square moving right (still after a frame)."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, ((xx // 8 + yy // 8) % 2) * 90 + 40], -1).astype(np.uint8)
    out = np.repeat(base[None], n, 0)
    for i in range(n):
        x = 4 + 2 * min(i, still_after if still_after is not None else i) % (w - 24)
        out[i, 20:40, x: x + 16] = 250
    return out


def frames_of(path, first, end, **kw) -> np.ndarray:
    return np.stack([f.pixels for f in open_stream(path, **kw)][first:end])


# ---- the reader --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["carphone.mp4", "tree.avi"])
def test_stream_frames_are_read_video_frames_at_the_same_times(real_data, name):
    path = real_data / "video" / name
    native = open_stream(path, duration_s=2.0)
    got = np.stack([f.pixels for f in native])
    fps = native.info.meta["fps"]
    want = read_video(path, VideoSampling(fps=fps, duration_s=2.0)).frames
    assert got.shape == want.shape and np.array_equal(got, want)  # the declared rate, frames on screen
    resampled = np.stack([f.pixels for f in open_stream(path, fps=7.0, start_s=1.0, duration_s=2.0)])
    assert np.array_equal(resampled, read_video(path, VideoSampling(fps=7.0, start_s=1.0, duration_s=2.0)).frames)


def test_a_long_video_streams_to_the_end_in_contiguous_windows(model, tmp_path):
    path = write_video(tmp_path / "long.mp4", moving_frames(300), fps=25)  # 12 s: longer than any model budget
    log = FrameLog()
    ws = list(caption_stream(model, open_stream(path), STTF(STTFConfig(tau=0.05)), StreamConfig(window=16), log))
    assert len(log) == 300 and len(ws) == 19  # 18 full windows + the 12 frames left
    assert [w.first_frame for w in ws] == list(range(0, 300, 16)) and ws[-1].end_frame == 300 and ws[-1].partial
    assert all(a.end_s == pytest.approx(b.start_s) for a, b in zip(ws, ws[1:]))
    assert ws[0].start_s == 0.0 and ws[-1].end_s == pytest.approx(12.0)
    assert all(w.caption for w in ws)


def test_overlapping_windows_follow_the_stride():
    s = WindowSchedule(window=8, stride=3)
    ends = [n for n in range(1, 30) if s.ends_window(n)]
    assert ends == [8, 11, 14, 17, 20, 23, 26, 29] and s.tail(30) == (22, 30) and s.tail(29) is None
    assert WindowSchedule(window=8).tail(5) == (0, 5)
    with pytest.raises(ValueError):
        WindowSchedule(window=8, stride=9)


# ---- exactness with compression off -----------------------------------------------------------------------------

def _methods(anc_module):
    anc = ANC(anc_module, ANCConfig(forced="full"))
    return [Dense(), STTF(STTFConfig(tau=0.0)), anc, STTFANC(anc, STTFConfig(tau=0.0))]


@pytest.mark.parametrize("k", range(4), ids=["dense", "sttf", "anc", "sttf+anc"])
def test_stream_windows_equal_the_same_frames_as_separate_clips(real_data, model, anc_module, k):
    method = _methods(anc_module)[k]
    path = real_data / "video" / "carphone.mp4"
    ws = list(caption_stream(model, open_stream(path, duration_s=1.2), method, StreamConfig(window=16)))
    assert [w.n_frames for w in ws] == [16, 16, 3]  # 1.2 s · 29.97 fps: 35 whole frames
    enc = frame_encoder(method, model, "rgb")
    state = enc.start()
    outs = [enc.step(state, as_tensor(f.pixels)) for f in open_stream(path, duration_s=1.2)]
    for w in ws:
        frames = frames_of(path, w.first_frame, w.end_frame, duration_s=1.2)
        clip = Clip(frames=frames, modality="rgb", sample_id=f"window-{w.index}")
        want = method.visual_tokens(model, torch.from_numpy(frames)[None], "rgb", clip)[0]
        got = window_tokens(outs[w.first_frame: w.end_frame], enc.fuse)[0]
        assert torch.equal(got.embeds, want.embeds) and torch.equal(got.patch, want.patch)
        assert torch.equal(got.t_start, want.t_start) and torch.equal(got.size, want.size)
        d = describe(model, clip, method)
        assert w.caption == d.caption and w.tokens_per_frame == d.tokens_per_frame == 196.0


# ---- carried state ----------------------------------------------------------------------------------------------

def test_sttf_state_carries_across_window_edges(model, tmp_path):
    """32 frames as two windows of 16 = one 32-frame clip, patch for patch; a static stretch after frame 20
    costs the encoder nothing, the second window's start included."""
    path = write_video(tmp_path / "still.mkv", moving_frames(48, still_after=20), fps=25, codec="ffv1",
                       pix_fmt="yuv444p")
    sttf = STTF(STTFConfig(tau=0.05))
    log = FrameLog(keep_masks=True)
    ws = list(caption_stream(model, open_stream(path), sttf, StreamConfig(window=16), log))
    n = model.cfg.num_patches
    masks = np.stack([log.mask(t, n) for t in range(len(log))])  # (48, N)
    clip_masks = sttf.encode(model, torch.from_numpy(frames_of(path, 0, 32))[None], "rgb").mask[0].numpy()
    assert np.array_equal(masks[:32], clip_masks)
    assert masks[0].all() and not masks[16].all() and masks[22:].sum() == 0  # no re-encode at frames 16 and 32
    assert ws[2].tokens_computed == 0 and ws[2].tokens_to_decoder == n  # one carried token per patch
    assert ws[1].keyframes == 0 and ws[0].keyframes == 1


def test_anc_routing_is_the_same_with_or_without_windows(real_data, model, anc_module):
    anc = ANC(anc_module, ANCConfig(hysteresis=0.0))
    path = real_data / "video" / "carphone.mp4"
    log = FrameLog()
    list(caption_stream(model, open_stream(path, duration_s=1.0), anc, StreamConfig(window=8), log))
    frames = torch.from_numpy(frames_of(path, 0, None, duration_s=1.0))
    assert log.branch == route_clip(anc_module, frames, "rgb", anc.cfg).choices.tolist()


# ---- damage, events, subtitles ----------------------------------------------------------------------------------

def test_a_truncated_stream_keeps_its_windows_then_says_where_it_broke(model, tmp_path):
    path = write_video(tmp_path / "cut.mkv", moving_frames(100), fps=10)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    got = []
    with pytest.raises(CorruptFileError, match="truncated or damaged") as e:
        for w in caption_stream(model, open_stream(path), Dense(), StreamConfig(window=16)):
            got.append(w)
    import re
    ends_at = float(re.search(r"ends at ([0-9.]+) s", str(e.value)).group(1))
    assert "cut.mkv" in str(e.value) and len(got) >= 2 and got[-1].end_s == pytest.approx(ends_at, abs=0.006)
    assert [w.first_frame for w in got] == [16 * i for i in range(len(got))]  # every frame before it kept


def test_corrupt_bytes_mid_stream_keep_the_windows_before_the_damage(model, tmp_path):
    path = write_video(tmp_path / "broken.mkv", moving_frames(100), fps=10, codec="mjpeg", pix_fmt="yuvj420p")
    data = bytearray(path.read_bytes())
    at = int(len(data) * 0.5)
    data[at: at + 3000] = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    got = []
    with pytest.raises(CorruptFileError, match="damaged after") as e:
        for w in caption_stream(model, open_stream(path), Dense(), StreamConfig(window=16)):
            got.append(w)
    assert "broken.mkv" in str(e.value) and 2 <= len(got) <= 4 and got[-1].end_frame < 100


def test_an_event_recording_streams_with_a_consistent_gesture_per_window(real_data, model):
    src = open_stream(real_data / "events" / "dvs128_walking.aedat", fps=8.0)
    log = FrameLog()
    ws = list(caption_stream(model, src, STTF(STTFConfig(source="events", tau=0.2)), StreamConfig(window=8), log))
    assert src.info.modality == "events" and ws and all(w.gesture in model.cfg.gesture_classes for w in ws)
    assert len(log) == ws[-1].end_frame
    from workbench.stream.captions import caption_class
    names = model.cfg.gesture_classes
    assert all(caption_class(w.caption) in (None, names.index(w.gesture)) for w in ws)


def test_bad_stream_knobs_are_input_errors(model):
    with pytest.raises(InputError, match="max_frames"):
        list(caption_stream(model, open_stream("shapes:1"), None, StreamConfig(window=64)))
    with pytest.raises(InputError, match="fit"):
        open_stream("shapes:1", fit="zoom")
    with pytest.raises(InputError, match="no such file"):
        open_stream("/no/such/video.mp4")
    with pytest.raises(InputError, match="events"):
        list(caption_stream(model, open_stream("shapes:1"), STTF(STTFConfig(source="events"))))


def test_chunked_sttf_stream_gives_the_frame_by_frame_windows(model, tmp_path):
    """STTF encoding c frames per call (chunk 4, window 8, stride 6: chunk and window edges out of step) yields
    the windows of the frame-by-frame stream: same frames, same computed masks, same tokens."""
    path = tmp_path / "s.mp4"
    from workbench.data.shapesworld import make_clip
    write_video(path, make_clip(5).frames, fps=8)
    cfg = StreamConfig(window=8, stride=6)
    one = list(caption_stream(model, open_stream(path), STTF(STTFConfig(tau=0.1)), cfg))
    four = list(caption_stream(model, open_stream(path), STTF(STTFConfig(tau=0.1, chunk=4)), cfg))
    assert [(w.first_frame, w.end_frame) for w in four] == [(w.first_frame, w.end_frame) for w in one]
    for a, b in zip(one, four):
        assert a.tokens_per_frame == b.tokens_per_frame and a.caption == b.caption
    enc1 = frame_encoder(STTF(STTFConfig(tau=0.1)), model, "rgb")
    enc4 = frame_encoder(STTF(STTFConfig(tau=0.1, chunk=4)), model, "rgb")
    s1, s4 = enc1.start(), enc4.start()
    o1, o4 = [], []
    for f in open_stream(path):
        o1 += enc1.push(s1, as_tensor(f.pixels))
        o4 += enc4.push(s4, as_tensor(f.pixels))
        assert len(o4) % 4 == 0 and len(o4) <= len(o1)
    o4 += enc4.flush(s4)
    assert len(o4) == len(o1) == 16
    for a, b in zip(o1, o4):
        assert torch.equal(a.computed, b.computed) and a.key == b.key and a.flops == b.flops
        torch.testing.assert_close(a.tokens, b.tokens, atol=1e-5, rtol=1e-5)
