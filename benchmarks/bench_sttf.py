"""STTF benchmark: tokens, FLOPs, wall-clock, caption quality, gesture accuracy and reuse masks against dense.

One run, every setting beside the dense baseline of the same run (METHODS.md §7):
- avg visual tokens per frame entering the decoder (ShapesWorld, gestures, real videos);
- encoder FLOPs ratio vs dense (FlopCounterMode on the actual runs of the first `--flops-clips` clips per
  modality; the JSON also has the analytic §7 ratio over every clip);
- encoder wall-clock speedup: dense `model.encode` and STTF `encode` (gate + partial encoding) interleaved,
  median of `--repeats` runs per clip, summed over `--timing-clips` clips per modality, for both schedules
  ("stream": frame by frame; "clip": the same computation layer-major over the clip); "eff" = wall speedup /
  FLOPs speedup (target ≥ 0.7), FLOPs from the streaming run (no padding);
- CIDEr and BLEU-4 on the ShapesWorld test split (`caption_eval`), gesture accuracy on the synthetic gesture
  test split (`gesture_eval`);
- reuse-mask precision / recall vs ShapesWorld's ground-truth `motion_mask` (a recomputed patch = predicted
  "moving"; keyframes excluded);
- real videos (../shared/data/real/video): reuse rate (non-key frames) and mean drift of reused tokens
  (1 − cos to the dense token).

Settings: thresholds per source, top-k, the token budget ρ = 31/196 (τ calibrated on the val splits, per
modality), training-free with the base weights and — when data/weights/tinyvlm-shapes-sttf.safetensors exists
(`workbench train --stage 2`) — with the stage-2 weights and their learned thresholds. A setting gives one
method for RGB clips and one for event clips; "–" where a source does not apply (event rates on RGB).

    python benchmarks/bench_sttf.py --model tinyvlm-debug --limit 3     # smoke (random model, numbers meaningless)
    python benchmarks/bench_sttf.py --limit 100                          # the real run
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, interleaved_median, print_table, ratio, save_results  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import workbench  # noqa: E402,F401  (offline environment first)
from workbench.data import gestures, shapesworld  # noqa: E402
from workbench.data.load import load_clip  # noqa: E402
from workbench.eval.evaluate import caption_eval, gesture_eval  # noqa: E402
from workbench.methods.sttf import STTF, STTFConfig, frame_flops  # noqa: E402
from workbench.methods.sttf_calibration import budget_config, learned_config  # noqa: E402
from workbench.models.registry import create_model, weights_dir  # noqa: E402
from workbench.pipeline import Dense  # noqa: E402

RHO = 31 / 196
VIDEO_DIR = REPO.parent / "shared" / "data" / "real" / "video"
TARGET = {"tokens": 31.0, "gesture": 0.96, "cider": 0.95, "efficiency": 0.7}


@dataclass
class Setting:
    label: str
    weights: str  # "base" or "stage2"
    rgb: object | None  # Dense() or STTF(...) for RGB clips; None = not applicable
    events: object | None  # for event clips


def frames_of(clip) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(clip.frames))[None]  # (1, T, C, H, W)


def both(cfg: STTFConfig) -> tuple[STTF, STTF]:
    return STTF(cfg), STTF(cfg)


def build_settings(base, tuned, tuned_path, calib_rgb, calib_ev) -> list[Setting]:
    s = [Setting("dense", "base", Dense(), Dense())]
    for tau in (0.02, 0.05, 0.1):
        s.append(Setting(f"pixels τ={tau}", "base", *both(STTFConfig("pixels", tau=tau))))
    for tau in (0.1, 0.3):
        s.append(Setting(f"embedding τ={tau}", "base", *both(STTFConfig("embedding", tau=tau))))
    for tau in (0.05, 0.2):
        s.append(Setting(f"events τ={tau}", "base", None, STTF(STTFConfig("events", tau=tau))))
    s.append(Setting("pixels top-k=20", "base", *both(STTFConfig("pixels", policy="topk", k=20, scene_cut=None))))

    def budget(model, weights, tag):
        out = []
        for rgb_src, ev_src in (("pixels", "pixels"), ("embedding", "embedding"), ("pixels", "events")):
            out.append(Setting(f"{tag}ρ={RHO:.3f} {rgb_src}/{ev_src}", weights,
                               STTF(budget_config(model, calib_rgb, RHO, rgb_src)),
                               STTF(budget_config(model, calib_ev, RHO, ev_src))))
        return out
    s += budget(base, "base", "")
    if tuned is not None:
        s.append(Setting("dense (stage-2 weights)", "stage2", Dense(), Dense()))
        for rgb_src in ("pixels", "embedding"):
            s.append(Setting(f"learned τ {rgb_src}/events", "stage2", STTF(learned_config(tuned_path, rgb_src)),
                             STTF(learned_config(tuned_path, "events"))))
        s += budget(tuned, "stage2", "")
    return s


@torch.no_grad()
def encoder_analysis(model, method, clips, timing_clips: int, flops_clips: int, repeats: int,
                     dense_flops: dict, chunks: tuple[int, ...] = ()) -> dict:
    """FLOPs (sum, streaming schedule), interleaved wall time of dense / stream / clip schedules and of the
    stream schedule in chunks of c frames (sums of per-clip medians) and masks vs motion ground truth."""
    fl_m = fl_d = an_m = an_d = ms_s = ms_c = ms_d = 0.0
    ms_k = {c: 0.0 for c in chunks}
    tp = fp = fn = 0
    for i, clip in enumerate(clips):
        frames, mod = frames_of(clip), clip.modality
        dense_an = float(frame_flops(model, [model.cfg.num_patches] * clip.num_frames, [True] * clip.num_frames,
                                     "pixels", mod).sum())
        an_d += dense_an
        if i < flops_clips:
            fl_d += dense_flops[mod]
        if isinstance(method, Dense):
            fl_m += dense_flops[mod] if i < flops_clips else 0.0
            an_m += dense_an
        else:
            r = method.run(model, frames, mod, clip, count=i < flops_clips)
            fl_m += float(r.flops.sum())
            an_m += float(frame_flops(model, r.stats.tokens_computed, r.key[0], method.cfg.source, mod).sum())
            if clip.motion_mask is not None and clip.meta.get("dataset") == "shapesworld":
                nk = ~r.key[0]  # (T,) non-key frames
                pred = r.mask[0][nk].numpy()  # (T', N) recomputed = predicted moving
                truth = clip.motion_mask.reshape(len(clip.motion_mask), -1)[nk.numpy()]
                tp += int((pred & truth).sum())
                fp += int((pred & ~truth).sum())
                fn += int((~pred & truth).sum())
        if i < timing_clips:
            fns = {"dense": lambda: model.encode(frames, mod)}
            if not isinstance(method, Dense):
                clip_mode = STTF(replace(method.cfg, schedule="clip"))
                fns["stream"] = lambda: method.encode(model, frames, mod, clip)
                fns["clip"] = lambda: clip_mode.encode(model, frames, mod, clip)
                for c in chunks:
                    fns[f"chunk{c}"] = (lambda m: lambda: m.encode(model, frames, mod, clip))(
                        STTF(replace(method.cfg, chunk=c)))
            med = interleaved_median(fns, repeats=repeats)
            ms_d += med["dense"]
            ms_s += med.get("stream", med["dense"])
            ms_c += med.get("clip", med["dense"])
            for c in chunks:
                ms_k[c] += med.get(f"chunk{c}", med["dense"])
    return {"flops": fl_m, "dense_flops": fl_d, "analytic": an_m, "dense_analytic": an_d, "ms_stream": ms_s,
            "ms_clip": ms_c, **{f"ms_chunk{c}": v for c, v in ms_k.items()}, "dense_ms": ms_d, "tp": tp, "fp": fp,
            "fn": fn}


@torch.no_grad()
def video_analysis(model, method, videos) -> dict:
    if not videos or not isinstance(method, STTF):
        return {}
    reuse, drift, tok = [], [], []
    for clip in videos:
        r = method.run(model, frames_of(clip), "rgb", clip, debug=True)
        nk = ~r.key[0]
        reused = ~r.mask[0][nk]
        reuse.append(r.reuse_rate())
        if reused.any():
            drift.append(float(r.drift[nk][reused].mean()))
        tok.append(r.vt.num_tokens / clip.num_frames)
    return {"video_tokens": float(np.mean(tok)), "video_reuse": float(np.mean(reuse)),
            "video_drift": float(np.mean(drift)) if drift else 0.0}


def evaluate(setting: Setting, model, shapes_seeds, shapes_clips, gest_clips, videos, args, dense_flops) -> dict:
    row: dict = {"setting": setting.label, "weights": setting.weights}
    t0 = time.perf_counter()
    for key, method in (("rgb", setting.rgb), ("events", setting.events)):
        if isinstance(method, STTF):
            row[f"cfg_{key}"] = {k: v for k, v in method.config().items() if v is not None}
    if setting.rgb is not None:
        ce = caption_eval(model, shapes_seeds, setting.rgb, progress=False)
        row.update(cider=ce.scores.cider, bleu4=ce.scores.bleu4,
                   tok_shapes=float(ce.per_clip["tokens_per_frame"].mean()))
    if setting.events is not None:
        ge = gesture_eval(model, [], setting.events, progress=False, clips=gest_clips)
        row.update(gesture_acc=ge.accuracy, tok_gesture=float(ge.per_clip["tokens_per_frame"].mean()))
    parts = [encoder_analysis(model, m, clips, args.timing_clips, args.flops_clips, args.repeats, dense_flops,
                              args.chunks) for m, clips in ((setting.rgb, shapes_clips), (setting.events, gest_clips))
             if m is not None]
    tot = {k: sum(p[k] for p in parts) for k in parts[0]}
    row["flops_ratio"] = ratio(tot["flops"], tot["dense_flops"])  # FlopCounterMode, first --flops-clips clips
    row["flops_ratio_analytic"] = ratio(tot["analytic"], tot["dense_analytic"])  # §7 formula, every clip
    for sched in ("stream", "clip", *(f"chunk{c}" for c in args.chunks)):
        row[f"wall_{sched}"] = ratio(tot["dense_ms"], tot[f"ms_{sched}"])
        row[f"eff_{sched}"] = ratio(row[f"wall_{sched}"], ratio(tot["dense_flops"], tot["flops"]))
    if tot["tp"] + tot["fp"] + tot["fn"]:
        row["mask_precision"] = ratio(tot["tp"], tot["tp"] + tot["fp"])
        row["mask_recall"] = ratio(tot["tp"], tot["tp"] + tot["fn"])
    row.update(video_analysis(model, setting.rgb, videos))
    row["seconds"] = time.perf_counter() - t0
    return row


def add_ratios(rows: list[dict]) -> None:
    dense = rows[0]
    for r in rows:
        r["cider_ratio"] = ratio(r.get("cider"), dense.get("cider"))
        r["bleu4_ratio"] = ratio(r.get("bleu4"), dense.get("bleu4"))
        r["gesture_ratio"] = ratio(r.get("gesture_acc"), dense.get("gesture_acc"))
        toks = [r[k] for k in ("tok_shapes", "tok_gesture") if r.get(k) is not None]
        r["meets_target"] = bool(
            r.get("cider_ratio") is not None and r.get("gesture_ratio") is not None and toks
            and max(toks) <= TARGET["tokens"] and r["gesture_ratio"] >= TARGET["gesture"]
            and r["cider_ratio"] >= TARGET["cider"])


COLUMNS = [("setting", "setting", "{}"), ("weights", "weights", "{}"), ("tok_shapes", "tok/f RGB", "{:.1f}"),
           ("tok_gesture", "tok/f events", "{:.1f}"), ("flops_ratio", "FLOPs/dense", "{:.3f}"),
           ("wall_stream", "wall × stream", "{:.2f}"), ("eff_stream", "eff stream", "{:.2f}"),
           ("wall_clip", "wall × clip", "{:.2f}"), ("eff_clip", "eff clip", "{:.2f}"),
           ("cider", "CIDEr", "{:.3f}"), ("cider_ratio", "CIDEr/dense", "{:.3f}"),
           ("bleu4", "BLEU-4", "{:.3f}"), ("bleu4_ratio", "BLEU-4/dense", "{:.3f}"),
           ("gesture_acc", "gesture acc", "{:.3f}"), ("gesture_ratio", "acc/dense", "{:.3f}"),
           ("mask_precision", "mask P", "{:.3f}"), ("mask_recall", "mask R", "{:.3f}"),
           ("video_tokens", "video tok/f", "{:.1f}"), ("video_reuse", "video reuse", "{:.3f}"),
           ("video_drift", "video drift", "{:.4f}"), ("meets_target", "target", "{}")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tinyvlm-shapes", help="model preset or .safetensors path (base weights)")
    p.add_argument("--sttf-weights", default=None,
                   help="stage-2 checkpoint (default: data/weights/tinyvlm-shapes-sttf.safetensors when it exists "
                        "and --model is tinyvlm-shapes)")
    p.add_argument("--limit", type=int, default=100, help="clips of each test split (ShapesWorld, gestures)")
    p.add_argument("--calib", type=int, default=None,
                   help="val clips per modality for the budget calibration (default min(32, max(8, 2 × limit)))")
    p.add_argument("--timing-clips", type=int, default=3, help="clips per modality timed (interleaved)")
    p.add_argument("--flops-clips", type=int, default=8,
                   help="clips per modality measured with FlopCounterMode (the analytic ratio covers all)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per clip and method (median)")
    p.add_argument("--videos", type=int, default=16, help="frames sampled from each real video")
    p.add_argument("--threads", type=int, default=1, help="torch threads (timings are per this many)")
    p.add_argument("--only", default=None, help="comma-separated substrings: run only matching settings (+ dense)")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results)")
    p.add_argument("--chunks", default="4,16", help="comma-separated chunk sizes c: the stream schedule also timed "
                                                   "encoding c frames per call (STTFConfig.chunk); '' = none")
    args = p.parse_args(argv)
    args.chunks = tuple(int(c) for c in args.chunks.split(",") if c.strip())
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    if args.calib is None:
        args.calib = min(32, max(8, 2 * args.limit))

    base = create_model(args.model)
    tuned_path = Path(args.sttf_weights) if args.sttf_weights else (
        weights_dir() / "tinyvlm-shapes-sttf.safetensors" if args.model == "tinyvlm-shapes" else None)
    tuned = create_model(str(tuned_path)) if tuned_path is not None and tuned_path.is_file() else None
    if tuned is None:
        print(f"[bench_sttf] no stage-2 weights ({tuned_path or 'not looked for with this --model'}): "
              "training-free settings only", file=sys.stderr)

    shapes_seeds = shapesworld.split_seeds("test", args.limit)
    shapes_clips = [shapesworld.make_clip(s) for s in shapes_seeds]
    gest_clips = [gestures.make_gesture_clip(s) for s in gestures.gesture_split_seeds("test", args.limit)]
    calib_rgb = [shapesworld.make_clip(s) for s in shapesworld.split_seeds("val", args.calib)]
    calib_ev = [gestures.make_gesture_clip(s) for s in gestures.gesture_split_seeds("val", args.calib)]
    videos = [load_clip(v, n_frames=args.videos) for v in sorted(VIDEO_DIR.glob("*"))
              if v.suffix.lower() in (".mp4", ".avi", ".mov", ".mkv")] if VIDEO_DIR.is_dir() else []
    if not videos:
        print(f"[bench_sttf] no real videos under {VIDEO_DIR}: video columns left empty", file=sys.stderr)

    settings = build_settings(base, tuned, tuned_path, calib_rgb, calib_ev)
    if args.only:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        settings = [s for i, s in enumerate(settings) if i == 0 or any(k in s.label for k in keys)]
    dense_flops = {}
    for clip in (shapes_clips[:1] + gest_clips[:1]):
        _, st = Dense().visual_tokens(base, frames_of(clip), clip.modality, count=True)
        dense_flops[clip.modality] = float(st.encoder_flops.sum())

    rows = []
    for s in settings:
        model = tuned if s.weights == "stage2" else base
        rows.append(evaluate(s, model, shapes_seeds, shapes_clips, gest_clips, videos, args, dense_flops))
        print(f"[bench_sttf] {s.label} ({s.weights}) done in {rows[-1]['seconds']:.0f} s", file=sys.stderr)
    add_ratios(rows)

    meta = {"model": args.model, "stage2_weights": str(tuned_path) if tuned is not None else None,
            "shapes_test_clips": len(shapes_seeds), "gesture_test_clips": len(gest_clips),
            "calibration": f"val splits, {args.calib} clips per modality, rho={RHO:.4f}",
            "timing": f"{args.timing_clips} clips per modality × {args.repeats} interleaved runs, median",
            "videos": [c.sample_id for c in videos], "total_seconds": round(time.perf_counter() - t_start, 1)}
    notes = ["Ratios are against the dense row (base weights) of this run; CIDEr on pycocoevalcap's scale (0–10), "
             "compared only within this set.",
             "FLOPs: encoder only (stem + blocks; the embedding source's stem on all patches included), "
             "FlopCounterMode (streaming schedule); eff = wall speedup / FLOPs speedup, for the stream and clip "
             "schedules.",
             f"target: ≤ {TARGET['tokens']:.0f} tokens/frame on both modalities with ≥ {TARGET['gesture']:.0%} of "
             f"dense gesture accuracy and ≥ {TARGET['cider']:.0%} of dense CIDEr; eff ≥ {TARGET['efficiency']}.",
             "mask P/R: recomputed patches of non-key frames vs ShapesWorld motion_mask.",
             "video drift: mean 1 − cos(STTF token, dense token) over reused patch-frames of non-key frames."]
    at = next(i for i, c in enumerate(COLUMNS) if c[0] == "eff_clip") + 1
    columns = COLUMNS[:at] + [col for c in args.chunks for col in (
        (f"wall_chunk{c}", f"wall × chunk {c}", "{:.2f}"), (f"eff_chunk{c}", f"eff chunk {c}", "{:.2f}"))] + COLUMNS[at:]
    notes[1] += (" 'chunk c': the stream schedule encoding c frames per call as they arrive (gated one by one, "
                 "layer-major against the carried state; up to c − 1 frames of latency).") if args.chunks else ""
    name = f"sttf-{Path(args.model).stem}"
    md, js = save_results(name, rows, columns, meta, args.out, title=f"STTF vs dense — {args.model}", notes=notes)
    print_table(rows, columns, title=f"STTF vs dense — {args.model}")
    hits = [r["setting"] + f" ({r['weights']})" for r in rows if r["meets_target"]]
    print(f"\nsettings meeting the token / accuracy / CIDEr target: {', '.join(hits) if hits else 'none'}")
    for r in rows:
        if r["meets_target"]:
            ok = {s: (r.get(f"eff_{s}") or 0) >= TARGET["efficiency"]
                  for s in ("stream", "clip", *(f"chunk{c}" for c in args.chunks))}
            print(f"  {r['setting']}: wall-clock eff ≥ {TARGET['efficiency']}: "
                  + ", ".join(f"{k} {v}" for k, v in ok.items()))
    print(f"results: {md} and {js} ({time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
