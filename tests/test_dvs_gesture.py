"""The real DVS128 Gesture harness on a tiny fake dataset in the real layout (AEDAT 3.1 + label files)."""
from __future__ import annotations

import json
import shutil
import time

import numpy as np
import polars as pl
import pytest
import torch

try:  # the writers live in the reader tests (tests/ is on sys.path in pytest's default import mode)
    from test_event_readers import write_aedat31, write_labels
except ImportError:  # tests/ became a package
    from tests.test_event_readers import write_aedat31, write_labels
from workbench.data.events import make_events
from workbench.data.load import EventWindow
from workbench.eval.dvs_gesture import find_test_recordings, recording_clips, run_dvs_gesture_eval
from workbench.errors import InputError
from workbench.models.registry import create_model
from workbench.pipeline import Dense, FrameStats

# user → lighting → [(class number 1..11, start µs, end µs)]; user03 is training split and must be ignored
DATASET = {24: {"led": [(1, 1_000_000, 1_600_000), (5, 2_000_000, 2_500_000), (11, 3_000_000, 3_400_000)],
                "natural": [(2, 500_000, 900_000), (8, 1_200_000, 1_500_000)]},
           25: {"fluorescent": [(3, 1_000_000, 2_000_000), (9, 2_200_000, 2_600_000)]},
           3: {"lab": [(4, 1_000_000, 1_500_000), (6, 2_000_000, 2_500_000)]}}
TEST_SEGMENTS = 7


def _recording(segments, seed: int) -> np.ndarray:
    """Sparse background events plus, per gesture, a blob whose place and drift depend on the class."""
    rng = np.random.default_rng(seed)
    end = max(b for _, _, b in segments) + 300_000
    parts = [(rng.integers(0, 128, 400), rng.integers(0, 128, 400), rng.integers(0, end, 400))]
    for cls, a, b in segments:
        n = 1500
        t = rng.integers(a, b, n)
        phase = (t - a) / (b - a)  # 0..1 through the gesture
        cx = 20 + 8 * cls + 30 * phase * (1 if cls % 2 else -1)
        cy = 30 + 6 * cls
        parts.append((np.clip(cx + rng.normal(0, 4, n), 0, 127).astype(int),
                      np.clip(cy + rng.normal(0, 4, n), 0, 127).astype(int), t))
    x, y, t = (np.concatenate(c) for c in zip(*parts))
    order = np.argsort(t, kind="stable")
    return make_events(x[order], y[order], t[order], rng.integers(0, 2, len(t)))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("dvs") / "DVS128Gesture"
    folder = root / "DvsGesture"
    folder.mkdir(parents=True)
    for user, lightings in DATASET.items():
        for i, (lighting, segments) in enumerate(lightings.items()):
            name = f"user{user:02d}_{lighting}"
            write_aedat31(folder / f"{name}.aedat", _recording(segments, 100 * user + i), packet=512)
            write_labels(folder / f"{name}_labels.csv", segments)
    (folder / "trials_to_test.txt").write_text("user24_led.aedat\n")  # other files in the folder are ignored
    return root


@pytest.fixture(scope="module")
def model():
    """The tiny random model, on one thread: two threads beside a busy CPU make each step ~40× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield create_model("tinyvlm-debug")
    torch.set_num_threads(threads)


class EveryOtherPatch:
    """A toy compression method: dense encoding, then every second patch of each frame (98 tokens per frame)."""

    name = "every-other-patch"

    def config(self) -> dict:
        return {"keep": "even patches"}

    def visual_tokens(self, model, frames, modality, clip=None, count=False):
        vt, stats = Dense().visual_tokens(model, frames, modality, clip, count)
        keep = torch.nonzero(vt.patch[0] % 2 == 0).T  # (1, K)
        t = frames.shape[1]
        half = np.full(t, model.cfg.num_patches // 2)
        return vt.select(keep), FrameStats(stats.tokens_computed, half, stats.encoder_flops, stats.encoder_ms)


def test_finds_only_test_users(dataset):
    recs = find_test_recordings(dataset)
    assert [r.name for r in recs] == ["user24_led", "user24_natural", "user25_fluorescent"]
    assert all(24 <= r.user <= 29 and r.labels.is_file() for r in recs)
    assert [r.name for r in find_test_recordings(dataset / "DvsGesture")] == [r.name for r in recs]  # the folder


def test_recording_clips(dataset):
    rec = find_test_recordings(dataset)[0]
    clips = recording_clips(rec)
    assert [c.label for c in clips] == [0, 4, 10]
    c = clips[0]
    assert c.frames.shape == (16, 2, 112, 112) and c.modality == "events" and c.meta["format"] == "aedat3.1"
    assert c.meta["window_us"] == (1_000_000, 1_600_000)  # shorter than 2 s: the gesture's end
    assert (c.meta["user"], c.meta["lighting"], c.meta["segment"], c.sample_id) == (24, "led", 0, "user24_led#0")
    short = recording_clips(rec, EventWindow(n_frames=8, start_s=0.1, duration_s=0.2))
    assert short[0].frames.shape[0] == 8 and short[0].meta["window_us"] == (1_100_000, 1_300_000)
    assert not np.allclose(clips[0].frames, clips[1].frames)  # the segments differ


def test_harness_structure(dataset, model, tmp_path):
    start = time.perf_counter()
    res = run_dvs_gesture_eval(model, dataset, tmp_path / "out", methods={"dense": Dense(), "half": EveryOtherPatch()},
                               progress=False)
    assert res["recordings"] == ["user24_led", "user24_natural", "user25_fluorescent"]
    assert set(res["methods"]) == {"dense", "half"} and res["gesture"]["method"] == "dense"
    for name, tpf in (("dense", 196.0), ("half", 98.0)):
        m = res["methods"][name]
        conf = np.array(m["confusion"])
        assert conf.shape == (11, 11) and conf.sum() == m["n"] == TEST_SEGMENTS
        truth = conf.sum(1)  # rows = true classes: 1, 5, 11, 2, 8, 3, 9 (class numbers)
        assert truth.tolist() == [1 if c in (0, 4, 10, 1, 7, 2, 8) else 0 for c in range(11)]
        assert m["accuracy"] == pytest.approx(np.trace(conf) / TEST_SEGMENTS)
        assert m["tokens_per_frame"] == tpf
        assert set(m["by_lighting"]) == {"led", "natural", "fluorescent"}
    assert res["gesture"]["n"] == TEST_SEGMENTS and res["gesture"]["tokens_per_frame"] == 196.0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["methods"]["dense"]["confusion"] == res["methods"]["dense"]["confusion"]
    per = pl.read_parquet(tmp_path / "out" / "dvs_gesture.parquet")
    assert per.height == 2 * TEST_SEGMENTS and set(per["method"]) == {"dense", "half"}
    assert {"sample_id", "user", "lighting", "label", "pred", "pred_name", "correct", "tokens_per_frame",
            "num_events", "window_start_us", "window_end_us"} <= set(per.columns)
    assert set(per["user"]) == {24, 25}  # user03 (training split) never evaluated
    assert per.filter(pl.col("method") == "dense")["correct"].sum() == np.trace(res["methods"]["dense"]["confusion"])
    assert time.perf_counter() - start < 120


def test_default_is_dense_and_limit(dataset, model, tmp_path):
    res = run_dvs_gesture_eval(model, dataset / "DvsGesture", tmp_path, limit=4, progress=False)  # as the CLI calls it
    assert list(res["methods"]) == ["dense"] and res["gesture"]["n"] == 4
    assert res["recordings"] == ["user24_led", "user24_natural"]
    assert pl.read_parquet(tmp_path / "dvs_gesture.parquet").height == 4
    again = run_dvs_gesture_eval(model, dataset, tmp_path / "again", limit=4, progress=False)
    assert again["methods"]["dense"]["confusion"] == res["methods"]["dense"]["confusion"]  # deterministic


def test_missing_or_empty_root_explains_the_layout(tmp_path, model, dataset):
    with pytest.raises(InputError, match="no such folder.*userXX_<lighting>.aedat"):
        run_dvs_gesture_eval(model, tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty.*no userXX_<lighting>.aedat recordings.*DvsGesture"):
        run_dvs_gesture_eval(model, tmp_path / "empty", tmp_path / "out")
    (tmp_path / "file.aedat").write_bytes(b"x")
    with pytest.raises(InputError, match="is a file"):
        run_dvs_gesture_eval(model, tmp_path / "file.aedat", tmp_path / "out")
    train = tmp_path / "train_only"
    train.mkdir()
    for f in (dataset / "DvsGesture").glob("user03_*"):
        shutil.copy(f, train / f.name)
    with pytest.raises(InputError, match="none of the test users 24-29"):
        run_dvs_gesture_eval(model, train, tmp_path / "out")
    (train / "user26_led.aedat").write_bytes((dataset / "DvsGesture" / "user24_led.aedat").read_bytes())
    with pytest.raises(InputError, match="user26_led.aedat.*no label file user26_led_labels.csv"):
        run_dvs_gesture_eval(model, train, tmp_path / "out")
    with pytest.raises(InputError, match="limit"):
        run_dvs_gesture_eval(model, dataset, tmp_path / "out", limit=0)
    assert not (tmp_path / "out").exists()  # nothing written on bad input


def test_cli_calls_the_harness(dataset, model, tmp_path, capsys):  # model: one torch thread
    from workbench import cli

    code = cli.main(["eval", "gesture", "--model", "tinyvlm-debug", "--root", str(dataset), "--limit", "2",
                     "--out", str(tmp_path / "cli")])
    assert code == 0 and "gesture accuracy" in capsys.readouterr().out
    assert json.loads((tmp_path / "cli" / "results.json").read_text())["gesture"]["n"] == 2
    with pytest.raises(SystemExit) as e:  # checked with the other knobs, before the model loads
        cli.main(["eval", "gesture", "--model", "tinyvlm-debug", "--root", str(tmp_path / "nope")])
    assert e.value.code == 2 and "--root must name an existing folder" in capsys.readouterr().err
