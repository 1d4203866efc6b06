"""Stream benchmark: real-time factor, tokens per frame, peak memory vs length, caption agreement with dense.

Every input is streamed at its native frame rate through `workbench.stream.caption_stream` (windows of 16
frames, back to back), end to end — decoding (PyAV), fitting, the method's encoder work with its state carried
across the whole stream, and one caption per window — under dense, STTF (pixels, τ = 0.05; a stride of 16 frames
per encoder call, as `workbench caption --fps` runs it, and frame by frame), ANC (the shipped router) and STTF+ANC:

- RTF = wall time ÷ media duration (open the file → last caption; the model is loaded before), the median of
  `--repeats` runs, dense and the methods interleaved (the order reversed every round) in one process;
- tokens per frame entering the decoder, and computed by the encoder;
- mean decode time per caption (the decoder's share, which dense's 196 tokens per frame make expensive);
- caption agreement with dense on the same windows: exact-match rate and mean word-level F1;
- on the ShapesWorld stream (test-split scenes of 2 s each at 25 fps, written as an H.264 file): BLEU-4 and
  CIDEr of the windows that lie inside one scene against that scene's reference captions;
- peak RSS against stream length: the ShapesWorld stream at 1×, 4× and 16× its length, each (method, length)
  in a fresh process (`resource.getrusage` maxrss), so the peak is that run's alone.

    python benchmarks/bench_stream.py --model tinyvlm-debug --scenes 2 --lengths 1,2 --repeats 1   # smoke
    python benchmarks/bench_stream.py                                                              # the run
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, print_table, ratio, save_results  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import workbench  # noqa: E402,F401  (offline environment first)
from workbench.data.shapesworld import split_seeds  # noqa: E402
from workbench.errors import CheckpointError  # noqa: E402
from workbench.models.registry import create_model  # noqa: E402
from workbench.pipeline import Dense  # noqa: E402
from workbench.stream import StreamConfig, caption_stream, open_stream  # noqa: E402
from workbench.stream.synthetic import write_shapes_stream  # noqa: E402

VIDEO_DIR = REPO.parent / "shared" / "data" / "real" / "video"
TARGET = {"rtf": 0.5, "static_tokens": 31.0, "rss_growth": 0.10}
STATIC = "tree"  # the static-camera real clip


def methods(model) -> dict:
    from workbench.methods.sttf import STTF, STTFConfig
    # "sttf": what `workbench caption --fps` runs (a stride of 16 frames per encoder call); "sttf 1/call": frame by frame
    out = {"dense": Dense(), "sttf": STTF(STTFConfig(tau=0.05, chunk=16)), "sttf 1/call": STTF(STTFConfig(tau=0.05))}
    try:
        from workbench.methods.anc import ANC, ANCConfig, shipped_path
        from workbench.methods.anc_modules import load_anc
        from workbench.methods.combined import STTFANC
        anc = ANC(load_anc(shipped_path(model)), ANCConfig())
        out["anc"], out["sttf+anc"] = anc, STTFANC(anc, STTFConfig(tau=0.05))
    except CheckpointError as e:
        print(f"[bench_stream] no ANC weights for {model.cfg.name} ({e}): dense and STTF only", file=sys.stderr)
    return out


def rss_mb() -> float:
    """Resident memory of this process now (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_once(model, source, method, window: int = 16, sample_rss: bool = False) -> dict:
    before, peak, curve = rss_mb(), [0.0], []

    def on_frame(n: int) -> None:
        if sample_rss and n % 10 == 0:
            now = rss_mb()
            peak[0] = max(peak[0], now)
            if n % 100 == 0:
                curve.append((n, round(now, 1)))
    t0 = time.perf_counter()
    ws = list(caption_stream(model, open_stream(source), method, StreamConfig(window=window), on_frame=on_frame))
    wall = time.perf_counter() - t0
    frames = ws[-1].end_frame
    media = ws[-1].end_s - ws[0].start_s
    return {"wall_s": wall, "media_s": media, "rtf": wall / media, "frames": frames,
            "tok_decoder": sum(w.tokens_to_decoder for w in ws) / frames,
            "tok_computed": sum(w.tokens_computed for w in ws) / frames,
            "decode_ms": float(np.mean([w.decode_ms for w in ws])),
            "encode_ms_frame": sum(w.encode_ms for w in ws) / frames,
            "read_ms_frame": sum(w.read_ms for w in ws) / frames,
            "captions": [w.caption for w in ws], "spans": [(w.start_s, w.end_s) for w in ws],
            "rss_before_mb": before, "rss_growth_mb": max(peak[0], rss_mb()) - before, "rss_curve": curve}


def word_f1(a: str, b: str) -> float:
    """Bag-of-words F1 of two captions (1 when equal)."""
    from collections import Counter
    ca, cb = Counter(a.split()), Counter(b.split())
    common = sum((ca & cb).values())
    if not common:
        return 0.0
    p, r = common / sum(ca.values()), common / sum(cb.values())
    return 2 * p * r / (p + r)


def interleaved(model, source, ms: dict, repeats: int) -> dict:
    """Median RTF over `repeats` interleaved rounds; the other columns from the last round (deterministic)."""
    names, runs = list(ms), {n: [] for n in ms}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            runs[n].append(run_once(model, source, ms[n]))
    out = {}
    for n in names:
        row = dict(runs[n][-1])
        row["rtf"] = float(np.median([x["rtf"] for x in runs[n]]))
        row["rtf_runs"] = [round(x["rtf"], 4) for x in runs[n]]
        out[n] = row
    dense = out.get("dense")
    for n, row in out.items():
        pairs = list(zip(row["captions"], dense["captions"]))
        row["agree_exact"] = float(np.mean([a == b for a, b in pairs]))
        row["agree_f1"] = float(np.mean([word_f1(a, b) for a, b in pairs]))
        row["rtf_vs_dense"] = ratio(row["rtf"], dense["rtf"])
    return out


def scene_scores(row: dict, scenes) -> dict:
    """BLEU-4 / CIDEr of the windows inside one scene against that scene's references."""
    from workbench.eval.metrics import score_captions
    hyps, refs = {}, {}
    for i, ((a, b), cap) in enumerate(zip(row["spans"], row["captions"])):
        sc = next((s for s in scenes if s.start_s - 1e-6 <= a and b <= s.end_s + 1e-6), None)
        if sc is not None and cap.strip():
            hyps[str(i)], refs[str(i)] = cap, sc.captions
    if not hyps:
        return {}
    s = score_captions(hyps, refs, spice=False)
    return {"cider": s.cider, "bleu4": s.bleu4, "scored_windows": len(hyps)}


def child(args) -> int:
    """One (method, video) stream in this fresh process; prints JSON with the peak RSS."""
    torch.set_num_threads(args.threads)
    model = create_model(args.model)
    r = run_once(model, args.video, methods(model)[args.method], sample_rss=True)
    r["rss_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    r.pop("captions"), r.pop("spans")
    print(json.dumps(r))
    return 0


def memory_rows(args, folder: Path, names: list[str]) -> list[dict]:
    rows = []
    seeds = list(split_seeds("test", args.scenes * max(args.lengths)))
    for mult in args.lengths:
        path, _ = write_shapes_stream(folder / f"shapes-{mult}x.mp4", seeds[: args.scenes * mult])
        for n in names:
            cmd = [sys.executable, __file__, "--child", "--method", n, "--video", str(path), "--model", args.model,
                   "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if out.returncode:
                raise RuntimeError(f"child {n} {mult}x failed:\n{out.stderr[-2000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            curve = r["rss_curve"]
            half = [v for f, v in curve if f >= r["frames"] / 2]  # the second half of the stream
            rows.append({"method": n, "length": f"{mult}×", "mult": mult, "media_s": r["media_s"],
                         "frames": r["frames"], "rtf": r["rtf"], "rss_peak_mb": r["rss_peak_mb"],
                         "rss_before_mb": r["rss_before_mb"], "rss_growth_mb": r["rss_growth_mb"],
                         "rss_second_half_mb": (max(half) - min(half)) if len(half) > 1 else None,
                         "rss_curve": curve})
            print(f"[bench_stream] memory {n} {mult}×: peak {r['rss_peak_mb']:.0f} MB, +{r['rss_growth_mb']:.1f} MB "
                  f"while streaming, RTF {r['rtf']:.3f}", file=sys.stderr)
    for r in rows:
        base = next(x for x in rows if x["method"] == r["method"] and x["mult"] == args.lengths[0])
        r["rss_vs_1x"] = ratio(r["rss_peak_mb"], base["rss_peak_mb"])
        r["stream_rss_vs_1x"] = ratio(r["rss_before_mb"] + r["rss_growth_mb"], base["rss_before_mb"] + base["rss_growth_mb"])
    return rows


COLUMNS = [("input", "input", "{}"), ("method", "method", "{}"), ("media_s", "media s", "{:.1f}"),
           ("fps", "fps", "{:.2f}"), ("rtf", "RTF", "{:.3f}"), ("rtf_vs_dense", "RTF/dense", "{:.3f}"),
           ("tok_decoder", "tok/f decoder", "{:.1f}"), ("tok_computed", "tok/f computed", "{:.1f}"),
           ("decode_ms", "decode ms/caption", "{:.0f}"), ("encode_ms_frame", "encode ms/frame", "{:.2f}"),
           ("read_ms_frame", "read ms/frame", "{:.2f}"), ("agree_exact", "same caption as dense", "{:.2f}"),
           ("agree_f1", "word F1 vs dense", "{:.3f}"), ("cider", "CIDEr", "{:.3f}"), ("bleu4", "BLEU-4", "{:.3f}")]
MEM_COLUMNS = [("method", "method", "{}"), ("length", "length", "{}"), ("media_s", "media s", "{:.0f}"),
               ("frames", "frames", "{}"), ("rtf", "RTF", "{:.3f}"), ("rss_peak_mb", "peak RSS MB", "{:.0f}"),
               ("rss_vs_1x", "peak / 1×", "{:.3f}"), ("rss_before_mb", "RSS before stream MB", "{:.0f}"),
               ("rss_growth_mb", "growth while streaming MB", "{:.1f}"),
               ("stream_rss_vs_1x", "max RSS while streaming / 1×", "{:.3f}"),
               ("rss_second_half_mb", "RSS change over the 2nd half MB", "{:.1f}")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tinyvlm-shapes")
    p.add_argument("--scenes", type=int, default=5, help="ShapesWorld scenes (2 s each) in the 1× stream")
    p.add_argument("--limit", type=int, default=None, help="alias of --scenes (run_all.py)")
    p.add_argument("--lengths", default="1,4,16", help="stream lengths for the memory runs, × the 1× stream")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs per input and method (median RTF)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default=None)
    p.add_argument("--parts", default="rtf,memory", help="rtf (real clips + ShapesWorld stream), memory, or both")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--video", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.lengths = [int(x) for x in str(args.lengths).split(",") if x.strip()]
    args.scenes = args.limit or args.scenes
    if args.child:
        return child(args)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    model = create_model(args.model)
    ms = methods(model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        folder = Path(tmp)
        shapes, scenes = write_shapes_stream(folder / "shapes-1x.mp4", list(split_seeds("test", args.scenes)))
        inputs = [("shapes stream", shapes, scenes)]
        if VIDEO_DIR.is_dir():
            inputs += [(v.stem, v, None) for v in sorted(VIDEO_DIR.glob("*")) if v.suffix in (".mp4", ".avi")]
        else:
            print(f"[bench_stream] no real videos under {VIDEO_DIR}", file=sys.stderr)
        for name, path, sc in (inputs if "rtf" in args.parts else []):
            fps = open_stream(path).info.fps
            res = interleaved(model, path, ms, args.repeats)
            for n, r in res.items():
                row = {"input": name, "method": n, "fps": fps, **r}
                if sc is not None:
                    row.update(scene_scores(r, sc))
                rows.append(row)
            print(f"[bench_stream] {name}: " + ", ".join(f"{n} RTF {r['rtf']:.3f}" for n, r in res.items()),
                  file=sys.stderr)
        mem = memory_rows(args, folder, list(ms)) if "memory" in args.parts else []
    for r in rows:
        r.pop("captions", None), r.pop("spans", None)
    checks = target_check(rows, mem)
    meta = {"model": args.model, "window": 16, "stride": 16, "threads": args.threads, "repeats": args.repeats,
            "shapes_stream": f"{args.scenes} test-split scenes × 2 s at 25 fps (H.264 crf 18)",
            "lengths": args.lengths, "targets": checks, "total_seconds": round(time.perf_counter() - t_start, 1)}
    notes = ["RTF = wall time (open → last caption: PyAV decoding, fitting, encoder, captions) ÷ media time; "
             "median of the interleaved runs; the model is loaded before the clock starts.",
             "tok/f decoder: visual tokens entering the decoder per frame (a window's first frame gives every "
             "patch one token, the floor is 196/16 = 12.25); tok/f computed: patches through the encoder.",
             "same caption as dense / word F1: per window, against dense's caption of the same window.",
             "CIDEr / BLEU-4: windows inside one ShapesWorld scene vs that scene's 5 references (pycocoevalcap; "
             "CIDEr's IDF comes from this small set, compare only within this table).",
             "peak RSS: ru_maxrss of a fresh process per (method, length) (torch + model + imports set the floor); "
             "growth while streaming: the largest resident size sampled every 10 frames minus the size before "
             "the stream opened — what the stream itself holds; RSS change over the 2nd half: max − min of the "
             "samples (every 100 frames) in the second half of the stream (a leak grows there, a plateau does not)."]
    name = f"stream-{Path(args.model).stem}"
    md = mem_md = None
    if rows:
        md, _ = save_results(name, rows, COLUMNS, meta, args.out, title=f"Streams — {args.model}", notes=notes)
    if mem:
        mem_md, _ = save_results(f"{name}-memory", mem, MEM_COLUMNS, meta, args.out,
                                 title=f"Streams: peak memory vs length — {args.model}", notes=notes[-1:])
    if rows:
        print_table(rows, COLUMNS, title=f"Streams — {args.model}")
    if mem:
        print_table(mem, MEM_COLUMNS, title="peak memory vs stream length")
    print("\ntargets:", json.dumps(checks, indent=2))
    print(f"results: {md}, {mem_md} ({time.perf_counter() - t_start:.0f} s)")
    return 0


def target_check(rows: list[dict], mem: list[dict]) -> dict:
    """The issue's targets, met or not, with the numbers."""
    get = lambda i, m: next((r for r in rows if r["input"] == i and r["method"] == m), None)  # noqa: E731
    out = {}
    bikes_s, bikes_d = get("bikes", "sttf"), get("bikes", "dense")
    if bikes_s and bikes_d:
        out["bikes STTF RTF < 0.5 and < dense"] = {"sttf": round(bikes_s["rtf"], 3), "dense": round(bikes_d["rtf"], 3),
                                                   "met": bikes_s["rtf"] < TARGET["rtf"] and bikes_s["rtf"] < bikes_d["rtf"]}
    static = get(STATIC, "sttf")
    if static:
        out[f"{STATIC} (static camera) STTF tokens/frame ≤ 31"] = {"tokens": round(static["tok_decoder"], 1),
                                                                   "met": static["tok_decoder"] <= TARGET["static_tokens"]}
    for m in sorted({r["method"] for r in mem}):
        rows_m = [r for r in mem if r["method"] == m]
        peak = max(r["rss_vs_1x"] for r in rows_m)
        longest = max(rows_m, key=lambda r: r["mult"])
        tail = longest.get("rss_second_half_mb") or 0.0
        out[f"{m} peak RSS flat within 10 %"] = {
            "peak RSS / 1×": round(peak, 3),
            "max RSS while streaming / 1×": round(max(r["stream_rss_vs_1x"] for r in rows_m), 3),
            f"RSS change over the 2nd half of the {longest['length']} stream MB": round(tail, 1),
            "met": peak <= 1 + TARGET["rss_growth"] and tail <= TARGET["rss_growth"] * longest["rss_before_mb"]}
    return out


if __name__ == "__main__":
    sys.exit(main())
