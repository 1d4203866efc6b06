"""Video reader and writer: real decoding of the shared real videos and of videos written here with PyAV.

Generated test videos encode their frame index in their brightness (left half = tens, right half = units,
16 + 20·digit), so a test can tell exactly which source frame was sampled; H.264 keeps flat areas within ±2.
"""
from __future__ import annotations

import os
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.data.video import (MAX_FILE_BYTES, VideoSampling, read_video, sample_times, write_video)
from workbench.errors import (CorruptFileError, EmptyInputError, InputError, InputTooLargeError,
                              UnsupportedFormatError)

REAL_VIDEOS = {  # name → (width, height, duration s)
    "tree.avi": (320, 240, 29.6),
    "bikes.mp4": (640, 272, 10.0),
    "carphone.mp4": (176, 144, 4.0),
    "realshort.mp4": (320, 240, 1.2),
}


def index_frame(i: int, h: int = 96, w: int = 160) -> np.ndarray:
    """uint8 (h, w, 3): left half 16 + 20·(i // 10), right half 16 + 20·(i % 10)."""
    img = np.empty((h, w, 3), np.uint8)
    img[:, : w // 2] = 16 + 20 * (i // 10)
    img[:, w // 2:] = 16 + 20 * (i % 10)
    return img


def decode_index(frames: np.ndarray) -> list[int]:
    """Frame indices from clips of index frames read with fit='stretch' (or 'crop': halves stay halves)."""
    v = frames.mean(axis=1) * 255.0  # (T, H, W)
    s = frames.shape[-1]
    tens = np.rint((v[:, :, 8: s // 2 - 8].mean(axis=(1, 2)) - 16) / 20).astype(int)
    units = np.rint((v[:, :, s // 2 + 8: -8].mean(axis=(1, 2)) - 16) / 20).astype(int)
    return (tens * 10 + units).tolist()


@pytest.fixture(scope="session")
def index_video(tmp_path_factory) -> Path:
    """100 index frames at 10 fps (10 s), 160×96, a keyframe every 10 frames (so sparse sampling seeks)."""
    p = tmp_path_factory.mktemp("video") / "index.mp4"
    return write_video(p, (index_frame(i) for i in range(100)), fps=10, options={"g": "10"})


@pytest.fixture(scope="session")
def long_video(tmp_path_factory) -> Path:
    """60 s of 768×576 at 5 fps (300 frames, ~2 s to encode): a gradient with a white square moving right."""
    yy, xx = np.mgrid[0:576, 0:768]
    base = np.stack([xx * 255 // 768, yy * 255 // 576, np.full_like(xx, 64)], axis=-1).astype(np.uint8)

    def frames():
        for i in range(300):
            f = base.copy()
            x0 = int(i / 300 * 668)
            f[238:338, x0:x0 + 100] = 255
            yield f

    return write_video(tmp_path_factory.mktemp("video") / "long_768x576.mp4", frames(), fps=5)


# --- real files -------------------------------------------------------------------------------------------

@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(REAL_VIDEOS))
def test_real_videos_decode(real_data, name):
    w, h, dur = REAL_VIDEOS[name]
    clip = read_video(real_data / "video" / name)
    f = clip.frames
    assert f.shape == (16, 3, 112, 112) and f.dtype == np.float32 and clip.modality == "rgb"
    assert 0.0 <= f.min() and f.max() <= 1.0 and np.isfinite(f).all()
    assert f.std(axis=(1, 2, 3)).min() > 0.03  # every frame has content
    assert np.abs(np.diff(f, axis=0)).mean() > 0.002  # and the video changes over time
    edges = clip.frame_times_us
    assert edges.shape == (17,) and edges[0] == 0 and np.all(np.diff(edges) > 0)
    assert abs(edges[-1] / 1e6 - dur) < 0.1
    assert clip.fps == pytest.approx(16 / (edges[-1] / 1e6))
    assert (clip.meta["width"], clip.meta["height"]) == (w, h)
    assert clip.sample_id == Path(name).stem
    assert clip.meta["duration_s"] == pytest.approx(dur, abs=0.1)
    assert 1 <= clip.meta["n_decoded"] and clip.meta["sampling"]["n_frames"] == 16
    assert clip.meta["codec"] == ("cinepak" if name.endswith(".avi") else "h264")


@pytest.mark.realdata
def test_count_vs_fps_sampling(real_data):
    p = real_data / "video" / "bikes.mp4"  # 10 s at 25 fps
    by_count = read_video(p, VideoSampling(n_frames=8))
    assert by_count.num_frames == 8 and by_count.fps == pytest.approx(0.8)
    by_rate = read_video(p, VideoSampling(fps=2.0))
    assert by_rate.num_frames == 20 and by_rate.fps == pytest.approx(2.0)
    assert np.all(np.diff(by_rate.frame_times_us) == 500_000)
    capped = read_video(p, VideoSampling(fps=100.0, max_frames=50))
    assert capped.num_frames == 50 and capped.fps == pytest.approx(5.0)
    assert capped.frame_times_us[-1] == 10_000_000  # the cap spreads the frames over the whole window


@pytest.mark.realdata
def test_deterministic(real_data):
    p = real_data / "video" / "tree.avi"
    a = read_video(p, VideoSampling(n_frames=12, start_s=3.0, fit="pad"))
    b = read_video(p, VideoSampling(n_frames=12, start_s=3.0, fit="pad"))
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.frame_times_us, b.frame_times_us)


# --- sampling ---------------------------------------------------------------------------------------------

def test_sample_times_pure():
    edges, t = sample_times(10.0, VideoSampling(n_frames=4))
    assert edges.tolist() == [0.0, 2.5, 5.0, 7.5, 10.0] and t.tolist() == [1.25, 3.75, 6.25, 8.75]
    edges, t = sample_times(10.0, VideoSampling(fps=3.0, start_s=8.5))  # 1.5 s → 4 whole steps of 1/3 s
    assert len(t) == 4 and edges[0] == 8.5 and edges[-1] == pytest.approx(8.5 + 4 / 3)
    edges, t = sample_times(10.0, VideoSampling(n_frames=2, start_s=9.0, duration_s=5.0))  # clipped at the end
    assert edges.tolist() == [9.0, 9.5, 10.0]
    with pytest.raises(ValueError, match="starts at"):
        sample_times(10.0, VideoSampling(start_s=10.0))


@pytest.mark.parametrize("kwargs", [dict(n_frames=0), dict(n_frames=None), dict(fps=0.0), dict(fps=float("nan")),
                                    dict(start_s=-1.0), dict(duration_s=0.0), dict(fit="zoom"),
                                    dict(n_frames=300), dict(max_frames=0), dict(max_frames=10**6),
                                    dict(n_frames=2.5), dict(size=0)])
def test_sampling_validation(kwargs):
    with pytest.raises(ValueError):
        VideoSampling(**kwargs)


def test_window_picks_the_right_frames(index_video):
    def idx(**kw):
        return decode_index(read_video(index_video, VideoSampling(fit="stretch", **kw)).frames)

    assert idx(fps=10.0) == list(range(100))  # native rate: every frame exactly once
    assert idx(start_s=1.0, duration_s=1.0, n_frames=5) == [11, 13, 15, 17, 19]
    assert idx(start_s=1.0, duration_s=1.0, fps=5.0) == [11, 13, 15, 17, 19]
    assert idx(start_s=4.2, n_frames=4) == [49, 63, 78, 92]  # step 1.45 s, centres 4.925, 6.375, …
    assert idx(start_s=9.5, duration_s=5.0, n_frames=5) == [95, 96, 97, 98, 99]  # window clipped at the end
    assert idx(n_frames=4) == [12, 37, 62, 87]
    clip = read_video(index_video, VideoSampling(start_s=2.0, duration_s=4.0, n_frames=4))
    assert clip.frame_times_us.tolist() == [2_000_000, 3_000_000, 4_000_000, 5_000_000, 6_000_000]
    assert clip.meta["n_decoded"] < 45  # seeks over the keyframes instead of decoding all 60 frames up to 6 s


def test_window_after_the_end(index_video):
    with pytest.raises(EmptyInputError, match="index.mp4.*starts at 12"):
        read_video(index_video, VideoSampling(start_s=12.0))


def test_upsampling_repeats_frames(index_video):
    clip = read_video(index_video, VideoSampling(fps=20.0, start_s=0.0, duration_s=1.0, fit="stretch"))
    assert decode_index(clip.frames) == [i // 2 for i in range(20)]


# --- spatial fit ------------------------------------------------------------------------------------------

def test_crop_pad_stretch(tmp_path):
    # 192×96: red | green (96 px wide, the centre square) | blue
    img = np.zeros((96, 192, 3), np.uint8)
    img[:, :48, 0] = 230
    img[:, 48:144, 1] = 230
    img[:, 144:, 2] = 230
    p = write_video(tmp_path / "rgb.mp4", np.stack([img] * 4), fps=4, crf=10)

    def dominant(frame):  # (3, H, W) → per-pixel argmax channel, -1 where dark
        return np.where(frame.max(axis=0) > 0.4, frame.argmax(axis=0), -1)

    crop = dominant(read_video(p, VideoSampling(n_frames=1, fit="crop")).frames[0])
    assert (crop[4:-4, 4:-4] == 1).all()  # only the green centre square survives
    stretch = dominant(read_video(p, VideoSampling(n_frames=1, fit="stretch")).frames[0])
    assert (stretch[:, :24] == 0).all() and (stretch[:, 32:80] == 1).all() and (stretch[:, 88:] == 2).all()
    pad = read_video(p, VideoSampling(n_frames=1, fit="pad")).frames[0]
    d = dominant(pad)  # scaled to 112×56, black bars of 28 rows above and below
    assert pad[:, :26].max() == 0 and pad[:, -26:].max() == 0
    assert (d[30:82, :24] == 0).all() and (d[30:82, 32:80] == 1).all() and (d[30:82, 88:] == 2).all()


def test_non_square_pixels(tmp_path):
    # stored 96×96 with a 2:1 sample aspect ratio = displayed 192×96: red | green (centre square) | blue
    img = np.zeros((96, 96, 3), np.uint8)
    img[:, :24, 0] = img[:, 24:72, 1] = img[:, 72:, 2] = 230
    p = tmp_path / "anamorphic.mp4"
    with av.open(str(p), "w") as out:
        s = out.add_stream("libx264", rate=4, options={"crf": "10"})
        s.width, s.height, s.pix_fmt = 96, 96, "yuv420p"
        s.codec_context.sample_aspect_ratio = Fraction(2, 1)
        for _ in range(2):
            out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(s.encode(None))
    crop = read_video(p, VideoSampling(n_frames=1, fit="crop")).frames[0]
    assert (crop.argmax(axis=0)[4:-4, 4:-4] == 1).all()  # only the green display square
    pad = read_video(p, VideoSampling(n_frames=1, fit="pad")).frames[0]
    assert pad[:, :26].max() == 0 and pad[:, -26:].max() == 0  # letterboxed as 112×56


def test_display_rotation_is_applied(tmp_path):
    img = np.zeros((48, 96, 3), np.uint8)
    img[:, :48, 0] = 255  # left half red
    p = tmp_path / "rot.mp4"
    with av.open(str(p), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 96, 48, "yuv420p"
        s.set_display_rotation(90)  # a player turns it 90° counter-clockwise: the left half ends at the bottom
        for _ in range(3):
            out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(s.encode(None))
    red = read_video(p, VideoSampling(n_frames=1, fit="stretch")).frames[0, 0]
    assert red[:48].mean() < 0.05 and red[64:].mean() > 0.9


# --- long, containers, timestamps -------------------------------------------------------------------------

def test_minute_long_768x576(long_video):
    t = time.perf_counter()
    clip = read_video(long_video)
    elapsed = time.perf_counter() - t
    assert clip.frames.shape == (16, 3, 112, 112)
    assert clip.meta["duration_s"] == pytest.approx(60.0, abs=0.3) and clip.frame_times_us[-1] == 60_000_000
    assert (clip.meta["width"], clip.meta["height"]) == (768, 576)
    assert np.abs(np.diff(clip.frames, axis=0)).mean() > 0.001  # the square moves
    assert elapsed < 10.0, f"reading a 60 s 768×576 video took {elapsed:.1f} s"
    windowed = read_video(long_video, VideoSampling(fps=1.0, start_s=30.0, duration_s=10.0))
    assert windowed.num_frames == 10 and windowed.frame_times_us[0] == 30_000_000


@pytest.mark.parametrize("ext,codec,pix_fmt", [("mp4", "libx264", "yuv420p"), ("avi", "mpeg4", "yuv420p"),
                                               ("webm", "libvpx-vp9", "yuv420p"), ("mkv", "libx264", "yuv420p"),
                                               ("mov", "libx264", "yuv420p"), ("avi", "mjpeg", "yuvj420p")])
def test_containers_round_trip(tmp_path, ext, codec, pix_fmt):
    p = write_video(tmp_path / f"clip.{ext}", np.stack([index_frame(i, 48, 64) for i in range(20)]), fps=10,
                    codec=codec, pix_fmt=pix_fmt)
    clip = read_video(p, VideoSampling(fps=10.0, fit="stretch"))
    assert decode_index(clip.frames) == list(range(20))
    assert clip.meta["duration_s"] == pytest.approx(2.0, abs=0.05)


def test_variable_frame_rate(tmp_path):
    times_ms = [0, 50, 100, 400, 450, 1000, 1100, 1900, 2000, 2950]
    p = tmp_path / "vfr.mkv"
    with av.open(str(p), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for i, ms in enumerate(times_ms):
            f = av.VideoFrame.from_ndarray(index_frame(i, 48, 64), format="rgb24")
            f.pts, f.time_base = ms, Fraction(1, 1000)
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    clip = read_video(p, VideoSampling(fps=10.0, fit="stretch"))  # samples at 0.05, 0.15, …, 2.85 s
    shown = [max(i for i, ms in enumerate(times_ms) if ms <= 1000 * (0.05 + 0.1 * k) + 1e-6) for k in range(29)]
    assert decode_index(clip.frames) == shown


def test_mpegts_without_index_seeks_to_the_window(tmp_path):
    p = write_video(tmp_path / "index.ts", (index_frame(i) for i in range(100)), fps=10, options={"g": "10"})
    with av.open(str(p)) as c:
        assert len(c.streams.video[0].index_entries) == 0 and c.streams.video[0].start_time > 0
    clip = read_video(p, VideoSampling(start_s=7.0, n_frames=5, fit="stretch"))
    assert decode_index(clip.frames) == [73, 79, 85, 91, 97] and clip.meta["n_decoded"] < 50
    assert decode_index(read_video(p, VideoSampling(n_frames=4, fit="stretch")).frames) == [12, 37, 62, 87]


def test_missing_duration_falls_back_to_timestamps(tmp_path):
    p = write_video(tmp_path / "raw.h264", np.stack([index_frame(i, 48, 64) for i in range(30)]), fps=10)
    with av.open(str(p)) as c:  # a raw H.264 stream has no duration (FFmpeg assumes 25 fps)
        assert c.duration is None and c.streams.video[0].duration is None
    clip = read_video(p, VideoSampling(n_frames=6, fit="stretch"))
    assert clip.meta["duration_s"] == pytest.approx(30 / 25, abs=0.05)
    assert decode_index(clip.frames) == [2, 7, 12, 17, 22, 27]
    long = write_video(tmp_path / "long.h264", (index_frame(i % 100) for i in range(300)), fps=25)
    clip = read_video(long, VideoSampling(start_s=8.0, n_frames=5, fit="stretch"))  # raw streams cannot seek
    assert decode_index(clip.frames) == [10, 30, 50, 70, 90]  # frames 210, 230, … at 8.4, 9.2, … s


# --- writer -----------------------------------------------------------------------------------------------

def test_write_video_is_browser_h264(tmp_path):
    frames = np.random.default_rng(0).random((5, 3, 33, 47), dtype=np.float32)  # odd sides → padded to even
    p = write_video(tmp_path / "out.mp4", frames, fps=12.5)
    with av.open(str(p)) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert (s.width, s.height) == (48, 34) and s.average_rate == Fraction(25, 2) and s.frames == 5
    raw = open(p, "rb").read()
    assert raw.find(b"moov") < raw.find(b"mdat")  # faststart: playable while downloading
    u8 = (np.random.default_rng(1).random((3, 16, 16, 3)) * 255).astype(np.uint8)
    write_video(tmp_path / "u8.mp4", u8, fps=5)
    write_video(tmp_path / "iter.mp4", (f for f in u8), fps=5)
    assert read_video(tmp_path / "iter.mp4").num_frames == 16
    for bad in [np.zeros((3, 16, 16), np.float32), np.zeros((2, 4, 16, 16), np.float32), np.zeros((0, 3, 8, 8))]:
        with pytest.raises(ValueError):
            write_video(tmp_path / "bad.mp4", bad, fps=5)
        assert not (tmp_path / "bad.mp4").exists()  # nothing half-written is left behind
    with pytest.raises(ValueError):
        write_video(tmp_path / "bad.mp4", u8, fps=0)


# --- bad input --------------------------------------------------------------------------------------------

def _raises(path, kind):
    with pytest.raises(kind) as e:
        read_video(path)
    assert Path(path).name in str(e.value)
    return e.value


@pytest.mark.realdata
def test_bad_files(tmp_path, real_data):
    (tmp_path / "empty.mp4").write_bytes(b"")
    _raises(tmp_path / "empty.mp4", EmptyInputError)
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(20_000))
    _raises(tmp_path / "noise.mp4", (UnsupportedFormatError, CorruptFileError))
    (tmp_path / "notes.mp4").write_text("this is a text file, not a video\n" * 50)
    _raises(tmp_path / "notes.mp4", UnsupportedFormatError)
    half = (real_data / "video" / "bikes.mp4").read_bytes()
    (tmp_path / "half.mp4").write_bytes(half[: len(half) // 2])  # index ('moov') at the end: cut off
    _raises(tmp_path / "half.mp4", CorruptFileError)
    _raises(tmp_path / "missing.mp4", InputError)
    _raises(tmp_path, UnsupportedFormatError)  # a folder


def test_truncated_faststart_mp4(tmp_path, long_video):
    data = long_video.read_bytes()  # faststart: the index is at the front and survives the cut
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    err = _raises(tmp_path / "cut.mp4", CorruptFileError)
    assert "truncated" in str(err) or "decoded" in str(err)


@pytest.mark.parametrize("ext,codec", [("m4a", "aac"), ("wav", "pcm_s16le")])
def test_audio_only(tmp_path, ext, codec):
    p = tmp_path / f"tone.{ext}"
    with av.open(str(p), "w") as out:
        s = out.add_stream(codec, rate=16000)
        pcm = (np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000) * 8000).astype(np.int16)[None]
        f = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        f.sample_rate = 16000
        out.mux(s.encode(f))
        out.mux(s.encode(None))
    assert "no video stream" in str(_raises(p, EmptyInputError))


def test_limits(tmp_path):
    big = tmp_path / "huge.mp4"
    with open(big, "wb") as fh:  # sparse: takes no disk space
        fh.truncate(MAX_FILE_BYTES + 1)
    assert "GiB" in str(_raises(big, InputTooLargeError))
    wide = write_video(tmp_path / "wide.mp4", np.zeros((1, 16, 7696, 3), np.uint8), fps=1)
    assert "7696×16" in str(_raises(wide, InputTooLargeError))
    long = tmp_path / "long.mkv"  # two frames 4 h apart
    with av.open(str(long), "w") as out:
        s = out.add_stream("libx264", rate=1)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for ms in (0, 4 * 3600 * 1000):
            f = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            f.pts, f.time_base = ms, Fraction(1, 1000)
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    assert "4.0 h" in str(_raises(long, InputTooLargeError))


@pytest.mark.realdata
@settings(max_examples=25, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_real_file_never_crashes(real_data, tmp_path, data):
    raw = bytearray((real_data / "video" / "realshort.mp4").read_bytes())
    kind = data.draw(st.sampled_from(["flip", "tail", "cut"]))
    if kind == "cut":
        raw = raw[: data.draw(st.integers(1, len(raw) - 1))]
    else:  # byte flips anywhere, or in the trailing index ('moov') where the metadata lives
        lo = 0 if kind == "flip" else len(raw) - 4096
        for pos in data.draw(st.lists(st.integers(lo, len(raw) - 1), min_size=1, max_size=12)):
            raw[pos] = data.draw(st.integers(0, 255))
    p = tmp_path / "mutant.mp4"
    p.write_bytes(bytes(raw))
    try:
        clip = read_video(p)
    except InputError as e:
        assert "mutant.mp4" in str(e)
    else:
        assert clip.frames.shape == (16, 3, 112, 112) and np.isfinite(clip.frames).all()
        assert 0.0 <= clip.frames.min() and clip.frames.max() <= 1.0
