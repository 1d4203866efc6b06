"""The dashboard's cloud-device tab as plain functions (no gradio here): run adaptation rounds on a shifted
domain against a real cloud process, and draw what happened.

`run_rounds` starts `workbench cloud serve` on a free loopback port, runs `adapt.run.run_adaptation` (the same
code as `workbench adapt`) and keeps the record and its UTS trace in an `AdaptSession`. The baselines of the
committed benchmark (`benchmarks/results/cloud_device.runs.json`, same domain) are drawn beside the session's
own run when the file is there. `token_view` redraws one uploaded sample's frame with its per-token
uncertainty and the tokens that were not sent.

    >>> s = demo_session()
    >>> sorted(vars(adapt_views(s)))
    ['accuracy', 'bytes', 'confidence', 'delta']
    >>> token_view(s, s.uploaded[0], 0).layout.title.text.startswith("MC-dropout")
    True
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import numpy as np
import plotly.graph_objects as go
import polars as pl

from workbench.adapt.akd import AKDConfig
from workbench.adapt.device import DeviceConfig
from workbench.adapt.run import AdaptConfig, run_adaptation
from workbench.adapt.uts import UTSConfig
from workbench.data.shifts import DOMAINS, shifted_clip
from workbench.errors import InputError
from workbench.models.registry import REPO_ROOT
from workbench.trace.schema import DECISIONS
from workbench.viz.adapt import accuracy_figure, bytes_figure, confidence_figure, delta_figure, uncertainty_figure
from workbench.viz.style import message_figure

__all__ = ["AdaptSession", "AdaptViews", "run_rounds", "adapt_views", "token_view", "summary_markdown",
           "demo_session", "BENCH_RUNS", "DOMAIN_CHOICES"]

BENCH_RUNS = REPO_ROOT / "benchmarks" / "results" / "cloud_device.runs.json"
DOMAIN_CHOICES = tuple(DOMAINS)
BASELINES = ("send everything", "random subset, same budget", "pseudo-labels only", "full fine-tuning")


@dataclass
class AdaptSession:
    record: dict
    trace: pl.DataFrame
    threshold: float
    baselines: dict = field(default_factory=dict)

    @property
    def domain(self) -> str:
        return self.record["domain"]

    @property
    def uploaded(self) -> list[str]:
        return [s["sample_id"] for s in self.record["samples"] if s["uploaded"]]


@dataclass
class AdaptViews:
    accuracy: go.Figure
    bytes: go.Figure
    confidence: go.Figure
    delta: go.Figure


def session_config(domain: str, rounds: int, stream: int, quick: bool = False, pocket: str | None = None,
                   teacher: str | None = None) -> AdaptConfig:
    """The tab's configuration: a small version of the benchmark's (quick: a smoke-sized one)."""
    if domain not in DOMAINS:
        raise InputError("domain", f"unknown domain {domain!r}; choose one of {', '.join(DOMAINS)}")
    if not 1 <= int(rounds) <= 5 or not 1 <= int(stream) <= 32:
        raise InputError("rounds/stream", "rounds must be 1..5 and clips per round 1..32")
    cfg = AdaptConfig(domain=domain, rounds=int(rounds), stream=int(stream), eval_clips=16, source_clips=16,
                      akd=AKDConfig(steps=12, batch=8), pocket=pocket, teacher=teacher)
    if quick:
        cfg = replace(cfg, eval_clips=2, source_clips=2, akd=AKDConfig(steps=2, batch=2, rank=2),
                      device=DeviceConfig(adapter_rank=2, uts=UTSConfig(passes=3)))
    return cfg


def _bench_baselines(domain: str) -> dict:
    if not BENCH_RUNS.is_file():
        return {}
    runs = json.loads(BENCH_RUNS.read_text())
    return {k: v for k, v in runs.items() if k in BASELINES and v.get("domain") == domain}


def run_rounds(domain: str, rounds: int = 2, stream: int = 8, quick: bool = False, pocket: str | None = None,
               teacher: str | None = None, progress=None) -> AdaptSession:
    """Run `rounds` adaptation rounds on `domain` against an embedded cloud; progress(fraction, text) per round."""
    cfg = session_config(domain, rounds, stream, quick, pocket, teacher)

    def on_round(rec, _device):
        if progress is not None:
            progress(rec["round"] / cfg.rounds, f"round {rec['round']} of {cfg.rounds} done")
    rec = run_adaptation(cfg, progress=False, on_round=on_round)
    trace = rec.pop("trace")
    return AdaptSession(rec, trace, cfg.device.uts.threshold, _bench_baselines(domain))


def _rounds_table(name: str, rec: dict) -> list[dict]:
    rows = [{"run": name, "round": 0, "accuracy": rec["device_accuracy_before"],
             "source": rec["device_source_accuracy_before"], "uplink": 0, "downlink": 0, "send_everything": 0,
             "full_weights": rec["full_weights_bytes"]}]
    per_round = len(rec["rounds"]) and rec["send_everything_uplink_bytes"] / len(rec["rounds"])
    for r in rec["rounds"]:
        rows.append({"run": name, "round": r["round"], "accuracy": r["accuracy_after"],
                     "source": r["source_accuracy_after"], "uplink": r["uplink_bytes"], "downlink": r["downlink_bytes"],
                     "send_everything": per_round, "full_weights": rec["full_weights_bytes"]})
    return rows


def adapt_views(s: AdaptSession) -> AdaptViews:
    """The tab's four figures for a session (baselines from the committed benchmark when available)."""
    rows = _rounds_table("this session (UTS+AKD+DWC)", s.record)
    for name, rec in s.baselines.items():
        rows += _rounds_table(f"benchmark: {name}", rec)
    table = pl.DataFrame(rows)
    ours = table.filter(pl.col("run") == rows[0]["run"])
    samples = pl.DataFrame(s.record["samples"]) if s.record["samples"] else pl.DataFrame()
    applied = [r for r in s.record["rounds"] if r.get("layers")]
    layers = pl.DataFrame(applied[-1]["layers"]) if applied else pl.DataFrame()
    return AdaptViews(accuracy_figure(table, s.record.get("teacher_accuracy"), s.record.get("teacher_source_accuracy")),
                      bytes_figure(ours), confidence_figure(samples, s.threshold), delta_figure(layers))


def token_view(s: AdaptSession, sample_id: str, frame: int = 0) -> go.Figure:
    """One uploaded sample at `frame`: the frame, each token's uncertainty (tokens whose run starts there) and
    the tokens that were not sent."""
    rows = s.trace.filter((pl.col("sample_id") == sample_id) & (pl.col("frame") == int(frame)))
    if rows.height == 0:
        return message_figure(f"{sample_id}: no token of this sample starts at frame {frame}", "MC-dropout")
    try:
        seed = int(sample_id.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        raise InputError("sample", f"not a streamed sample id: {sample_id!r}") from None
    clip = shifted_clip(s.domain, seed)
    g = clip.grid
    unc = np.full((g, g), np.nan)
    sent = np.ones((g, g), bool)
    u = rows.filter(pl.col("kind") == "uncertainty")
    for tok, v in zip(u["token"].to_list(), u["value"].to_list()):
        unc[tok // g, tok % g] = v
    d = rows.filter(pl.col("kind") == "decision")
    for tok, v in zip(d["token"].to_list(), d["value"].to_list()):
        sent[tok // g, tok % g] = int(v) == DECISIONS["kept"]
    return uncertainty_figure(clip.frames[int(frame)], unc, sent,
                              f"MC-dropout uncertainty per token, {sample_id} frame {frame} (outlined: not sent)")


def summary_markdown(s: AdaptSession) -> str:
    r = s.record
    last = r["rounds"][-1]
    down = ", ".join(f"{x['downlink_bytes'] / 1e3:.1f} kB" for x in r["rounds"])
    errors = [x["error"] for x in r["rounds"] if "error" in x]
    lines = [f"**{r['domain']}** — CIDEr {r['device_accuracy_before']:.3f} → **{last['accuracy_after']:.3f}** "
             f"(teacher {r.get('teacher_accuracy', float('nan')):.3f}); source {r['device_source_accuracy_before']:.3f}"
             f" → {last['source_accuracy_after']:.3f}.",
             f"Uplink **{r['uplink_bytes'] / 1e3:.1f} kB** ({r['uplink_bytes'] / r['send_everything_uplink_bytes']:.1%}"
             f" of send-everything's {r['send_everything_uplink_bytes'] / 1e6:.1f} MB); downlink per round {down} "
             f"(full fp32 weights: {r['full_weights_bytes'] / 1e6:.1f} MB).",
             f"{sum(x['samples_sent'] for x in r['rounds'])} of {sum(x['samples_seen'] for x in r['rounds'])} "
             f"samples uploaded; {r['seconds']:.0f} s."]
    if "source_routed_adapted" in last:
        lines.append(f"Domain router: {last['target_routed_adapted']:.0%} of the held-out {r['domain']} clips and "
                     f"{last['source_routed_adapted']:.0%} of the source clips were captioned with the adapted weights "
                     f"(the rest with the pocket's own).")
    if errors:
        lines.append(f"Rounds with a cloud error: {len(errors)} (the device kept its weights and queue).")
    if not s.baselines:
        lines.append("Baselines appear here once `python benchmarks/bench_cloud_device.py` has written "
                     "`benchmarks/results/cloud_device.runs.json`.")
    return "\n\n".join(lines)


def demo_session() -> AdaptSession:
    """A small synthetic session (no model run) for doctests and layout checks."""
    samples = [{"round": 0, "sample_id": "night-7100000", "confidence": 1e-4, "uploaded": True, "tokens_total": 496,
                "tokens_sent": 372, "bytes": 73_000, "caption": "a"},
               {"round": 0, "sample_id": "night-7100001", "confidence": 0.2, "uploaded": False, "tokens_total": 496,
                "tokens_sent": 0, "bytes": 0, "caption": "b"}]
    rounds = [{"round": 1, "accuracy_before": 0.2, "accuracy_after": 0.4, "source_accuracy_after": 1.3,
               "uplink_bytes": 73_000, "downlink_bytes": 30_000, "samples_seen": 2, "samples_sent": 1,
               "seconds": 60.0, "layers": [{"tensor": "projector.weight", "entries": 16384, "kept": 0.1,
                                            "bits_per_entry": 1.4}]}]
    rec = {"domain": "night", "device_accuracy_before": 0.2, "device_source_accuracy_before": 1.32,
           "teacher_accuracy": 0.9, "teacher_source_accuracy": 1.4, "rounds": rounds, "samples": samples,
           "send_everything_uplink_bytes": 1_200_000, "uplink_bytes": 73_000, "full_weights_bytes": 11_300_524,
           "seconds": 60.0}
    trace = pl.DataFrame({"run_id": ["demo"] * 2, "sample_id": ["night-7100000"] * 2, "frame": [0, 0],
                          "layer": [0, 0], "site": ["uts.mc_dropout", "uts.drop"], "token": [5, 5],
                          "kind": ["uncertainty", "decision"], "value": [0.01, float(DECISIONS["pruned"])],
                          "target": [None, None]})
    return AdaptSession(rec, trace, 0.05)
