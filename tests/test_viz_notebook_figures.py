"""The notebook figure functions (workbench/viz: sweeps, training, confusion, gates, routing, paper) on small
hand-made tables: pure functions, so each test checks the traces, their data and the errors."""
from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import polars as pl
import pytest

from workbench.trace.schema import TRACE_SCHEMA
from workbench.viz.confusion import confusion_from_predictions, confusion_heatmap
from workbench.viz.gates import drift_by_age, recompute_per_frame, score_histogram, score_trajectories
from workbench.viz.paper import (PAPER_HEADLINE, anc_tradeoff_from_benchmark, headline_figure, headline_table,
                                 ours_from_benchmarks)
from workbench.viz.routing import decision_steps, flops_by_motion, router_features_heatmap, switch_rates
from workbench.viz.sweeps import accuracy_vs_flops, accuracy_vs_tokens
from workbench.viz.training import (accuracy_curves, eval_metrics, loss_curves, read_training_log,
                                    read_training_logs)


def trace_rows(kind, site, frames, tokens, values, target=None):
    n = len(values)
    return pl.DataFrame({"run_id": ["r"] * n, "sample_id": ["s"] * n, "frame": list(frames), "layer": [-1] * n,
                         "site": [site] * n, "token": list(tokens), "kind": [kind] * n,
                         "value": [float(v) for v in values], "target": target if target is not None else [None] * n},
                        schema=TRACE_SCHEMA)


# ---- sweeps ---------------------------------------------------------------------------------------------------

def test_accuracy_vs_tokens_one_curve_sorted_by_tokens_with_labels_and_dense_star():
    df = pl.DataFrame({"tau": [0.0, 0.2, 0.05], "tokens_per_frame": [196.0, 20.0, 60.0], "accuracy": [0.8, 0.5, 0.7]})
    fig = accuracy_vs_tokens(df, dense=(196.0, 0.8))
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == ["sweep", "dense"]
    assert list(fig.data[0].x) == [20.0, 60.0, 196.0] and list(fig.data[0].y) == [0.5, 0.7, 0.8]
    assert list(fig.data[0].text) == ["tau=0.2", "tau=0.05", "tau=0"]
    assert list(fig.data[0].textposition) == ["top center", "bottom center", "top center"]
    assert fig.data[1].marker.symbol == "star" and list(fig.data[1].x) == [196.0]


def test_accuracy_vs_tokens_groups_and_nulls():
    df = pl.DataFrame({"tau": [0.1, 0.2, 0.1, 0.2], "tokens_per_frame": [50.0, 30.0, 60.0, None],
                       "accuracy": [0.7, 0.6, 0.75, 0.7], "source": ["pixels", "pixels", "embedding", "embedding"]})
    fig = accuracy_vs_tokens(df, group="source", label=None)
    assert [t.name for t in fig.data] == ["pixels", "embedding"]
    assert list(fig.data[1].x) == [60.0]  # the row with no token count is left out
    assert fig.data[0].text is None


def test_accuracy_vs_flops_and_missing_columns():
    df = pl.DataFrame({"setting": ["anc", "anc", "sttf"], "flops_ratio": [0.5, 0.2, 0.3], "accuracy": [0.7, 0.6, 0.65]})
    fig = accuracy_vs_flops(df, dense=(1.0, 0.72))
    assert [t.name for t in fig.data] == ["anc", "sttf", "dense"]
    assert list(fig.data[0].x) == [0.2, 0.5]
    assert fig.layout.xaxis.title.text == "encoder FLOPs / dense"
    with pytest.raises(ValueError, match=r"\['meteor'\]"):
        accuracy_vs_flops(df, y="meteor")


# ---- training logs --------------------------------------------------------------------------------------------

def write_log(path, records, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


LOG = [{"kind": "train", "step": 0, "loss": 5.0, "mode": "fuse"}, {"kind": "train", "step": 10, "loss": 4.0},
       {"kind": "eval", "step": 20, "epoch": 1, "val_dense_loss": 3.0, "val_dense_token_acc": 0.4},
       {"kind": "train", "step": 20, "loss": 3.5}, {"kind": "train", "step": 30, "loss": 3.0},
       {"kind": "eval", "step": 40, "epoch": 2, "val_dense_loss": 2.5, "val_dense_token_acc": 0.5,
        "val_gesture_acc": 0.2}]


def test_read_training_log_orders_rows_and_derives_epochs(tmp_path):
    log = read_training_log(write_log(tmp_path / "m.log.jsonl", LOG))
    assert log.columns[:4] == ["run", "kind", "step", "epoch"]
    assert log["run"].unique().to_list() == ["m"]
    assert log.select("kind", "step").rows() == [("train", 0), ("train", 10), ("train", 20), ("eval", 20),
                                                 ("train", 30), ("eval", 40)]
    assert log["epoch"].to_list() == [0.0, 0.5, 1.0, 1.0, 1.5, 2.0]  # 20 steps per epoch
    assert eval_metrics(log, "_loss") == ["val_dense_loss"]
    assert eval_metrics(log, "_acc") == ["val_dense_token_acc", "val_gesture_acc"]


def test_read_training_log_tolerates_a_line_being_written_but_not_a_broken_one(tmp_path):
    log = read_training_log(write_log(tmp_path / "a.log.jsonl", LOG, tail='{"kind": "train", "st'))
    assert log.height == len(LOG)
    bad = tmp_path / "b.log.jsonl"
    bad.write_text(json.dumps(LOG[0]) + "\nnot json\n" + json.dumps(LOG[1]) + "\n")
    with pytest.raises(ValueError, match="b.log.jsonl: line 2"):
        read_training_log(bad)


def test_read_training_log_resumed_run_keeps_the_last_record(tmp_path):
    recs = LOG + [{"kind": "train", "step": 30, "loss": 2.0}]
    log = read_training_log(write_log(tmp_path / "r.log.jsonl", recs))
    assert log.filter((pl.col("kind") == "train") & (pl.col("step") == 30))["loss"].to_list() == [2.0]


def test_read_training_log_of_later_stages(tmp_path):
    """Stage 2 / 3 logs: an "init" record without a step, nested objects, lists, evals without an epoch."""
    recs = [{"kind": "init", "tau": {"pixels": 0.05}, "base": "x.safetensors"},
            {"kind": "train", "step": 0, "loss": 2.0, "tau": {"pixels": 0.05, "events": 0.3}, "mix": [0.5, 0.5]},
            {"kind": "train", "step": 50, "loss": 1.5, "tau": {"pixels": 0.06, "events": 0.3}, "mix": [1, 0]},
            {"kind": "eval", "step": 100, "pixels_token_acc": 0.6, "routing": {"low": {"flops_frac": 0.1}}},
            {"kind": "train", "step": 150, "loss": 1.2},
            {"kind": "eval", "step": 200, "pixels_token_acc": 0.7, "routing": {"low": {"flops_frac": 0.2}}}]
    log = read_training_log(write_log(tmp_path / "anc-x.log.jsonl", recs))
    assert log["kind"].to_list() == ["train", "train", "eval", "train", "eval"]
    assert log["epoch"].to_list() == [0.0, 0.5, 1.0, 1.5, 2.0]  # evals ranked 1, 2: 100 steps per epoch
    assert log["tau.pixels"].to_list()[:2] == [0.05, 0.06] and log["routing.low.flops_frac"].drop_nulls().to_list() == [0.1, 0.2]
    assert log["mix"].to_list()[:2] == ["[0.5, 0.5]", "[1, 0]"]
    assert [t.name for t in accuracy_curves(log).data] == ["pixels_token_acc"]
    stage1 = write_log(tmp_path / "m.log.jsonl", LOG)
    both = read_training_logs([stage1, tmp_path / "anc-x.log.jsonl"])
    assert both.height == len(LOG) + 5


def test_training_log_without_eval_rows_has_null_epochs(tmp_path):
    log = read_training_log(write_log(tmp_path / "t.log.jsonl", LOG[:2]))
    assert log["epoch"].null_count() == 2
    fig = loss_curves(log)
    assert [t.name for t in fig.data] == ["train loss"]
    assert len(loss_curves(log, x="epoch").data) == 0


def test_loss_and_accuracy_curves(tmp_path):
    log = read_training_log(write_log(tmp_path / "m.log.jsonl", LOG))
    fig = loss_curves(log)
    assert [t.name for t in fig.data] == ["train loss", "val_dense_loss"]
    assert list(fig.data[0].x) == [0, 10, 20, 30] and list(fig.data[0].y) == [5.0, 4.0, 3.5, 3.0]
    smooth = loss_curves(log, smooth=3)
    assert list(smooth.data[0].y) == pytest.approx([4.5, 4.1666667, 3.5, 3.25])
    acc = accuracy_curves(log, x="epoch")
    assert [t.name for t in acc.data] == ["val_dense_token_acc", "val_gesture_acc"]
    assert list(acc.data[0].x) == [1.0, 2.0] and list(acc.data[1].y) == [0.2]
    with pytest.raises(ValueError, match="'step' or 'epoch'"):
        loss_curves(log, x="time")
    with pytest.raises(ValueError, match="nope"):
        accuracy_curves(log, metrics=["nope"])


def test_several_logs_are_told_apart(tmp_path):
    a = write_log(tmp_path / "a.log.jsonl", LOG)
    b = write_log(tmp_path / "b.log.jsonl", [{"kind": "train", "step": 0, "loss": 1.0, "extra": 3}])
    log = read_training_logs([a, b])
    assert sorted(log["run"].unique().to_list()) == ["a", "b"] and "extra" in log.columns
    names = [t.name for t in loss_curves(log).data]
    assert names == ["a: train loss", "a: val_dense_loss", "b: train loss"]


def test_the_shipped_training_log_reads_when_present():
    from workbench.models.registry import weights_dir
    logs = sorted(weights_dir().glob("*.log.jsonl"))
    if not logs:
        pytest.skip("no training log in data/weights")
    log = read_training_logs(logs)
    assert log.height > 0 and "train" in set(log["kind"].unique())  # trainers may log other kinds too
    assert log["step"].null_count() == 0 and log["run"].null_count() == 0
    assert len(loss_curves(log).data) >= 1


# ---- confusion ------------------------------------------------------------------------------------------------

def test_confusion_from_predictions_and_heatmap_11_classes():
    classes = [f"c{i}" for i in range(11)]
    labels = list(range(11)) * 2
    preds = labels[:11] + [(i + 1) % 11 for i in range(11)]  # first round right, second round all wrong
    conf = confusion_from_predictions(pl.DataFrame({"label": labels, "pred": preds}), 11)
    assert conf.shape == (11, 11) and conf.sum() == 22 and np.trace(conf) == 11
    fig = confusion_heatmap(conf, classes)
    z = np.array(fig.data[0].z)
    assert z.shape == (11, 11) and np.allclose(z.sum(1), 1.0) and z[0, 0] == 0.5 and z[0, 1] == 0.5
    assert np.array(fig.data[0].text).tolist() == conf.tolist()
    assert list(fig.data[0].x) == classes and "accuracy 50.0% (n = 22)" in fig.layout.title.text
    raw = confusion_heatmap(conf, classes, normalize=None)
    assert np.array(raw.data[0].z).tolist() == conf.tolist()
    assert np.isclose(np.array(confusion_heatmap(conf, classes, normalize="all").data[0].z).sum(), 1.0)


def test_confusion_rows_without_clips_and_bad_input():
    conf = np.array([[2, 0], [0, 0]])
    z = np.array(confusion_heatmap(conf, ["a", "b"]).data[0].z)
    assert z.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="square"):
        confusion_heatmap(np.zeros((2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="3 class names"):
        confusion_heatmap(conf, ["a", "b", "c"])
    with pytest.raises(ValueError, match="normalize"):
        confusion_heatmap(conf, ["a", "b"], normalize="rows")
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        confusion_from_predictions(pl.DataFrame({"label": [0, 2], "pred": [0, 1]}), 2)
    assert "no clips" in confusion_heatmap(np.zeros((2, 2), int), ["a", "b"]).layout.title.text


# ---- STTF gate figures ----------------------------------------------------------------------------------------

def test_score_trajectories_marks_fired_frames_and_tau():
    df = pl.DataFrame({"frame": [2, 0, 1] * 2, "score": [0.06, 0.0, 0.03, 0.03, 0.0, 0.03], "label": ["ref"] * 3 + ["prev"] * 3,
                       "fired": [True, True, False, False, True, False]})
    fig = score_trajectories(df, tau=0.05)
    assert [t.name for t in fig.data] == ["ref", "ref fires", "prev", "prev fires"]
    assert list(fig.data[0].x) == [0, 1, 2] and list(fig.data[1].x) == [0, 2] and list(fig.data[3].x) == [0]
    assert fig.layout.shapes[0].y0 == 0.05
    assert [t.name for t in score_trajectories(df.drop("fired")).data] == ["ref", "prev"]


def test_recompute_per_frame_step_lines_with_means():
    df = pl.DataFrame({"frame": [0, 1, 0, 1], "recomputed": [196.0, 10.0, 196.0, 30.0], "label": ["a", "a", "b", "b"]})
    fig = recompute_per_frame(df, total=196)
    assert [t.name for t in fig.data] == ["a (mean 103.0)", "b (mean 113.0)"]
    assert fig.data[0].line.shape == "hv" and fig.layout.shapes[0].y0 == 196


def test_score_histogram_from_a_trace():
    scores = [0.0, 0.01, 0.1, 1.0]
    tr = pl.concat([trace_rows("change_score", "sttf.gate", [0] * 4, range(4), [5.0] * 4),
                    trace_rows("change_score", "sttf.gate", [1] * 4, range(4), scores)])
    fig = score_histogram(tr, taus=[0.05])
    assert list(fig.data[0].x) == pytest.approx([-2.0, -1.0, 0.0])  # log10 of the positive scores of frame 1
    assert "4 patch-frames, 1 exactly 0" in fig.layout.title.text
    assert "50% recompute" in fig.layout.annotations[0].text
    lin = score_histogram(tr, log_x=False, skip_first=False)
    assert len(lin.data[0].x) == 8
    with pytest.raises(ValueError, match="no change_score rows"):
        score_histogram(tr, site="elsewhere")


def test_drift_by_age_joins_drift_and_reference_age():
    tr = pl.concat([trace_rows("drift", "sttf.encoder", [0, 0, 1, 1], [0, 1, 0, 1], [0.0, 0.0, 0.01, 0.03]),
                    trace_rows("ref_age", "sttf.gate", [0, 0, 1, 1], [0, 1, 0, 1], [0, 0, 0, 1])])
    fig = drift_by_age(tr)
    assert list(fig.data[0].x) == [0.0, 1.0]
    assert list(fig.data[0].y) == pytest.approx([0.01 / 3, 0.03])
    assert [row[0] for row in fig.data[0].customdata] == [3, 1]
    with pytest.raises(ValueError, match="debug"):
        drift_by_age(tr.filter(pl.col("kind") != "drift"))


# ---- ANC router figures ---------------------------------------------------------------------------------------

def test_router_features_heatmap_is_feature_by_frame():
    tr = trace_rows("router_feature", "anc.router", [0, 0, 0, 1, 1, 1], [0, 1, 2] * 2, [1, 2, 3, 4, 5, 6])
    fig = router_features_heatmap(tr, ["a", "b", "c"])
    assert np.array(fig.data[0].z).tolist() == [[1, 4], [2, 5], [3, 6]]
    assert list(fig.data[0].y) == ["a", "b", "c"] and list(fig.data[0].x) == [0, 1]
    with pytest.raises(ValueError, match="2 feature names"):
        router_features_heatmap(tr, ["a", "b"])
    with pytest.raises(ValueError, match="no router_feature"):
        router_features_heatmap(tr.filter(pl.col("frame") < 0))


def test_decision_steps_counts_switches():
    df = pl.DataFrame({"frame": [0, 1, 2, 3] * 2, "choice": [3, 0, 1, 0, 3, 0, 0, 0],
                       "setting": ["h=0"] * 4 + ["h=0.3"] * 4})
    fig = decision_steps(df, ("skip", "light", "medium", "full"))
    assert [t.name for t in fig.data] == ["h=0 (3 switches)", "h=0.3 (1 switches)"]
    assert list(fig.data[1].customdata) == ["full", "skip", "skip", "skip"]
    assert np.round(fig.data[0].y, 2).tolist() == [2.97, -0.03, 0.97, -0.03]  # nudged apart, same branches


def test_flops_by_motion_orders_levels_and_groups():
    df = pl.DataFrame({"motion_level": ["high", "static", "low", "high"], "flops_ratio": [0.9, 0.1, 0.3, 0.8],
                       "setting": ["a", "a", "a", "b"]})
    fig = flops_by_motion(df, group="setting")
    assert [t.name for t in fig.data] == ["a", "b"] and all(t.type == "box" for t in fig.data)
    assert list(fig.layout.xaxis.categoryarray) == ["static", "low", "high"]
    assert fig.layout.shapes[0].y0 == 1.0


def test_switch_rates_means_per_group_and_level():
    df = pl.DataFrame({"motion_level": ["low", "low", "high"] * 2, "switches_per_s": [1.0, 3.0, 4.0, 0.0, 1.0, 2.0],
                       "setting": ["h=0"] * 3 + ["h=0.1"] * 3})
    fig = switch_rates(df)
    assert [t.name for t in fig.data] == ["h=0", "h=0.1"]
    assert list(fig.data[0].y) == [2.0, 4.0] and list(fig.data[1].y) == [0.5, 2.0]
    assert list(fig.data[0].customdata) == [2, 1]


# ---- the paper's table ----------------------------------------------------------------------------------------

def test_headline_table_has_every_claim_and_rejects_unknown_keys():
    df = headline_table({"sttf_tokens_per_frame": 29.0, "anc_cider": None}, {"sttf_tokens_per_frame": "bench"})
    assert df.height == len(PAPER_HEADLINE)
    row = df.filter(pl.col("key") == "sttf_tokens_per_frame").row(0, named=True)
    assert (row["paper"], row["ours"], row["ours_source"]) == (31.0, 29.0, "bench")
    assert df.filter(pl.col("key") == "anc_cider")["ours_source"].item() == "not measured"
    assert df.filter(pl.col("key") == "sttf_cider")["paper"].item() == 131.2
    with pytest.raises(ValueError, match="cidre"):
        headline_table({"cidre": 1.0})
    fig = headline_figure(df)
    assert fig.data[0].type == "table" and len(fig.data[0].cells.values[0]) == len(PAPER_HEADLINE)
    assert "29.0" in fig.data[0].cells.values[2] and "–" in fig.data[0].cells.values[2]
    assert set(fig.data[0].cells.values[3]) == {"–"}  # no dense baseline given


def test_headline_table_with_a_dense_baseline():
    df = headline_table({"sttf_cider": 38.0}, dense={"sttf_cider": 40.34, "sttf_tokens_per_frame": 196.0})
    assert df.filter(pl.col("key") == "sttf_cider").select("ours", "dense").row(0) == (38.0, 40.34)
    assert df.filter(pl.col("key") == "sttf_tokens_per_frame").select("ours", "dense").row(0) == (None, 196.0)
    assert "40.3" in headline_figure(df).data[0].cells.values[3]
    with pytest.raises(ValueError, match="bogus"):
        headline_table({}, dense={"bogus": 1.0})


def test_ours_from_benchmarks_reads_what_the_files_hold():
    sttf = {"rows": [{"setting": "dense", "weights": "base", "tok_shapes": 196.0, "cider": 1.0, "gesture_acc": 0.95},
                     {"setting": "ρ=0.158 pixels/events", "weights": "base", "tok_shapes": 30.0, "gesture_acc": 0.9,
                      "cider": 1.1, "bleu4": 0.3, "wall_stream": 2.0, "wall_clip": 3.5},
                     {"setting": "dense (stage-2 weights)", "weights": "stage2", "tok_shapes": 196.0, "cider": 0.8},
                     {"setting": "ρ=0.158 pixels/events", "weights": "stage2", "tok_shapes": 40.0, "cider": 0.7}]}
    anc = {"meta": {"quality_overall": {"anc": {"cider": 101.0}, "dense": {"cider": 103.0}}},
           "rows": [{"clips": "static", "flops_saved_pct": 95.0}, {"clips": "low", "flops_saved_pct": 88.0}]}
    vals, src, dense = ours_from_benchmarks(sttf, anc)
    # the stage-2 row wins, and its dense baseline is the stage-2 dense row
    assert vals["sttf_tokens_per_frame"] == 40.0 and vals["sttf_token_reduction_pct"] == pytest.approx(100 * 156 / 196)
    assert vals["sttf_cider"] == pytest.approx(70.0) and dense["sttf_cider"] == pytest.approx(80.0)
    assert "sttf_gesture_acc_pct" not in vals and "sttf_latency_speedup" not in vals
    assert src["sttf_cider"] == "bench_sttf: ρ=0.158 pixels/events (stage2)"
    assert vals["anc_cider"] == 101.0 and dense["anc_cider"] == 103.0
    assert vals["anc_flops_saved_low_motion_pct"] == 88.0 and dense["anc_flops_saved_low_motion_pct"] == 0.0
    base_only = {"rows": sttf["rows"][:2]}
    vals, src, dense = ours_from_benchmarks(base_only, None)
    assert vals["sttf_gesture_acc_pct"] == pytest.approx(90.0) and dense["sttf_gesture_acc_pct"] == pytest.approx(95.0)
    assert vals["sttf_latency_speedup"] == 3.5 and dense["sttf_latency_speedup"] == 1.0
    assert "sttf_bleu4" in vals and "sttf_bleu4" not in dense  # the dense row has no BLEU-4
    assert ours_from_benchmarks(None, None) == ({}, {}, {})
    assert ours_from_benchmarks({"rows": "garbage"}, {"rows": [None]}) == ({}, {}, {})


def test_anc_tradeoff_from_benchmark():
    anc = {"rows": [{"clips": "low", "flops_ratio": 0.1, "dense_cider": 90.0, "anc_cider": 88.0},
                    {"clips": "gesture (events)", "flops_ratio": 0.4, "dense_acc": 50.0, "anc_acc": 45.0},
                    {"clips": "high", "flops_ratio": None}]}
    df = anc_tradeoff_from_benchmark(anc)
    assert df.rows() == [("low", "dense", 1.0, 90.0, "CIDEr ×100"), ("low", "anc", 0.1, 88.0, "CIDEr ×100"),
                         ("gesture (events)", "dense", 1.0, 50.0, "gesture accuracy %"),
                         ("gesture (events)", "anc", 0.4, 45.0, "gesture accuracy %")]
    assert anc_tradeoff_from_benchmark(None).height == 0
    fig = accuracy_vs_flops(df.filter(pl.col("metric") == "CIDEr ×100"), group="level", label="method")
    assert list(fig.data[0].x) == [0.1, 1.0] and list(fig.data[0].text) == ["anc", "dense"]
