"""Properties of the DVS event simulator (workbench.data.eventsim) over parameter grids and random inputs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.data.clip import Clip
from workbench.data.events import EVENT_DTYPE, EventStream
from workbench.data.eventsim import (EventSimConfig, luminance, pixel_reference_offsets, pixel_thresholds,
                                     simulate_events, video_to_events)
from workbench.errors import CorruptFileError, EmptyInputError, InputError, UnsupportedFormatError

EXACT = dict(threshold_sigma=0.0, refractory_us=0, shot_noise_hz=0.0)


def log_ramp(dlog: float, n: int = 5, h: int = 6, w: int = 7, base: float = 0.1, eps: float = 0.02) -> np.ndarray:
    """Frames whose log(I + eps) moves linearly by `dlog` from frame 0 to the last one, same at every pixel."""
    s = np.linspace(0.0, 1.0, n)[:, None, None]
    if dlog > 0:  # keep the brightest frame inside [0, 1]
        base = min(base, (1 + eps) * np.exp(-dlog) - eps - 1e-3)
    return (np.exp(np.log(base + eps) + dlog * s) - eps) * np.ones((n, h, w))


def per_pixel(ev: np.ndarray, h: int, w: int, polarity: bool | None = None) -> np.ndarray:
    sel = ev if polarity is None else ev[ev["p"] == polarity]
    return np.bincount(sel["y"].astype(int) * w + sel["x"], minlength=h * w).reshape(h, w)


def check_invariants(ev: np.ndarray, times: np.ndarray, h: int, w: int, refractory_us: int):
    assert ev.dtype == EVENT_DTYPE
    if len(ev) == 0:
        return
    assert np.all(np.diff(ev["t"]) >= 0), "timestamps must be sorted"
    assert ev["t"].min() >= times[0] and ev["t"].max() <= times[-1]
    assert ev["x"].min() >= 0 and ev["x"].max() < w and ev["y"].min() >= 0 and ev["y"].max() < h
    if refractory_us > 0:
        pix = ev["y"].astype(np.int64) * w + ev["x"]
        order = np.argsort(pix, kind="stable")
        same = pix[order][1:] == pix[order][:-1]
        gaps = np.diff(ev["t"][order])[same]
        assert gaps.size == 0 or gaps.min() >= refractory_us, "refractory period violated"


@pytest.mark.parametrize("refractory", [0, 500])
@pytest.mark.parametrize("sigma", [0.0, 0.05])
def test_static_clip_emits_nothing_without_noise(sigma, refractory):
    frames = np.repeat(np.random.default_rng(0).random((1, 16, 16)), 8, 0)  # same texture in every frame
    cfg = EventSimConfig(threshold_sigma=sigma, refractory_us=refractory, shot_noise_hz=0.0)
    ev = simulate_events(frames, np.arange(8) * 1000, cfg)
    assert len(ev) == 0 and ev.dtype == EVENT_DTYPE


@pytest.mark.parametrize("threshold", [0.1, 0.2, 0.35])
@pytest.mark.parametrize("direction", [1, -1])
def test_polarity_follows_brightness(threshold, direction):
    frames = log_ramp(direction * 1.5)
    ev = simulate_events(frames, np.arange(5) * 10_000, EventSimConfig(threshold=threshold))
    assert len(ev) > 0
    assert bool(ev["p"].all()) if direction > 0 else not bool(ev["p"].any())


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("threshold", [0.1, 0.2, 0.3])
@pytest.mark.parametrize("n_frames", [2, 7])
def test_ramp_of_k_thresholds_gives_k_events_per_pixel(k, threshold, n_frames):
    frames = log_ramp(k * threshold, n=n_frames)
    ev = simulate_events(frames, np.arange(n_frames) * 10_000, EventSimConfig(threshold=threshold, **EXACT))
    counts = per_pixel(ev, 6, 7)
    assert np.all(counts == k), np.unique(counts)
    # and back down: k OFF events more per pixel, reference returns to where it started
    down = np.concatenate([frames, frames[::-1][1:]])
    ev = simulate_events(down, np.arange(len(down)) * 10_000, EventSimConfig(threshold=threshold, **EXACT))
    assert np.all(per_pixel(ev, 6, 7, True) == k) and np.all(per_pixel(ev, 6, 7, False) == k)


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("sigma", [0.01, 0.03, 0.06])
def test_ramp_with_mismatch_counts_floor_of_change_over_own_threshold(k, sigma):
    cfg = EventSimConfig(threshold=0.2, threshold_sigma=sigma, refractory_us=0, seed=3)
    frames = log_ramp(k * 0.2, h=20, w=20)
    counts = per_pixel(simulate_events(frames, np.arange(5) * 10_000, cfg), 20, 20)
    c = pixel_thresholds(cfg, 20, 20)
    assert c.min() >= 0.01 and c.std() == pytest.approx(sigma, rel=0.25)
    assert np.array_equal(counts, np.floor(k * 0.2 / c + 1e-4).astype(int))
    if sigma <= 0.03 and k <= 2:  # realistic mismatch, small steps: everyone within one event of k
        assert np.abs(counts - k).max() <= 1


def test_reference_jitter_keeps_frame_zero_silent_and_desynchronises_uniform_regions():
    cfg = EventSimConfig(threshold_sigma=0.0, refractory_us=0, reference_jitter=0.5, seed=9)
    static = np.full((4, 16, 16), 0.3)
    assert len(simulate_events(static, np.arange(4) * 1000, cfg)) == 0
    counts = per_pixel(simulate_events(log_ramp(3 * 0.2, h=16, w=16), np.arange(5) * 10_000, cfg), 16, 16)
    assert set(np.unique(counts).tolist()) == {2, 3}  # the level grid is offset per pixel by up to half a step
    drift = log_ramp(0.3, n=11, h=16, w=16)  # a slow, uniform brightening: 1.5 thresholds over 100 ms
    t = np.arange(11) * 10_000
    sync = simulate_events(drift, t, EventSimConfig(threshold_sigma=0.0, refractory_us=0))
    spread = simulate_events(drift, t, cfg)
    assert len(np.unique(sync["t"])) == 1 and len(np.unique(spread["t"])) > 50


def test_crossings_are_interpolated_in_time():
    frames = log_ramp(3 * 0.2, n=2, h=1, w=1)
    ev = simulate_events(frames, np.array([1000, 4000]), EventSimConfig(threshold=0.2, **EXACT))
    assert ev["t"].tolist() == [2000, 3000, 4000] and bool(ev["p"].all())


def test_refractory_drops_close_events_and_reference_follows():
    frames = np.concatenate([log_ramp(10 * 0.2, n=2, h=2, w=3), log_ramp(10 * 0.2, n=2, h=2, w=3)[1:]])
    times = np.array([0, 1000, 50_000])  # 10 crossings 100 µs apart, then a static frame pair
    ev = simulate_events(frames, times, EventSimConfig(threshold=0.2, threshold_sigma=0.0, refractory_us=250))
    # greedy per pixel: 100 (kept), 400, 700, 1000 — and no catch-up burst afterwards
    assert np.all(per_pixel(ev, 2, 3) == 4)
    assert sorted(set(ev["t"].tolist())) == [100, 400, 700, 1000]
    check_invariants(ev, times, 2, 3, 250)


@pytest.mark.parametrize("refractory", [0, 300, 2000, 20_000])
def test_refractory_respected_on_a_moving_edge(refractory):
    n = 40
    xs = np.arange(32)
    frames = np.stack([(xs[None, :] < 4 + 0.7 * i) * 0.8 + 0.1 for i in range(n)]) * np.ones((n, 8, 32))
    times = np.arange(n) * 1000
    ev = simulate_events(frames, times, EventSimConfig(refractory_us=refractory, shot_noise_hz=50.0, seed=1))
    check_invariants(ev, times, 8, 32, refractory)
    assert len(ev) > 0


@pytest.mark.parametrize("rate", [2.0, 20.0])
def test_shot_noise_rate_matches(rate):
    h = w = 64
    duration_s = 1.0
    frames = np.full((2, h, w), 0.5)
    ev = simulate_events(frames, np.array([0, int(duration_s * 1e6)]),
                         EventSimConfig(shot_noise_hz=rate, refractory_us=0, seed=5))
    expected = rate * h * w * duration_s
    assert abs(len(ev) - expected) < 5 * np.sqrt(expected)  # Poisson: 5 sigma
    assert abs(ev["p"].mean() - 0.5) < 5 * 0.5 / np.sqrt(expected)
    per = per_pixel(ev, h, w)
    assert per.mean() == pytest.approx(rate * duration_s, rel=0.1) and per.var() == pytest.approx(per.mean(), rel=0.2)


def test_deterministic_by_seed():
    rng = np.random.default_rng(1)
    frames = rng.random((6, 12, 12))
    times = np.arange(6) * 5000
    cfg = EventSimConfig(threshold_sigma=0.05, shot_noise_hz=100.0, seed=11)
    a, b = simulate_events(frames, times, cfg), simulate_events(frames, times, cfg)
    assert a.dtype == EVENT_DTYPE and np.array_equal(a, b)
    c = simulate_events(frames, times, EventSimConfig(threshold_sigma=0.05, shot_noise_hz=100.0, seed=12))
    assert not np.array_equal(a, c)


def test_rgb_input_uses_luminance_and_uint8_is_scaled():
    rng = np.random.default_rng(2)
    rgb = rng.random((4, 3, 10, 10)).astype(np.float32)
    times = np.arange(4) * 1000
    lum = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    assert np.allclose(luminance(rgb), lum, atol=1e-6)
    assert np.array_equal(simulate_events(rgb, times), simulate_events(lum, times))
    u8 = (lum * 255).round().astype(np.uint8)
    assert np.allclose(luminance(u8), u8 / 255.0, atol=1e-6)


def test_sensor_size_resamples_frames():
    frames = log_ramp(1.0, h=20, w=30)
    ev = simulate_events(frames, np.arange(5) * 1000, EventSimConfig(**EXACT), sensor_size=(15, 10))
    check_invariants(ev, np.arange(5) * 1000, 10, 15, 0)
    assert np.all(per_pixel(ev, 10, 15) == 5)  # a uniform ramp of 1.0 = 5 thresholds survives area resampling


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 6), h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 2**31 - 1),
       threshold=st.floats(0.05, 0.6), sigma=st.floats(0.0, 0.1), refractory=st.integers(0, 5000),
       noise=st.sampled_from([0.0, 10.0, 500.0]), step=st.integers(1, 20_000))
def test_random_inputs_keep_the_invariants(n, h, w, seed, threshold, sigma, refractory, noise, step):
    rng = np.random.default_rng(seed)
    frames = rng.random((n, h, w)) ** 2
    times = 1000 + np.cumsum(rng.integers(1, step + 1, n))
    cfg = EventSimConfig(threshold=threshold, threshold_sigma=sigma, refractory_us=refractory, shot_noise_hz=noise,
                         seed=seed)
    ev = simulate_events(frames, times, cfg)
    check_invariants(ev, times, h, w, refractory)
    assert np.array_equal(ev, simulate_events(frames, times, cfg))
    if n > 1 and refractory == 0 and noise == 0 and sigma == 0:
        # the reference is a hysteresis quantiser: net (ON - OFF) per pixel is within one threshold of the change
        dlog = (np.log(frames[-1] + cfg.eps) - np.log(frames[0] + cfg.eps)) / threshold
        net = per_pixel(ev, h, w, True) - per_pixel(ev, h, w, False)
        assert np.all(np.abs(dlog - net) < 1 + 1e-3)


def test_single_frame_gives_no_events():
    assert len(simulate_events(np.ones((1, 4, 4)), np.array([0]))) == 0


@pytest.mark.parametrize("frames, times, error", [
    (np.zeros((0, 4, 4)), np.zeros(0), EmptyInputError),
    (np.zeros((3, 4)), np.arange(3), UnsupportedFormatError),
    (np.zeros((3, 4, 4)), np.arange(2), UnsupportedFormatError),
    (np.zeros((3, 4, 4)), np.array([0, 5, 5]), CorruptFileError),
    (np.full((3, 4, 4), np.nan), np.arange(3), CorruptFileError),
])
def test_bad_inputs_raise_input_errors(frames, times, error):
    with pytest.raises(error):
        simulate_events(frames, times)


@pytest.mark.parametrize("field, value", [("threshold", 0.005), ("threshold_sigma", -1.0), ("refractory_us", -1),
                                          ("shot_noise_hz", float("nan")), ("eps", -0.1), ("reference_jitter", 0.7)])
def test_bad_config_is_an_input_error(field, value):
    with pytest.raises(InputError, match=field):
        EventSimConfig(**{field: value})


def test_video_to_events_on_an_rgb_clip():
    t = 6
    x = np.arange(112)
    frames = np.stack([np.broadcast_to((x[None, :] < 20 + 10 * i) * 0.7 + 0.1, (3, 112, 112)) for i in range(t)])
    edges = np.arange(t + 1) * 125_000
    clip = Clip(frames=frames.astype(np.float32), modality="rgb", sample_id="edge", frame_times_us=edges)
    stream = video_to_events(clip, EventSimConfig(seed=4))
    assert isinstance(stream, EventStream) and stream.sensor_size == (112, 112) and stream.format == "simulated"
    check_invariants(stream.events, edges, 112, 112, 500)
    assert bool(stream.events["p"].all())  # a bright region grows to the right: ON only
    assert stream.events["t"].min() > edges[1]  # frame t sits at the end of window t: window 0 is empty
    sub = video_to_events(clip, EventSimConfig(seed=4), substeps=4)
    assert abs(len(sub) - len(stream)) < 0.2 * len(stream)
    no_times = Clip(frames=clip.frames, modality="rgb", sample_id="edge", fps=8.0)
    assert np.array_equal(video_to_events(no_times, EventSimConfig(seed=4)).events, stream.events)
    with pytest.raises(UnsupportedFormatError):
        video_to_events(Clip(frames=np.zeros((2, 2, 112, 112), np.float32), modality="events", sample_id="ev"))


def reference_esim(frames: np.ndarray, times: np.ndarray, c: np.ndarray, offset: np.ndarray,
                   eps: float) -> list[tuple[int, int, int, bool]]:
    """Pixel-by-pixel, crossing-by-crossing ESIM in plain Python (no refractory, no noise): (t, y, x, p) events.

    The reference starts at log(I0 + eps) + offset·C and moves by ±C per emitted event."""
    out = []
    log = np.log(frames.astype(np.float32) + np.float32(eps)).astype(np.float64)
    n, h, w = frames.shape
    for y in range(h):
        for x in range(w):
            u = (log[:, y, x] - log[0, y, x]) / c[y, x] - offset[y, x]
            m = 0
            for k in range(1, n):
                ua, ub = u[k - 1], u[k]
                if ub >= m + 1 - 1e-4:
                    levels, p = range(m + 1, int(np.floor(ub + 1e-4)) + 1), True
                elif ub <= m - 1 + 1e-4:
                    levels, p = range(m - 1, int(np.ceil(ub - 1e-4)) - 1, -1), False
                else:
                    continue
                for lv in levels:
                    frac = min(max((lv - ua) / (ub - ua), 0.0), 1.0)
                    out.append((int(times[k - 1] + round(frac * (times[k] - times[k - 1]))), y, x, p))
                    m = lv
    return out


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 6), h=st.integers(1, 5), w=st.integers(1, 5), seed=st.integers(0, 2**31 - 1),
       sigma=st.sampled_from([0.0, 0.04]), jitter=st.sampled_from([0.0, 0.5]), refractory=st.integers(1, 4000))
def test_matches_a_plain_python_reference(n, h, w, seed, sigma, jitter, refractory):
    rng = np.random.default_rng(seed)
    frames = rng.random((n, h, w)) ** 3
    times = np.cumsum(rng.integers(100, 5000, n))
    cfg = EventSimConfig(threshold=0.15, threshold_sigma=sigma, refractory_us=0, reference_jitter=jitter, seed=seed)
    ev = simulate_events(frames, times, cfg)
    ref = sorted(reference_esim(frames, times, pixel_thresholds(cfg, h, w), pixel_reference_offsets(cfg, h, w),
                                cfg.eps))
    got = sorted(zip(ev["t"].tolist(), ev["y"].tolist(), ev["x"].tolist(), ev["p"].tolist()))
    assert len(got) == len(ref)
    assert all(a[1:] == b[1:] and abs(a[0] - b[0]) <= 1 for a, b in zip(got, ref))
    # refractory = a sequential greedy filter per pixel over the same events
    last, keep = {}, []
    for e in ev:
        key = (int(e["y"]), int(e["x"]))
        if key not in last or e["t"] - last[key] >= refractory:
            last[key] = int(e["t"])
            keep.append(True)
        else:
            keep.append(False)
    filtered = simulate_events(frames, times, EventSimConfig(threshold=0.15, threshold_sigma=sigma,
                                                            refractory_us=refractory, reference_jitter=jitter,
                                                            seed=seed))
    assert np.array_equal(filtered, ev[np.array(keep, bool)])
