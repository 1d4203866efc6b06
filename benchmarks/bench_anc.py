"""ANC benchmark: FLOPs vs dense, caption quality and gesture accuracy by motion level, routing stability.

One run, printed and saved (markdown + JSON with date and machine) under benchmarks/results/:
- FLOPs ratio vs dense (encoder + router, FlopCounterMode-measured branch costs × the routed decisions), CIDEr
  (×100, as the paper reports it) and BLEU-4 for dense and ANC on static / low-motion / high-motion ShapesWorld
  test clips (`caption_eval`), and gesture accuracy on the synthetic gesture test split (`gesture_eval`);
- router switches per second for the router trained with the stability term and without it (λ_stab = 0), each
  with and without inference hysteresis.

Weights: data/weights/anc-<model>.safetensors and anc-nostab-<model>.safetensors. When the λ_stab = 0 file is
missing, both routers are retrained briefly on the shipped adapters with the same recipe (`--router-steps`),
so the comparison stays fair; when the main file is missing too (e.g. the debug model), both are trained from
scratch for `--train-steps` steps (a smoke, numbers meaningless).

    python benchmarks/bench_anc.py --model tinyvlm-debug --limit 3     # smoke, well under a minute
    python benchmarks/bench_anc.py --limit 40                          # the real run (~15 min on 2 cores)

Per-level CIDEr is the mean per-clip CIDEr of one scoring run over all levels (so the IDF comes from the whole
set, more stable than scoring each small level alone); per-level BLEU-4 is the mean sentence BLEU-4.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import workbench  # noqa: E402,F401  (offline environment first)
from common import RESULTS_DIR, machine_info, markdown_table  # noqa: E402
from workbench.data import gestures, shapesworld  # noqa: E402
from workbench.eval.evaluate import caption_eval, gesture_eval  # noqa: E402
from workbench.methods.anc import ANC, ANCConfig, shipped_path  # noqa: E402
from workbench.methods.anc_modules import BRANCHES, load_anc, read_anc_metadata  # noqa: E402
from workbench.methods.combined import STTFANC  # noqa: E402
from workbench.methods.sttf import STTF, STTFConfig  # noqa: E402
from workbench.methods.ops.routing import count_switches  # noqa: E402
from workbench.models.registry import create_model, weights_dir  # noqa: E402
from workbench.pipeline import Dense  # noqa: E402
from workbench.training.stage3 import Stage3Config, staleness_phase, train_stage3  # noqa: E402

LEVELS = ("static", "low", "high")


_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[bench_anc {time.perf_counter() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def write_results(name: str, res: dict, md: str, out_dir: Path) -> tuple[Path, Path]:
    """<out_dir>/<name>.md and .json (common.py's {"meta", "machine", "rows"} layout plus the extra tables).
    (common.save_results writes one table; this run has two, so it writes its own files the same way.)"""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / f"{name}.md", out_dir / f"{name}.json"
    for path, text in zip(paths, (md, json.dumps(res, indent=2, default=str))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return paths


# ---- the benchmark ---------------------------------------------------------------------------------------------

def seeds_by_level(limit: int, max_scan: int = 500) -> dict[str, list[int]]:
    """The first `limit` ShapesWorld test seeds of each motion level."""
    out: dict[str, list[int]] = {lvl: [] for lvl in LEVELS}
    for seed in shapesworld.split_seeds("test", max_scan):
        lvl = shapesworld.make_clip(seed).meta["motion_level"]
        if len(out[lvl]) < limit:
            out[lvl].append(seed)
        if all(len(v) >= limit for v in out.values()):
            break
    return out


def get_routers(model, args, work: Path) -> tuple[dict, dict]:
    """{"stab": ANCModule, "nostab": ANCModule} and their provenance."""
    main = Path(args.anc) if args.anc else shipped_path(model)
    nostab = Path(args.nostab) if args.nostab else weights_dir() / f"anc-nostab-{model.cfg.name}.safetensors"
    if main.is_file() and nostab.is_file():
        return ({"stab": load_anc(main), "nostab": load_anc(nostab)},
                {"stab": str(main), "nostab": str(nostab), "recipe": "shipped weights"})
    if main.is_file():
        steps = args.router_steps
        base = staleness_phase(Stage3Config(router_steps=steps, eval_clips=2, progress=False, max_minutes=None,
                                            threads=args.threads), main)
        recipe = (f"routers retrained for {steps} steps (phase b recipe, staleness oracle: router only) on the "
                  f"adapters of {main.name}")
    else:
        steps = args.train_steps
        base = Stage3Config(steps=steps, batch_size=2, eval_every=steps, eval_clips=2, progress=False,
                            max_minutes=None, threads=args.threads)
        recipe = f"NO SHIPPED ANC WEIGHTS: both trained from scratch for {steps} steps (smoke; not meaningful)"
    log(recipe)
    mods, prov = {}, {"recipe": recipe}
    for name, lam in (("stab", base.lam_stab), ("nostab", 0.0)):
        path = work / f"anc-{name}.safetensors"
        train_stage3(replace(base, lam_stab=lam), model, path)
        log(f"trained the {name} router")
        mods[name], prov[name] = load_anc(path), f"{path.name} (λ_stab={lam})"
    return mods, prov


def routing_stats(model, anc: ANC, clips: list) -> dict:
    """FLOPs ratio vs dense, switches/s and branch mix from the routed decisions (no encoding needed: the
    encoder FLOPs of a run are exactly Σ_t c[choice_t] + router, tested in tests/test_anc.py)."""
    ratios, rates, mix = [], [], np.zeros(len(BRANCHES))
    for clip in clips:
        costs = anc.costs(model, clip.modality)
        route = anc.route(model, torch.from_numpy(clip.frames), clip.modality)
        spent = sum(costs[BRANCHES[k]] for k in route.choices) + costs["router"] * clip.num_frames
        ratios.append(spent / (costs["full"] * clip.num_frames))
        rates.append(count_switches(route.choices) / clip.duration_s)
        mix += np.bincount(route.choices, minlength=len(BRANCHES))
    return {"flops_ratio": float(np.mean(ratios)), "flops_saved_pct": 100 * (1 - float(np.mean(ratios))),
            "switches_per_s": float(np.mean(rates)),
            "mix": dict(zip(BRANCHES, (mix / mix.sum()).round(4).tolist()))}


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    model = create_model(args.model)
    work = Path(tempfile.mkdtemp(prefix="bench_anc_"))
    routers, provenance = get_routers(model, args, work)
    cfg = ANCConfig(hysteresis=args.hysteresis, cost_bias=args.cost_bias)
    shipped = Path(args.anc) if args.anc else shipped_path(model)
    anc = ANC(load_anc(shipped) if shipped.is_file() else routers["stab"], cfg)  # main tables: the shipped router
    levels = seeds_by_level(args.limit)
    clips = {lvl: [shapesworld.make_clip(s) for s in seeds] for lvl, seeds in levels.items()}
    g_seeds = gestures.gesture_split_seeds("test", args.gesture_limit or args.limit)
    clips["gesture"] = [gestures.make_gesture_clip(s) for s in g_seeds]
    all_seeds = [s for lvl in LEVELS for s in levels[lvl]]

    log(f"clips ready: {', '.join(f'{k} {len(v)}' for k, v in clips.items())}")
    quality = {}
    for name, method in (("dense", Dense()), ("anc", anc)):
        ce = caption_eval(model, all_seeds, method, progress=False)
        per = ce.scores.per_image
        by_level = {}
        for lvl in LEVELS:
            ids = [f"shapes-{s}" for s in levels[lvl]]
            by_level[lvl] = {"cider": 100 * float(np.mean([per[i]["cider"] for i in ids])) if ids else None,
                             "bleu4": float(np.mean([per[i]["bleu4"] for i in ids])) if ids else None,
                             "n": len(ids), "per_clip": [100 * per[i]["cider"] for i in ids]}
        ge = gesture_eval(model, g_seeds, method, progress=False)
        log(f"{name}: captions and gestures evaluated")
        quality[name] = {"cider_all": 100 * ce.scores.cider, "bleu4_all": ce.scores.bleu4, "by_level": by_level,
                         "gesture_acc": 100 * ge.accuracy, "gesture_n": int(ge.confusion.sum())}

    flops = {lvl: routing_stats(model, anc, cl) for lvl, cl in clips.items()}
    sttf_cfg = STTFConfig(tau=args.sttf_tau)
    methods = {"dense": Dense(), "STTF": STTF(sttf_cfg), "ANC": anc, "STTF+ANC": STTFANC(anc, sttf_cfg)}
    method_rows = compare_methods(model, methods, levels, clips, g_seeds, quality, args.flops_clips)
    log("method comparison done")
    stability = {}
    for rname, module in routers.items():
        for h in (args.hysteresis, 0.0):
            a = ANC(module, replace(cfg, hysteresis=h))
            per = {lvl: routing_stats(model, a, cl) for lvl, cl in clips.items()}
            n = {lvl: len(cl) for lvl, cl in clips.items()}
            overall = sum(per[lvl]["switches_per_s"] * n[lvl] for lvl in per) / max(1, sum(n.values()))
            stability[f"{rname} h={h:g}"] = {"switches_per_s": overall,
                                             "by_level": {lvl: per[lvl]["switches_per_s"] for lvl in per},
                                             "flops_saved_pct": {lvl: per[lvl]["flops_saved_pct"] for lvl in per}}
    log("routing statistics done")
    targets = {
        "flops_saved_ge_90_static_low": all(flops[l]["flops_saved_pct"] >= 90 for l in ("static", "low")),
        "cider_loss_le_1_static_low": all(
            (quality["dense"]["by_level"][l]["cider"] or 0) - (quality["anc"]["by_level"][l]["cider"] or 0) <= 1
            for l in ("static", "low")),
        "fewer_switches_than_nostab": stability[f"stab h={args.hysteresis:g}"]["switches_per_s"]
        < stability["nostab h=0"]["switches_per_s"],
        "stab_term_alone_fewer_switches": stability["stab h=0"]["switches_per_s"]
        <= stability["nostab h=0"]["switches_per_s"],
    }
    info = read_anc_metadata_safe(args, model)
    rows = []
    for lvl in (*LEVELS, "gesture"):
        fl = flops[lvl]
        row = {"clips": lvl if lvl != "gesture" else "gesture (events)", "flops_ratio": fl["flops_ratio"],
               "flops_saved_pct": fl["flops_saved_pct"], "switches_per_s": fl["switches_per_s"],
               "mix": " ".join(f"{b}:{v:.2f}" for b, v in fl["mix"].items())}
        if lvl == "gesture":
            row.update(n=quality["dense"]["gesture_n"], dense_acc=quality["dense"]["gesture_acc"],
                       anc_acc=quality["anc"]["gesture_acc"])
        else:
            d, a = quality["dense"]["by_level"][lvl], quality["anc"]["by_level"][lvl]
            diff = np.array(a["per_clip"]) - np.array(d["per_clip"])  # paired: the same clips
            se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else None
            row.update(n=d["n"], dense_cider=d["cider"], anc_cider=a["cider"], dense_bleu4=d["bleu4"],
                       anc_bleu4=a["bleu4"], cider_diff=float(diff.mean()), cider_diff_se=se)
        rows.append(row)
    stab_rows = [{"router": k, "all": v["switches_per_s"], **v["by_level"]} for k, v in stability.items()]
    meta = {"benchmark": "anc", "model": model.cfg.name, "limit_per_level": args.limit, "anc_config": asdict(cfg),
            "routers": provenance, "anc_train_info": info,
            "costs_flops_per_frame": {m: anc.costs(model, m) for m in ("rgb", "events")},
            "quality_overall": {k: {"cider": v["cider_all"], "bleu4": v["bleu4_all"]} for k, v in quality.items()},
            "flops_clips": args.flops_clips, "elapsed_s": time.perf_counter() - t_start}
    meta["sttf_config"] = asdict(sttf_cfg)
    return {"meta": meta, "machine": machine_info(), "rows": rows, "stability_rows": stab_rows,
            "method_rows": method_rows,
            "targets": targets, "quality": quality, "flops": flops, "stability": stability}


def measured_flops(model, method, clip) -> tuple[float, float, float]:
    """(encoder FLOPs counted by FlopCounterMode, tokens computed, tokens to the decoder) summed over the clip."""
    _, stats = method.visual_tokens(model, torch.from_numpy(clip.frames)[None], clip.modality, clip, count=True)
    return (float(stats.encoder_flops.sum()), float(stats.tokens_computed.sum()),
            float(stats.tokens_to_decoder.sum()))


def compare_methods(model, methods: dict, levels: dict, clips: dict, g_seeds, quality: dict, n_flops: int) -> list:
    """Dense / STTF alone / ANC alone / STTF+ANC: measured FLOPs ratio per motion level (first `n_flops` clips
    of each level), tokens per frame, CIDEr and gesture accuracy over all clips."""
    all_seeds = [s for lvl in LEVELS for s in levels[lvl]]
    rows = []
    dense_cost = {lvl: [measured_flops(model, methods["dense"], c)[0] for c in cl[:n_flops]] for lvl, cl in clips.items()}
    for name, method in methods.items():
        row = {"method": name}
        for lvl, cl in clips.items():
            m = [measured_flops(model, method, c) for c in cl[:n_flops]]
            row[f"{lvl}_flops"] = sum(x[0] for x in m) / max(sum(dense_cost[lvl]), 1)
            frames = sum(c.num_frames for c in cl[:n_flops])
            row[f"{lvl}_computed"] = sum(x[1] for x in m) / max(frames, 1)
            row[f"{lvl}_to_dec"] = sum(x[2] for x in m) / max(frames, 1)
        key = {"dense": "dense", "ANC": "anc"}.get(name)
        if key in quality:
            row["cider"], row["gesture_acc"] = quality[key]["cider_all"], quality[key]["gesture_acc"]
        else:
            row["cider"] = 100 * caption_eval(model, all_seeds, method, progress=False).scores.cider
            row["gesture_acc"] = 100 * gesture_eval(model, g_seeds, method, progress=False).accuracy
        rows.append(row)
        log(f"compared {name}")
    return rows


def read_anc_metadata_safe(args, model) -> dict:
    path = Path(args.anc) if args.anc else shipped_path(model)
    if not path.is_file():
        return {}
    meta = read_anc_metadata(path)
    return {k: meta.get(k) for k in ("steps", "last_eval", "train_config")}


MAIN_COLUMNS = [("clips", "clips", "{}"), ("n", "n", "{}"), ("flops_ratio", "FLOPs ratio vs dense", "{:.3f}"),
                ("flops_saved_pct", "FLOPs saved %", "{:.1f}"), ("dense_cider", "dense CIDEr", "{:.1f}"),
                ("anc_cider", "ANC CIDEr", "{:.1f}"), ("cider_diff", "ANC − dense (paired)", "{:+.1f}"),
                ("cider_diff_se", "± SE", "{:.1f}"), ("dense_bleu4", "dense BLEU-4", "{:.3f}"),
                ("anc_bleu4", "ANC BLEU-4", "{:.3f}"), ("dense_acc", "dense gesture acc %", "{:.1f}"),
                ("anc_acc", "ANC gesture acc %", "{:.1f}"), ("switches_per_s", "switches/s", "{:.2f}"),
                ("mix", "branch mix", "{}")]
STAB_COLUMNS = [("router", "router, hysteresis", "{}"), ("all", "switches/s (all clips)", "{:.3f}"),
                *[(lvl, lvl, "{:.3f}") for lvl in (*LEVELS, "gesture")]]


METHOD_COLUMNS = [("method", "method", "{}"),
                  *[(f"{lvl}_flops", f"{lvl} FLOPs ratio", "{:.3f}") for lvl in (*LEVELS, "gesture")],
                  *[(f"{lvl}_to_dec", f"{lvl} tokens/frame to decoder", "{:.1f}") for lvl in LEVELS],
                  ("cider", "CIDEr (all)", "{:.1f}"), ("gesture_acc", "gesture acc %", "{:.1f}")]


def markdown(res: dict) -> str:
    meta, mach, q = res["meta"], res["machine"], res["meta"]["quality_overall"]
    return "\n\n".join([
        f"# ANC benchmark — {meta['model']}",
        f"{mach['date']} · {mach['cpu']} ({mach['cores']} cores, torch {mach['torch']}, {mach['torch_threads']} "
        f"threads, load average {mach['load_avg']:.2f}) · {meta['limit_per_level']} clips per motion level",
        f"- ANC config: {json.dumps(meta['anc_config'])}\n- routers: {meta['routers'].get('recipe')}\n"
        f"- overall: dense CIDEr {q['dense']['cider']:.1f}, BLEU-4 {q['dense']['bleu4']:.3f}; "
        f"ANC CIDEr {q['anc']['cider']:.1f}, BLEU-4 {q['anc']['bleu4']:.3f}\n"
        "- FLOPs = vision encoder + router (the decoder is unchanged by ANC alone: N tokens per frame); CIDEr ×100; "
        "per-level CIDEr / BLEU-4 are per-clip means of one scoring run over all levels",
        markdown_table(res["rows"], MAIN_COLUMNS),
        "## Dense vs STTF alone vs ANC alone vs STTF+ANC\n\nEncoder FLOPs measured with FlopCounterMode on the "
        f"first {res['meta'].get('flops_clips', '?')} clips of each level, ratio to dense; STTF config "
        f"{json.dumps(res['meta'].get('sttf_config'))}",
        markdown_table(res.get("method_rows", []), METHOD_COLUMNS),
        "## Routing stability (switches per second)",
        markdown_table(res["stability_rows"], STAB_COLUMNS),
        "## Targets\n\n" + "\n".join(f"- {k}: {'PASS' if v else 'FAIL'}" for k, v in res["targets"].items()),
        f"_{meta['elapsed_s']:.0f} s_"]) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="ANC vs dense: FLOPs, captions, gestures, routing stability")
    p.add_argument("--model", default="tinyvlm-shapes")
    p.add_argument("--limit", type=int, default=40, help="ShapesWorld test clips per motion level")
    p.add_argument("--gesture-limit", type=int, default=None, help="gesture test clips (default: --limit)")
    p.add_argument("--out", default=str(RESULTS_DIR))
    p.add_argument("--anc", default=None, help="ANC weights (default data/weights/anc-<model>.safetensors)")
    p.add_argument("--nostab", default=None, help="λ_stab = 0 weights (default anc-nostab-<model>.safetensors)")
    p.add_argument("--hysteresis", type=float, default=ANCConfig().hysteresis)
    p.add_argument("--cost-bias", type=float, default=0.0)
    p.add_argument("--router-steps", type=int, default=200, help="retraining steps when the nostab file is missing")
    p.add_argument("--train-steps", type=int, default=2, help="training steps when no ANC weights exist (smoke)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sttf-tau", type=float, default=0.05, help="STTF threshold for the STTF / STTF+ANC rows")
    p.add_argument("--flops-clips", type=int, default=6, help="clips per level whose FLOPs are counted")
    args = p.parse_args(argv)
    res = run(args)
    md = markdown(res)
    print(md)
    paths = write_results(f"anc-{res['meta']['model']}", res, md, Path(args.out))
    print(f"\nsaved {paths[0]} and {paths[1]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
