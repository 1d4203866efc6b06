"""The dashboard app: callbacks called directly on samples and real files, then one real Gradio server per
module driven by gradio_client (end to end, a corrupt upload followed by a good one, concurrent clients,
per-session state). The browser test lives in test_app_browser.py."""
from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from workbench.errors import InputError, InputTooLargeError
from workbench.methods.anc_modules import ANCModule
from workbench.trace.schema import read_trace
from workbench.ui import callbacks as cb
from workbench.ui import inputs
from workbench.ui.inputs import UploadLimits, check_upload
from workbench.ui.methods import MethodSpec, MethodUnavailableError, anc_weights_path, method_status
from workbench.ui.session import SessionCache

MODEL = "tinyvlm-debug"
N = 8  # frames per clip in these tests


# ---- callbacks, directly ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", cb.SAMPLE_NAMES)
def test_every_sample_runs_through_the_dashboard(name):
    a = cb.analyse(None, name, MethodSpec("sttf"), SessionCache(), MODEL, N, metrics=False)
    clip = a.clip
    assert clip.num_frames == N and a.result.method == "sttf" and a.dense.method == "dense"
    assert a.dense.tokens_per_frame == 196.0 and a.result.tokens_per_frame < 196.0
    assert (a.result.gesture is not None) == (clip.modality == "events")
    if name == "scene cut":  # the cut survives the shorter clip: the gate fires a dense frame at it
        cut = a.result.trace.filter((a.result.trace["kind"] == "scene_cut") & (a.result.trace["value"] > 0))
        assert cut["frame"].to_list() == [N // 2]
    v = cb.render_views(a, N - 1, "motion (ground truth)", "time surface")
    assert "truth vs gate" in v.overlay.layout.title.text  # every sample has a ground-truth motion mask
    assert (len(v.events.data) > 0) == (clip.events is not None)
    assert f"{a.result.tokens_per_frame:.3g} per frame" in v.tokens.layout.title.text
    table = cb.summary(a)
    assert table["compressed"][0] == pytest.approx(a.result.tokens_per_frame, abs=1e-3)
    md = cb.details_markdown(a)
    assert clip.sample_id in md and "STTF" in md


def test_rerun_with_new_knobs_reuses_the_decoded_upload_and_the_dense_run(real_data, tmp_path, monkeypatch):
    loads = []
    real_load = inputs.load_clip
    monkeypatch.setattr(inputs, "load_clip", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    video = tmp_path / "carphone.mp4"
    shutil.copy(real_data / "video" / "carphone.mp4", video)
    cache = SessionCache()
    a1 = cb.analyse(str(video), None, MethodSpec("sttf", tau=0.05), cache, MODEL, N, metrics=False)
    a2 = cb.analyse(str(video), None, MethodSpec("sttf", tau=0.2, keyframe_every=4), cache, MODEL, N, metrics=False)
    assert len(loads) == 1 and a2.clip is a1.clip and a2.dense is a1.dense
    assert a2.reused == {"clip": True, "dense": True, "run": False}
    assert a2.result.tokens_per_frame < a1.result.tokens_per_frame  # a higher τ recomputes less
    same = tmp_path / "renamed.mp4"  # the same content under another name: found by its hash
    shutil.copy(video, same)
    a3 = cb.analyse(str(same), None, MethodSpec("sttf", tau=0.05), cache, MODEL, N, metrics=False)
    assert len(loads) == 1 and a3.result is a1.result and a3.reused["run"]
    assert cache.counters["decodes"] == 1 and cache.counters["dense_runs"] == 1 and cache.counters["method_runs"] == 2
    df, run = read_trace(cb.write_run_trace(a2, tmp_path))
    assert set(df["run_id"].unique()) == {a2.dense.run_id, a2.result.run_id}
    assert run["baseline"]["method"] == "dense" and run["dashboard"]["tau"] == 0.2 and run["method"] == "sttf"


def test_budget_policy_and_impossible_settings():
    cache = SessionCache()
    a = cb.analyse(None, "slow motion", MethodSpec("sttf", policy="budget", budget=40), cache, MODEL, N, metrics=False)
    assert a.result.run["method_config"]["policy"] == "budget"
    assert 196 / N <= a.result.tokens_per_frame <= 40  # met from below, above the keyframe floor
    with pytest.raises(InputError, match="cannot be met"):
        cb.analyse(None, "slow motion", MethodSpec("sttf", policy="budget", budget=10), cache, MODEL, N, metrics=False)
    with pytest.raises(InputError, match="needs an event-camera input"):
        cb.analyse(None, "slow motion", MethodSpec("sttf", source="events"), cache, MODEL, N, metrics=False)
    with pytest.raises(InputError, match="method must be"):
        MethodSpec.from_label("SparseVLM")
    with pytest.raises(InputError, match="choose 8 or 16"):
        cb.analyse(None, "slow motion", MethodSpec(), cache, MODEL, 12)


def test_anc_modes_without_weights_say_so_and_run_with_a_module():
    model = cb.get_model(MODEL)
    assert not anc_weights_path(model).exists()  # nobody ships ANC weights for the random debug model
    for label in ("ANC", "STTF+ANC"):
        with pytest.raises(MethodUnavailableError, match="not shipped yet"):
            cb.analyse(None, "fast motion", MethodSpec.from_label(label), SessionCache(), MODEL, N, metrics=False)
        assert method_status(label, model).startswith("⚠") and "not shipped" in method_status(label, model)
    assert not method_status("STTF", model).startswith("⚠")
    module = ANCModule.for_model(model, seed=1)
    a = cb.analyse(None, "fast motion", MethodSpec("anc", hysteresis=0.0), SessionCache(), MODEL, N, metrics=False,
                   anc_module=module)
    v = cb.render_views(a, 2)
    assert a.result.method == "anc" and v.timeline.layout.title.text.startswith("router:")
    assert "anc.route_choice" in v.overlay.layout.title.text


def test_combined_mode_with_a_module():
    pytest.importorskip("workbench.methods.combined", reason="STTF+ANC (workbench/methods/combined.py) not shipped")
    module = ANCModule.for_model(cb.get_model(MODEL), seed=1)
    a = cb.analyse(None, "fast motion", MethodSpec("sttf+anc"), SessionCache(), MODEL, N, metrics=False,
                   anc_module=module)
    v = cb.render_views(a, 3)
    assert a.result.method == "sttf+anc" and a.result.tokens_per_frame < 196
    assert v.timeline.layout.title.text.startswith("router:") and "(sttf.fusion)" in v.overlay.layout.title.text


def test_shipped_anc_weights_run_in_the_app():
    from workbench.models.registry import model_path
    if not model_path("tinyvlm-shapes").is_file():
        pytest.skip("tinyvlm-shapes weights are not in data/weights yet")
    model = cb.get_model("tinyvlm-shapes")
    if not anc_weights_path(model).is_file():
        pytest.skip(f"ANC weights {anc_weights_path(model).name} are not shipped yet (stage 3 training pending)")
    assert not method_status("ANC", model).startswith("⚠")
    a = cb.analyse(None, "slow motion", MethodSpec("anc"), SessionCache(), "tinyvlm-shapes", N, metrics=False)
    choices = a.result.trace.filter(a.result.trace["kind"] == "route_choice")["value"].to_numpy()
    assert len(choices) == N and choices[0] != 0
    assert cb.render_views(a, 1).timeline.layout.title.text.startswith("router:")


def test_caption_metrics_score_both_captions_against_the_references():
    if shutil.which("java") is None:
        pytest.skip("pycocoevalcap needs Java for its tokenizer and METEOR")
    refs = ["a red circle moves left on a black background", "a small red circle slides to the left"]
    m = cb.caption_metrics(refs, refs[0], "blue squares everywhere")
    rows = {r["caption"]: r for r in m.iter_rows(named=True)}
    assert rows["dense"]["bleu1"] == pytest.approx(1.0) and rows["dense"]["rouge_l"] == pytest.approx(1.0)
    assert rows["compressed"]["bleu1"] < 0.5 and rows["compressed"]["meteor"] < rows["dense"]["meteor"]
    assert "no reference captions" in cb.caption_metrics([], "a", "b")


def test_bad_uploads_are_clear_errors_naming_the_file(tmp_path, real_data, monkeypatch):
    bad = tmp_path / "holiday.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(InputError) as e:
        cb.analyse(str(bad), None, MethodSpec(), SessionCache(), MODEL, N)
    assert "holiday.mp4" in str(e.value) and str(tmp_path) not in str(e.value)
    with pytest.raises(InputError, match="pick a sample"):
        cb.analyse(None, None, MethodSpec(), SessionCache(), MODEL, N)
    big = tmp_path / "big.npy"
    with open(big, "wb") as f:
        f.truncate(3 * 2**20)
    monkeypatch.setattr(cb, "MAX_UPLOAD_MB", 2)
    with pytest.raises(InputTooLargeError, match="upload limit"):
        cb.load_input(str(big), None)
    video = real_data / "video" / "bikes.mp4"  # 640×272, 10 s
    with pytest.raises(InputTooLargeError, match="640×272"):
        check_upload(video, UploadLimits(max_long_side=320))
    with pytest.raises(InputTooLargeError, match="lasts 0.2 min"):
        check_upload(video, UploadLimits(max_duration_s=5))
    check_upload(video)  # within the app's limits


def test_describe_input_dense_captioner(real_data):
    res = cb.describe_input(str(real_data / "video" / "carphone.mp4"), "static scene", MODEL, N)
    assert res.clip.sample_id == "carphone" and res.tokens_per_frame == 196.0 and "video" in res.details_markdown()
    assert len(cb.gallery(res.clip)) == N


# ---- a launched server, driven by gradio_client ----------------------------------------------------------------

def args(upload=None, sample="slow motion", method="STTF", tau=0.05, source="pixels", metrics=False):
    return (upload, sample, N, method, "threshold", tau, 31, 0, source, 0.1, metrics, "decision", "binned frames")


def title(plot) -> str:
    return json.loads(plot["plot"])["layout"]["title"]["text"]


@pytest.fixture(scope="module")
def server(dashboard_server):
    return dashboard_server  # tests/conftest.py: the dashboard on tinyvlm-debug, served for this module


def client(server):
    from gradio_client import Client
    return Client(server.local_url, verbose=False)


def test_gradio_client_end_to_end(server, tmp_path):
    c = client(server)
    assert set(c.view_api(return_format="dict", print_info=False)["named_endpoints"]) == {
        "/analyse", "/frame", "/stream", "/stream_frame", "/prune", "/prune_frame",
        "/compare", "/compare_frame", "/adapt", "/adapt_tokens"}  # clip, stream, question, compare, cloud-device
    out = c.predict(*args(sample="fast motion", metrics=True), api_name="/analyse")
    (dense_cap, cap, metrics_md, slider, overlay, timeline, tokens, flops, events, summary, trace, details) = out
    assert isinstance(cap, str) and isinstance(dense_cap, str) and "shapes-0" in details
    assert "BLEU-4" in metrics_md or "unavailable" in metrics_md
    assert slider["maximum"] == N - 1
    assert title(overlay).startswith("frame 0 ·") and "recomputed" in title(overlay)
    assert "per frame vs 196 dense" in title(tokens) and "MFLOPs" in title(flops)
    assert summary["headers"] == ["metric", "dense", "compressed", "ratio"]
    df, run = read_trace(trace)
    assert run["sample_id"] == "shapes-0" and df["run_id"].n_unique() == 2
    # the slider re-renders every view at another frame from the session's state, nothing recomputed
    views = c.predict(5, "change score", "binned frames", api_name="/frame")
    assert title(views[0]).startswith("frame 5 · change score")
    assert any(s.get("x0") == 5 for s in json.loads(views[2]["plot"])["layout"]["shapes"])


def test_corrupt_upload_shows_the_error_and_the_next_upload_works(server, tmp_path, real_data):
    from gradio_client import handle_file
    c = client(server)
    bad = tmp_path / "broken.avi"
    bad.write_bytes(b"\x00RIFF" * 50)
    with pytest.raises(Exception, match="broken.avi"):
        c.predict(*args(upload=handle_file(str(bad))), api_name="/analyse")
    video = tmp_path / "realshort.mp4"
    shutil.copy(real_data / "video" / "realshort.mp4", video)
    out = c.predict(*args(upload=handle_file(str(video))), api_name="/analyse")
    assert "realshort" in out[-1] and "mp4" in out[-1] and title(out[4]).startswith("frame 0")
    events = tmp_path / "walk.aedat"  # an event file: the event stream view shows its events
    shutil.copy(real_data / "events" / "dvs128_walking.aedat", events)
    out = c.predict(*args(upload=handle_file(str(events)), source="events"), api_name="/analyse")
    assert "aedat2" in out[-1] and "events" in title(out[8])


def test_concurrent_clients_complete_with_their_own_state(server):
    jobs = [("static scene", "dense"), ("fast motion", "STTF"), ("gesture events", "STTF"), ("scene cut", "STTF")]
    barrier = threading.Barrier(len(jobs))

    def one(job):
        sample, method = job
        c = client(server)
        barrier.wait(timeout=60)
        out = c.predict(*args(sample=sample, method=method), api_name="/analyse")
        views = c.predict(3, "decision", "binned frames", api_name="/frame")
        return out[-1], title(views[0])

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(one, jobs))
    ids = [inputs.sample_clip(s, N).sample_id for s, _ in jobs]
    for (details, overlay), sid, (_, method) in zip(results, ids, jobs):
        assert f"`{sid}`" in details and all(f"`{o}`" not in details for o in ids if o != sid)
        assert overlay.startswith("frame 3 ·") and (("(dense)" in overlay) == (method == "dense"))
    # a fresh session has no analysis: it cannot see anybody else's
    fresh = client(server).predict(3, "decision", "binned frames", api_name="/frame")
    assert json.loads(fresh[0]["plot"])["layout"]["annotations"][0]["text"] == "run an input first"


def test_anc_mode_error_keeps_the_server_serving(server):
    c = client(server)
    with pytest.raises(Exception, match="not shipped yet"):
        c.predict(*args(method="ANC"), api_name="/analyse")
    out = c.predict(*args(method="dense"), api_name="/analyse")
    assert np.isclose(out[9]["data"][0][2], 196.0)
