"""`load_clip`, the one door for inputs: every event format and every real video becomes a model-ready Clip;
bad files raise an InputError naming the file; event windows, sensor fitting, binning without aliasing, denoise.
"""
from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

try:  # the writers live in the reader tests (tests/ is on sys.path in pytest's default import mode)
    from test_event_readers import (evt3_groups, random_events, write_aedat4, write_aedat31, write_csv, write_dat,
                                    write_evt2, write_evt3, write_hdf5, write_labels)
except ImportError:  # tests/ became a package
    from tests.test_event_readers import (evt3_groups, random_events, write_aedat4, write_aedat31, write_csv,
                                          write_dat, write_evt2, write_evt3, write_hdf5, write_labels)
from workbench.data.clip import GRID, IMAGE_SIZE, Clip
from workbench.data.events import EventStream, make_events
from workbench.data.load import EventWindow, denoise_events, events_to_clip, load_clip
from workbench.data.readers import sniff_format
from workbench.data.transforms import EventsToFrames
from workbench.errors import EmptyInputError, InputError

realdata = pytest.mark.realdata

REAL_EVENT_FILES = {"dvs128_walking.aedat": "aedat2", "dvxplorer_sample.aedat4": "aedat4",
                    "nmnist_sample.bin": "nmnist", "prophesee_evt3_sample.raw": "evt3",
                    "prophesee_evt3_sample_decoded.npy": "npy"}
REAL_VIDEOS = ("bikes.mp4", "carphone.mp4", "realshort.mp4", "tree.avi")


def assert_model_ready(clip: Clip, channels: int) -> None:
    f = clip.frames
    assert f.shape == (16, channels, IMAGE_SIZE, IMAGE_SIZE) and f.dtype == np.float32
    assert np.isfinite(f).all() and f.min() >= 0.0 and f.max() <= 1.0
    assert f.max() > 0.1 and f.std() > 1e-3  # non-trivial content
    assert (f.reshape(16, -1).max(1) > 0).sum() >= 2  # more than one frame shows something


def assert_event_clip(clip: Clip, fmt: str) -> None:
    assert clip.modality == "events" and clip.meta["format"] == fmt
    assert_model_ready(clip, 2)
    r = clip.patch_event_rate
    assert r.shape == (16, GRID, GRID) and (r >= 0).all() and r.sum() > 0
    assert clip.meta["num_events"] > 0 and len(clip.frame_times_us) == 17


# ------------------------------------------------------------------------------------------------ every format
@realdata
@pytest.mark.parametrize("name", sorted(REAL_EVENT_FILES))
def test_real_event_files(real_data, name):
    clip = load_clip(real_data / "events" / name)
    assert_event_clip(clip, REAL_EVENT_FILES[name])
    assert clip.meta["source"].endswith(name)


@realdata
@pytest.mark.parametrize("name", REAL_VIDEOS)
def test_real_videos(real_data, name):
    clip = load_clip(real_data / "video" / name)
    assert clip.modality == "rgb" and clip.patch_event_rate is None
    assert_model_ready(clip, 3)


def _write(fmt: str, path_dir) -> tuple[str, str]:
    """(path, expected format) of a small file of `fmt` written by the independent writers."""
    ev = random_events(3000, (128, 128), seed=4, t0=1000)  # ~75 ms
    d = path_dir
    if fmt == "aedat3.1":
        write_aedat31(d / "g.aedat", ev)
        return d / "g.aedat", fmt
    if fmt == "aedat4":
        write_aedat4(d / "u.aedat4", random_events(3000, (640, 480), seed=4, t0=1_600_000_000_000_000), (640, 480))
        return d / "u.aedat4", fmt
    if fmt == "dat":
        write_dat(d / "d.dat", random_events(3000, (304, 240), seed=4))
        return d / "d.dat", fmt
    if fmt == "ncars":
        write_dat(d / "n.dat", random_events(3000, (120, 100), seed=4), geometry=None, ev_type=0x00)
        return d / "n.dat", fmt
    if fmt == "evt2":
        write_evt2(d / "e2.raw", random_events(3000, (640, 480), seed=4))
        return d / "e2.raw", fmt
    if fmt == "evt3":
        write_evt3(d / "e3.raw", evt3_groups(300, seed=4))
        return d / "e3.raw", fmt
    if fmt == "npy":
        np.save(d / "n.npy", ev)
        return d / "n.npy", fmt
    if fmt == "npz":
        np.savez(d / "z.npz", events=ev, sensor_size=np.array([128, 128]))
        return d / "z.npz", fmt
    if fmt == "hdf5":
        write_hdf5(d / "h.h5", ev, sensor=(128, 128))
        return d / "h.h5", fmt
    if fmt == "csv":
        write_csv(d / "c.csv", ev, size_line=(128, 128))
        return d / "c.csv", fmt
    raise AssertionError(fmt)


@pytest.mark.parametrize("fmt", ["aedat3.1", "aedat4", "dat", "ncars", "evt2", "evt3", "npy", "npz", "hdf5", "csv"])
def test_round_trip_files_of_every_format(tmp_path, fmt):
    path, want = _write(fmt, tmp_path)
    assert sniff_format(path) == want
    clip = load_clip(path)
    assert_event_clip(clip, want)
    renamed = tmp_path / "no_extension"  # found by content, not by name
    shutil.copyfile(path, renamed)
    assert load_clip(renamed).meta["format"] == want


def test_seeds_still_load():
    assert load_clip("shapes:3").modality == "rgb"
    assert load_clip("gesture:2").label == 2


# ------------------------------------------------------------------------------------------------ bad inputs
def _refused(path) -> InputError:
    with pytest.raises(InputError) as info:
        load_clip(path)
    assert str(path) in str(info.value), info.value
    return info.value


@realdata
def test_bad_files_name_the_file(real_data, tmp_path):
    (tmp_path / "empty.aedat").write_bytes(b"")
    assert isinstance(_refused(tmp_path / "empty.aedat"), EmptyInputError)
    rng = np.random.default_rng(0)
    for name in ("noise.xyz", "noise.bin", "noise.mp4", "noise"):
        (tmp_path / name).write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
        _refused(tmp_path / name)
    for name in ("dvs128_walking.aedat", "dvxplorer_sample.aedat4", "prophesee_evt3_sample.raw"):
        data = (real_data / "events" / name).read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(data[:len(data) // 2 + 1])
        _refused(tmp_path / f"cut_{name}")
    data = (real_data / "video" / "bikes.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[:len(data) // 3])
    _refused(tmp_path / "cut.mp4")
    assert "label file" in str(_refused(real_data / "events" / "dvsgesture_user01_natural_labels.csv"))
    write_labels(tmp_path / "user02_led_labels.csv", [(1, 10, 20)])
    assert "label file" in str(_refused(tmp_path / "user02_led_labels.csv"))
    (tmp_path / "folder").mkdir()
    _refused(tmp_path / "folder")
    _refused(tmp_path / "missing.aedat4")


def test_pickled_npy_is_refused_without_unpickling(tmp_path):
    arr = np.empty(2, dtype=object)
    arr[:] = [{"a": 1}, [2]]
    np.save(tmp_path / "obj.npy", arr, allow_pickle=True)
    with open(tmp_path / "raw.npy", "wb") as f:  # a bare pickle named .npy
        pickle.dump({"x": [1, 2]}, f)
    assert "pickled" in str(_refused(tmp_path / "obj.npy"))
    _refused(tmp_path / "raw.npy")


# ------------------------------------------------------------------------------------------------ windows
def _ramp_stream(sensor=(64, 64), seconds: float = 5.0, rate_hz: float = 2000.0) -> EventStream:
    """Events at a steady rate, t from 1 s to 1 s + `seconds`."""
    n = int(seconds * rate_hz)
    rng = np.random.default_rng(7)
    t = 1_000_000 + np.arange(n) * int(1e6 / rate_hz)
    ev = make_events(rng.integers(0, sensor[0], n), rng.integers(0, sensor[1], n), t, rng.integers(0, 2, n))
    return EventStream(ev, sensor, source="ramp.npy", format="npy")


def test_event_windows():
    s = _ramp_stream()
    t_first = int(s.events["t"][0])
    c = events_to_clip(s)  # default: the first 2 s, 16 frames
    assert c.meta["window_us"] == (t_first, t_first + 2_000_000)
    np.testing.assert_array_equal(c.frame_times_us, t_first + np.arange(17) * 125_000)
    assert c.meta["num_events"] == 4001 and c.duration_s == pytest.approx(2.0)
    c = events_to_clip(s, EventWindow(n_frames=8, start_s=1.5, duration_s=0.5))
    assert c.frames.shape == (8, 2, 112, 112) and c.meta["window_us"] == (t_first + 1_500_000, t_first + 2_000_000)
    assert c.meta["num_events"] == 1001 and c.fps == pytest.approx(16.0)
    assert c.patch_event_rate.sum() * 64 == pytest.approx(1001, rel=0.01)  # every event binned once (see below)
    c = events_to_clip(s, EventWindow(start_s=4.0, duration_s=3.0))  # runs past the end: cut there
    assert c.meta["window_us"] == (t_first + 4_000_000, int(s.events["t"][-1]))
    c = events_to_clip(s, EventWindow(duration_s=None))  # the whole recording
    assert c.meta["num_events"] == len(s)
    c = events_to_clip(s, t_range=(2_000_000, 2_100_000), sample_id="x", label=3, note="n")
    assert c.meta["window_us"] == (2_000_000, 2_100_000) and c.meta["num_events"] == 201
    assert (c.sample_id, c.label, c.meta["note"]) == ("x", 3, "n")
    with pytest.raises(EmptyInputError, match="ramp.npy"):
        events_to_clip(s, EventWindow(start_s=10.0))


@pytest.mark.parametrize("fit", ["crop", "pad", "stretch"])
@pytest.mark.parametrize("sensor", [(1280, 720), (34, 34)])
def test_any_sensor_fits_the_112_grid(sensor, fit):
    rng = np.random.default_rng(1)
    n = 40_000
    ev = make_events(rng.integers(0, sensor[0], n), rng.integers(0, sensor[1], n),
                     np.sort(rng.integers(0, 1_000_000, n)), rng.integers(0, 2, n))
    c = events_to_clip(EventStream(ev, sensor, "s.npy", "npy"), EventWindow(fit=fit))
    assert c.frames.shape == (16, 2, 112, 112) and c.patch_event_rate.shape == (16, GRID, GRID)
    assert (c.events["x"] < 112).all() and (c.events["y"] < 112).all()
    total = c.patch_event_rate.sum() * 64  # events binned on the grid
    rows = c.frames.sum((0, 1, 3))  # (112,) activity per grid row
    if sensor == (34, 34) or fit == "stretch":  # everything kept, the whole grid used
        assert total == pytest.approx(n, rel=0.01) and (rows > 0).all()
    elif fit == "crop":  # the centre 720×720 square: 720/1280 of the events
        assert total == pytest.approx(n * 720 / 1280, rel=0.03) and (rows > 0).all()
    else:  # pad: letterboxed, 63 of 112 rows used, bars empty
        assert total == pytest.approx(n, rel=0.01)
        assert (rows > 0).sum() == pytest.approx(63, abs=1) and rows[:20].sum() == rows[-20:].sum() == 0


def test_binning_has_no_aliasing_stripes():
    """Uniform events on a 128×128 sensor: every grid column must get the same share up to Poisson noise.
    (floor(x * 112 / 128) makes every 7th column collect two sensor columns — the bug fit_counts fixed.)"""
    rng = np.random.default_rng(0)
    n = 400_000
    ev = make_events(rng.integers(0, 128, n), rng.integers(0, 128, n), np.sort(rng.integers(0, 10**6, n)),
                     rng.integers(0, 2, n))
    counts = EventsToFrames(n_frames=1).counts(ev, (128, 128))  # (1, 2, 112, 112)
    cols, rows = counts.sum((0, 1, 2)), counts.sum((0, 1, 3))  # (112,) each
    poisson = 1 / np.sqrt(n / 112)  # relative std of a Poisson count with this mean
    assert cols.sum() == pytest.approx(n, rel=1e-4)
    assert cols.std() / cols.mean() < 1.5 * poisson and rows.std() / rows.mean() < 1.5 * poisson
    naive = np.bincount(ev["x"].astype(int) * 112 // 128, minlength=112)  # the old floor mapping
    assert naive.std() / naive.mean() > 10 * poisson  # the test would catch the stripes


# fit_counts once resampled with overlapping area windows (a column counted 0.57 or 1.14 at 128 → 112);
# exact overlap weights conserve every event wherever it lies
@pytest.mark.parametrize("sensor", [128, 64, 34])
def test_every_sensor_column_carries_the_same_weight(sensor):
    weights = []
    for x in range(sensor):  # 10 events in one sensor column
        ev = make_events([x] * 10, [sensor // 2] * 10, np.arange(10), [1] * 10)
        weights.append(EventsToFrames(n_frames=1).counts(ev, (sensor, sensor)).sum() / 10)
    np.testing.assert_allclose(weights, 1.0, atol=0.02)


# ------------------------------------------------------------------------------------------------ denoise
def _edge_and_noise(seed: int = 0):
    """A vertical edge sweeping right (rows 20..99, one column step per 2 ms) plus isolated noise events."""
    rng = np.random.default_rng(seed)
    edge = [(10 + k // 2, y, 100_000 + k * 1000) for k in range(200) for y in range(20, 100)]
    noise = [(int(rng.integers(0, 128)), int(rng.integers(0, 128)), int(rng.integers(100_000, 300_000)))
             for _ in range(150)]
    rows = sorted([(t, x, y, 1) for x, y, t in edge] + [(t, x, y, 0) for x, y, t in noise])
    t, x, y, is_edge = (np.array(c) for c in zip(*rows))
    return make_events(x, y, t, is_edge), is_edge.astype(bool)  # p marks the edge (for the test only)


def test_denoise_removes_isolated_noise_and_keeps_a_moving_edge():
    ev, is_edge = _edge_and_noise()
    kept = denoise_events(ev, 1000)
    assert (kept["p"]).sum() >= 0.98 * is_edge.sum()  # the edge stays
    assert (~kept["p"]).sum() <= 0.05 * (~is_edge).sum()  # noise is gone
    s = EventStream(ev, (128, 128), "edge.npy", "npy")
    plain, clean = events_to_clip(s), events_to_clip(s, EventWindow(denoise_us=1000))
    assert "denoise_us" not in plain.meta and plain.meta["num_events"] == len(ev)  # off by default
    assert clean.meta["denoise_us"] == 1000 and clean.meta["num_events"] == len(kept)
    assert clean.meta["denoised_away"] == len(ev) - len(kept)
    assert clean.frames.shape == plain.frames.shape
    lone = EventStream(make_events([3, 90], [3, 90], [0, 500_000], [1, 1]), (128, 128), "lone.npy", "npy")
    with pytest.raises(EmptyInputError, match="lone.npy"):
        events_to_clip(lone, EventWindow(denoise_us=1000))
    with pytest.raises(InputError, match="denoise_us"):
        events_to_clip(s, EventWindow(denoise_us=0))


def test_denoise_keeps_early_events_of_a_recording_that_starts_at_zero():
    """tonic's filter keeps every event with t < filter_time (its memory starts at filter_time); ours shifts."""
    ev = make_events([5, 50, 100], [5, 50, 100], [0, 10, 20], [1, 1, 1])  # three isolated events at t ≈ 0
    assert len(denoise_events(ev, 1000)) == 0
