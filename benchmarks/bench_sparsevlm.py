"""SparseVLM benchmark: QA accuracy and CIDEr against dense, prefill FLOPs and wall-clock, tokens per layer, text
guidance — SparseVLM (fixed and rank rules, with and without recycling), FastV and the random control at the
paper's budgets (keep 33 / 22 / 11 %, i.e. 192 / 128 / 64 of 576), and STTF + SparseVLM.

One run, printed and saved (markdown + JSON with date, machine and load) under benchmarks/results/:
- QA: exact match on every question of ShapesWorld test clips 0..limit−1 (`eval.qa.qa_eval`), the dense baseline
  answered in the same run; prefill FLOPs by FlopCounterMode on every question (ratio Σ method / Σ dense);
- CIDEr (×100) of the captions (caption prompt) on test clips 0..caption_clips−1, relative to dense;
- prefill wall clock: dense and each method interleaved in one process on `timing_clips` clips × one question,
  median of `repeats` runs; efficiency = wall-clock speedup ÷ FLOPs speedup (the physical limit is 1.0);
- tokens: the paper's count (mean over decoder sublayers), visual tokens entering each layer, what the last
  layer sees (per clip and per frame);
- text guidance at 22 %: for "what color is the <shape>" questions, the share of kept tokens on the queried
  object (ground truth) vs the object's area share, for SparseVLM, FastV and random.

Depths: the default (0.5, 1.5, 2.5) for 33 % and 22 %; 11 % is below what a first point inside layer 0 allows on
this 4-layer decoder (1/8), so that row prunes from before layer 0 attends: (0, 1.5, 2.5), FastV K = 0.

    python benchmarks/bench_sparsevlm.py --quick          # smoke: 3 clips, 1 timing clip (~2 min)
    python benchmarks/bench_sparsevlm.py                  # the real run (30 QA clips, 30 caption clips)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import workbench  # noqa: E402,F401  (offline environment first)
from common import save_results, print_table  # noqa: E402
from workbench.data import shapesworld  # noqa: E402
from workbench.eval.evaluate import caption_eval  # noqa: E402
from workbench.eval.guidance import guidance_summary, object_overlaps, on_object_shares  # noqa: E402
from workbench.eval.qa import qa_eval, question_type  # noqa: E402
from workbench.methods.fastv import FastV, FastVConfig  # noqa: E402
from workbench.methods.random_prune import RandomPrune, RandomPruneConfig  # noqa: E402
from workbench.methods.sparsevlm import SparseVLM, SparseVLMConfig  # noqa: E402
from workbench.methods.sttf import STTF, STTFConfig  # noqa: E402
from workbench.models.registry import create_model  # noqa: E402
from workbench.pipeline import Dense, Stack, split_method  # noqa: E402

KEEPS = {0.33: (None, 0.5), 0.22: (None, 0.5), 0.11: ((0.0, 1.5, 2.5), 0.0)}  # keep → (depths, FastV K)
_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[bench_sparsevlm {time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def configs(sttf_tau: float) -> list[dict]:
    """(name, keep, method, main) — `main` settings also get CIDEr and wall-clock timing."""
    out = []
    for keep, (pts, k) in KEEPS.items():
        for rule, rec in (("fixed", True), ("fixed", False), ("rank", True), ("rank", False)):
            name = f"SparseVLM {rule}" + ("" if rec else ", no recycling")
            out.append({"name": name, "keep": keep, "main": rule == "fixed" and rec,
                        "method": SparseVLM(SparseVLMConfig(points=pts, keep=keep, rule=rule, recycle=rec))})
        out.append({"name": "FastV", "keep": keep, "main": True, "method": FastV(FastVConfig(K=k, keep=keep))})
        out.append({"name": "random (same depths)", "keep": keep, "main": True,
                    "method": RandomPrune(RandomPruneConfig(points=pts, keep=keep))})
    for keep in (0.33, 0.22):
        out.append({"name": f"STTF τ={sttf_tau:g} + SparseVLM fixed", "keep": keep, "main": True,
                    "method": Stack(STTF(STTFConfig(tau=sttf_tau)), SparseVLM(SparseVLMConfig(keep=keep)))})
    return out


def timed_methods(cfgs: list[dict]) -> dict:
    """label ("<name> @<keep>") → method of the settings that are timed, dense first."""
    return {"dense": Dense()} | {f"{c['name']} @{c['keep']}": c["method"] for c in cfgs if c["main"]}


@torch.no_grad()
def prefill_ms(model, methods: dict, seeds, repeats: int) -> dict[str, float]:
    """Median prefill wall time (ms) per method over `seeds` × one question, dense and methods interleaved."""
    items = []
    for s in seeds:
        clip = shapesworld.make_clip(s)
        q = next((q for q, _ in clip.qa if question_type(q) == "color"), clip.qa[0][0])
        frames = torch.from_numpy(np.ascontiguousarray(clip.frames))[None]
        vts = {}
        for name, m in methods.items():
            enc, dec = split_method(m)
            vts[name] = (enc.visual_tokens(model, frames, "rgb", clip)[0], dec)
        items.append((q, vts))
    times: dict[str, list[float]] = {n: [] for n in methods}
    names = list(methods)
    for r in range(repeats + 1):  # round 0 warms up
        for q, vts in items:
            for n in (names if r % 2 == 0 else names[::-1]):
                vt, dec = vts[n]
                ms = model.generate(vt, q, max_new_tokens=1, pruner=dec, gesture=False).decoder.ms
                if r:
                    times[n].append(ms)
    return {n: statistics.median(v) for n, v in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tinyvlm-shapes")
    p.add_argument("--limit", type=int, default=30, help="QA test clips (default 30 ≈ 200 questions; a dense "
                                                          "prefill of 3 136 visual tokens is ≈ 1.4 s per question)")
    p.add_argument("--caption-clips", type=int, default=30)
    p.add_argument("--timing-clips", type=int, default=6)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sttf-tau", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="3 QA clips, 3 caption clips, 1 timing clip, 1 repeat")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--retime", action="store_true",
                   help="re-take only the prefill wall clock (e.g. on a quieter machine) into the saved results; "
                        "quality, tokens and FLOPs stay those of the saved run")
    a = p.parse_args(argv)
    if a.quick:
        a.limit, a.caption_clips, a.timing_clips, a.repeats = 3, 3, 1, 1
    torch.set_num_threads(a.threads)
    model = create_model(a.model)
    if a.retime:
        return retime(model, a)
    qa_seeds, cap_seeds = shapesworld.split_seeds("test", a.limit), shapesworld.split_seeds("test", a.caption_clips)
    log(f"dense QA on {len(qa_seeds)} clips")
    dense_qa = qa_eval(model, qa_seeds, Dense(), progress=False)
    log(f"dense captions on {len(cap_seeds)} clips")
    dense_cap = caption_eval(model, cap_seeds, Dense(), progress=False).scores.cider
    cfgs = configs(a.sttf_tau)
    log("prefill timing (interleaved)")
    timed = timed_methods(cfgs)
    ms = prefill_ms(model, timed, range(a.timing_clips), a.repeats)
    rows = []
    for c in cfgs:
        label = f"{c['name']} @{c['keep']}"
        log(f"QA {label}")
        r = qa_eval(model, qa_seeds, c["method"], progress=False, dense_rows=dense_qa.per_question)
        layers = np.mean(np.array(r.per_question["visual_in"].to_list()), 0)
        row = {"method": c["name"], "keep_target": c["keep"], "keep": r.decoder_keep,
               "last_layer": float(r.per_question["last_layer"].mean()), "last_per_frame": r.last_layer_tokens_per_frame,
               "tokens_per_frame": r.tokens_per_frame, "layers": " / ".join(f"{x:.0f}" for x in layers),
               "qa": r.accuracy, "qa_rel": r.accuracy / dense_qa.accuracy if dense_qa.accuracy else None,
               "flops_ratio": r.prefill_flops_ratio, "by_type": r.by_type, "n": r.n}
        if c["main"]:
            log(f"captions {label}")
            cider = caption_eval(model, cap_seeds, c["method"], progress=False).scores.cider
            row |= {"cider": cider * 100, "cider_rel": cider / dense_cap if dense_cap else None}
            set_timing(row, ms, label)
        rows.append(row)
    log("text guidance at keep 22 %")
    guided = {"SparseVLM": SparseVLM(SparseVLMConfig(keep=0.22)),
              "SparseVLM raters+last": SparseVLM(SparseVLMConfig(keep=0.22, raters="relevance+last")),
              "FastV": FastV(FastVConfig(keep=0.22)), "random": RandomPrune(RandomPruneConfig(keep=0.22))}
    guide = on_object_shares(model, qa_seeds, guided)
    gs = guidance_summary(guide)
    log("kept-set overlap of two objects' colour questions")
    overlap = {name: object_overlaps(model, qa_seeds, m).group_by("point").agg(pl.col("overlap").mean()).sort("point")
               ["overlap"].to_list() for name, m in guided.items() if name != "random"}
    meta = {"model": model.cfg.name, "qa_clips": len(qa_seeds), "questions": dense_qa.n, "caption_clips": len(cap_seeds),
            "dense_qa": dense_qa.accuracy, "dense_qa_by_type": dense_qa.by_type, "dense_cider": dense_cap * 100,
            "dense_prefill_ms": ms["dense"], "timing": f"{a.timing_clips} clips × 1 question, median of {a.repeats}",
            "guidance": gs.to_dicts(), "object_question_overlap": overlap}
    save(model, rows, meta, a.out)
    return 0


COLS = [("method", "method", "{}"), ("keep_target", "keep target", "{:.2f}"), ("keep", "keep (paper)", "{:.3f}"),
        ("layers", "visual tokens entering L0 / L1 / L2 / L3", "{}"), ("last_per_frame", "last layer tok/frame", "{:.1f}"),
        ("qa", "QA acc", "{:.3f}"), ("qa_rel", "QA/dense", "{:.3f}"), ("cider", "CIDEr", "{:.1f}"),
        ("cider_rel", "CIDEr/dense", "{:.3f}"), ("flops_ratio", "prefill FLOPs/dense", "{:.3f}"),
        ("speedup", "prefill speedup", "{:.2f}"), ("efficiency", "efficiency", "{:.2f}")]


def set_timing(row: dict, ms: dict[str, float], label: str) -> None:
    """The row's prefill wall clock, speedup over dense and efficiency (speedup ÷ FLOPs speedup)."""
    row |= {"speedup": ms["dense"] / ms[label], "prefill_ms": ms[label]}
    row["efficiency"] = row["speedup"] * row["flops_ratio"]


def save(model, rows: list[dict], meta: dict, out) -> None:
    """Targets, notes, results files and the printed tables of one run (guidance and overlaps read from meta)."""
    gs_rows = meta["guidance"]
    first = {m: next(g["on_object"] for g in gs_rows if g["method"] == m and g["point"] == 0)
             for m in ("SparseVLM", "FastV", "random")}
    notes = targets(rows, meta["dense_qa"], first)
    notes.append("kept-set overlap between 'what color is the <A>' and '… <B>' on the same clip (per point; 1 = the "
                 "same tokens): " + "; ".join(f"{k} {', '.join(f'{x:.2f}' for x in v)}"
                                              for k, v in meta["object_question_overlap"].items()))
    title = "SparseVLM, FastV and random pruning inside the decoder (TinyVLM, ShapesWorld test)"
    save_results(f"sparsevlm-{model.cfg.name}", rows, COLS, meta, out, title, notes)
    print_table(rows, COLS, title)
    print_table(gs_rows, [("method", "method", "{}"), ("depth", "depth", "{:g}"), ("on_object", "on object", "{:.3f}"),
                          ("area_share", "area share", "{:.3f}"), ("vs_area", "× area", "{:.2f}"), ("n", "n", "{}")],
                "text guidance at keep 22 % (colour questions)")
    print("\n".join(notes))


def retime(model, a) -> int:
    """--retime: the saved run's rows with the prefill wall clock measured again now (same configs and clips)."""
    import json

    from common import RESULTS_DIR, machine_info
    path = Path(a.out or RESULTS_DIR) / f"sparsevlm-{model.cfg.name}.json"
    saved = json.loads(path.read_text())
    rows, meta = saved["rows"], saved["meta"]
    timed = timed_methods(configs(a.sttf_tau))
    log(f"re-timing {len(timed)} settings on {a.timing_clips} clips × {a.repeats} (load {machine_info()['load_avg']})")
    ms = prefill_ms(model, timed, range(a.timing_clips), a.repeats)
    for row in rows:
        label = f"{row['method']} @{row['keep_target']}"
        if label in ms:
            set_timing(row, ms, label)
    info = machine_info()
    meta.setdefault("quality_run", {"date": saved["machine"]["date"], "load_avg": saved["machine"]["load_avg"]})
    meta |= {"dense_prefill_ms": ms["dense"],
             "timing": f"{a.timing_clips} clips × 1 question, median of {a.repeats}; re-timed {info['date']} at load "
                       f"{info['load_avg']:.2f} (--retime); quality, tokens and FLOPs from the run of "
                       f"{meta['quality_run']['date']} at load {meta['quality_run']['load_avg']:.2f}"}
    save(model, rows, meta, a.out)
    return 0


def targets(rows: list[dict], dense_qa: float, first: dict) -> list[str]:
    """The issue's targets, checked on this run's numbers (said plainly either way)."""
    out = []
    main = next((r for r in rows if r["method"] == "SparseVLM fixed" and r["keep_target"] == 0.22), None)
    if main:
        ok = (main["qa_rel"] or 0) >= 0.95 and (main.get("cider_rel") or 0) >= 0.95 and main["flops_ratio"] <= 0.39 \
            and (main.get("efficiency") or 0) >= 0.7
        out.append(f"target at 22 % kept (QA ≥ 95 % and CIDEr ≥ 95 % of dense, ≥ 61 % fewer prefill FLOPs, wall-clock "
                   f"≥ 0.7 × FLOPs speedup): {'met' if ok else 'NOT met'} — QA {main['qa_rel']:.3f}, CIDEr "
                   f"{(main.get('cider_rel') or float('nan')):.3f} of dense, FLOPs {main['flops_ratio']:.3f}, "
                   f"efficiency {(main.get('efficiency') or float('nan')):.2f}")
    for keep in KEEPS:
        at = {r["method"]: r["qa"] for r in rows if r["keep_target"] == keep}
        s, f, rnd = at.get("SparseVLM fixed"), at.get("FastV"), at.get("random (same depths)")
        if None not in (s, f, rnd):
            out.append(f"keep {keep:.0%}: SparseVLM {s:.3f} vs FastV {f:.3f} vs random {rnd:.3f} — SparseVLM "
                       f"{'≥' if s >= f else '<'} FastV, {'≥' if s >= rnd else '<'} random")
    if first:
        ratio = first["SparseVLM"] / first["random"] if first["random"] else float("nan")
        out.append(f"text guidance (first point, 22 %): on-object share SparseVLM {first['SparseVLM']:.3f}, FastV "
                   f"{first['FastV']:.3f}, random {first['random']:.3f} — SparseVLM {ratio:.2f}× random "
                   f"({'met' if ratio >= 2 else 'NOT met'}: ≥ 2×)")
    stacked = [r for r in rows if r["method"].startswith("STTF")]
    for r in stacked:
        ok = r["last_per_frame"] <= 10 and (r["qa_rel"] or 0) >= 0.95
        out.append(f"{r['method']} @ {r['keep_target']:.0%}: {r['last_per_frame']:.1f} tokens/frame at the last layer, "
                   f"QA {r['qa_rel']:.3f} of dense — target (≤ 10 at ≥ 95 %) {'met' if ok else 'NOT met'}")
    return out


if __name__ == "__main__":
    sys.exit(main())
