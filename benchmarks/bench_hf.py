"""What STTF and SparseVLM / FastV would save on real edge-VLM shapes: random-weight Hugging Face models with the
real architectures' widths, heads and token counts (accuracy needs trained weights and is not claimed; compute
does not).

    python benchmarks/bench_hf.py                       # counted FLOPs; wall clock only on a quiet machine
    python benchmarks/bench_hf.py --time on --repeats 5 # force the timing (interleaved, median)
    python benchmarks/bench_hf.py --tower-layers 24 --decoder-layers 24   # full depth (slow on 2 cores)

Part A — STTF in the vision tower, 16-frame static-camera clips (ShapesWorld: still background, one object
moving; upscaled to the tower's size by the checkpoint's processor), τ = 0.05 on pixels, stream schedule:
CLIP ViT-L/14-336 (LLaVA-1.5: 24×24 patches + CLS, features of layer −2), SigLIP-so400m-384 (LLaVA-OneVision:
27×27), Qwen2-VL-2B's ViT (24×24 patches per 2-frame temporal patch, 2-D RoPE). Dense baseline = the same
tower blocks over all frames in one batch (`HFTower.forward`, bit-identical to the HF tower's features; the
HF LLaVA path would also run the unused last layer, which is not charged to dense). Each tower layer has the
same shape and, under STTF, the same recomputed rows, so FLOPs per layer are identical: with `--tower-layers L`
cut below the real depth, the full-depth FLOPs are extrapolated exactly (stem + depth × per-layer).

Part B — SparseVLM / FastV in the decoder at prefill: a Qwen2-0.5B-shaped decoder (896 wide, 24 layers, 14
heads, 2 KV heads, MLP 4864) behind LLaVA-1.5's 576 visual tokens of one 336-px image (+ the prompt), pruned to
the SparseVLM paper's 192 / 128 / 64 tokens (keep = n / 576, the paper's count: mean over layers of the visual
tokens entering them) at depths (2, 6, 12) (the release prunes after layers 2, 6, 15 of 32); FastV at K = 2 with
the same keep. FLOPs: FlopCounterMode on the actual prefill (+ the analytic formula as a check); time: the
driver's prefill wall clock (layer 0 to the final norm), dense and pruned interleaved, median.

Targets (issue 14): STTF tower wall-clock speedup ≥ 0.7 × its FLOPs speedup on the static-camera clips;
SparseVLM at 128 of 576: ≥ 50 % fewer prefill FLOPs and prefill wall-clock speedup ≥ 0.7 × the FLOPs speedup.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

from common import interleaved_median, machine_info, print_table, ratio, save_results  # noqa: I001

from workbench.data.shapesworld import make_clip
from workbench.eval.flops import count_flops
from workbench.methods.fastv import FastV, FastVConfig
from workbench.methods.sparsevlm import SparseVLM, SparseVLMConfig
from workbench.methods.sttf import STTF, STTFConfig
from workbench.models.hf.tiny import tiny_vlm
from workbench.models.visual_tokens import VisualTokens

TOWERS = {"llava": ("CLIP ViT-L/14-336 (LLaVA-1.5)", 24), "onevision": ("SigLIP-so400m-384 (LLaVA-OneVision)", 27),
          "qwen2vl": ("Qwen2-VL-2B ViT (2-frame patches, 2-D RoPE)", 32)}
STATIC_SEEDS = (0, 4)  # static camera, one object moving (plain / textured background)
BUDGETS = (192, 128, 64)
POINTS = (2.0, 6.0, 12.0)


def quiet() -> bool:
    return os.getloadavg()[0] < 1.5


def tower_rows(family: str, layers: int, repeats: int, timed: bool, tau: float, shape: str = "real") -> list[dict]:
    title, depth = TOWERS[family]
    m = tiny_vlm(family, shape, layers=1, vision_layers=layers + (1 if family == "llava" else 0))
    sttf, n = STTF(STTFConfig(tau=tau)), m.cfg.num_patches
    rows = []
    for seed in STATIC_SEEDS:
        frames = m.input_frames(make_clip(seed, 16))  # (1, T', C, H, W) at the tower's size
        with torch.inference_mode():
            dense_flops = count_flops(m.encoder, frames[0])[1]
            run = sttf.run(m, frames, "rgb", count=True)
        computed = run.mask[0].sum(1).numpy()
        stem_d = 2 * frames.shape[1] * n * m.encoder.stems["rgb"].in_features * m.encoder.dim
        stem_s = 2 * int(computed[1:].sum() + n) * m.encoder.stems["rgb"].in_features * m.encoder.dim
        f_sttf = float(run.flops.sum())
        full = lambda f, stem: stem + (f - stem) * depth / layers  # noqa: E731  (identical layers)
        row = {"tower": title, "seed": seed, "grid": f"{m.cfg.grid[0]}×{m.cfg.grid[1]}", "frames": frames.shape[1],
               "layers_run": layers, "computed_per_frame": float(computed.mean()), "tokens_per_frame": n,
               "gflops_dense": dense_flops / 1e9, "gflops_sttf": f_sttf / 1e9,
               "flops_speedup": ratio(dense_flops, f_sttf),
               "flops_speedup_full_depth": ratio(full(dense_flops, stem_d), full(f_sttf, stem_s))}
        if timed:
            with torch.inference_mode():
                ms = interleaved_median({"dense": lambda: m.encoder(frames[0]),
                                         "sttf": lambda: sttf.encode(m, frames, "rgb")}, repeats=repeats)
            row |= {"ms_dense": ms["dense"], "ms_sttf": ms["sttf"], "wall_speedup": ratio(ms["dense"], ms["sttf"])}
            row["wall_vs_flops"] = ratio(row["wall_speedup"], row["flops_speedup"])
            row["target_met"] = row["wall_vs_flops"] >= 0.7
        rows.append(row)
        print(row, flush=True)
    return rows


def decoder_rows(layers: int, repeats: int, timed: bool, shape: str = "real") -> list[dict]:
    m = tiny_vlm("llava", shape, layers=layers, vision_layers=2)  # the tower is not run: features are given
    m.hf.generation_config.min_new_tokens = None
    torch.manual_seed(0)
    n = m.cfg.num_patches  # 576
    vt = VisualTokens.dense(torch.randn(1, 1, n, m.encoder.dim))  # one image's tower features
    prompt = "what color is the circle"
    methods = {"dense": None}
    for b in BUDGETS:
        methods[f"sparsevlm {b}"] = SparseVLM(SparseVLMConfig(points=POINTS, keep=b / 576))
        methods[f"fastv {b}"] = FastV(FastVConfig(K=2.0, keep=b / 576))
    stats = {}
    with torch.inference_mode():
        for name, meth in methods.items():
            g = m.generate(vt, prompt, max_new_tokens=1, pruner=meth, count=True)
            stats[name] = g.decoder
            print(name, g.decoder.flops / 1e9, "GFLOPs", flush=True)
        ms = {}
        if timed:  # interleaved (order reversed every round), first round untimed; the driver's prefill time
            per: dict[str, list[float]] = {k: [] for k in methods}
            for r in range(repeats + 1):
                for name in (list(methods) if r % 2 == 0 else list(methods)[::-1]):
                    t = m.generate(vt, prompt, max_new_tokens=1, pruner=methods[name]).decoder.ms
                    if r:
                        per[name].append(t)
            ms = {k: float(np.median(v)) for k, v in per.items()}
    d = stats["dense"]
    rows = []
    for name, st in stats.items():
        row = {"method": name, "tokens_in": n, "keep": float(st.keep_fraction[0]),
               "mean_tokens": float(st.sublayer[0].mean()), "last_layer": float(st.last_layer[0]),
               "gflops": st.flops / 1e9, "gflops_analytic": st.analytic_flops / 1e9,
               "flops_saved": 1 - st.flops / d.flops, "flops_speedup": ratio(d.flops, st.flops)}
        if ms:
            row |= {"prefill_ms": ms[name], "wall_speedup": ratio(ms["dense"], ms[name])}
            row["wall_vs_flops"] = ratio(row["wall_speedup"], row["flops_speedup"])
        rows.append(row)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tower-layers", type=int, default=2, help="tower layers run (FLOPs extrapolated to full depth)")
    p.add_argument("--decoder-layers", type=int, default=24, help="decoder layers (Qwen2-0.5B: 24)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--time", choices=("auto", "on", "off"), default="auto",
                   help="wall clock: auto = only when the load average is below 1.5")
    p.add_argument("--tau", type=float, default=0.05)
    p.add_argument("--parts", default="tower,decoder")
    p.add_argument("--families", default="llava,onevision,qwen2vl")
    p.add_argument("--shape", choices=("real", "tiny"), default="real", help="tiny: a smoke run of the script")
    args, _ = p.parse_known_args()  # run_all.py's --limit / --model are not this script's
    torch.set_num_threads(args.threads)
    timed = args.time == "on" or (args.time == "auto" and quiet())
    load = machine_info()["load_avg"]
    note_time = ("wall clock taken (interleaved, median of %d)" % args.repeats) if timed else \
        f"wall clock NOT taken: load average {load:.1f} ≥ 1.5 (rerun with --time on on a quiet machine)"
    suffix = "" if args.shape == "real" else "-smoke"
    if "tower" in args.parts:
        rows = []
        for fam in args.families.split(","):
            rows += tower_rows(fam, args.tower_layers, args.repeats, timed, args.tau, args.shape)
        cols = [("tower", "tower", "{}"), ("seed", "clip", "{}"), ("grid", "grid", "{}"), ("frames", "tower frames", "{}"),
                ("computed_per_frame", "tokens computed / frame", "{:.1f}"), ("tokens_per_frame", "dense", "{}"),
                ("gflops_dense", "GFLOPs dense", "{:.1f}"), ("gflops_sttf", "GFLOPs STTF", "{:.1f}"),
                ("flops_speedup", "FLOPs speedup", "{:.2f}×"), ("flops_speedup_full_depth", "full depth", "{:.2f}×"),
                ("ms_dense", "ms dense", "{:.0f}"), ("ms_sttf", "ms STTF", "{:.0f}"), ("wall_speedup", "wall speedup", "{:.2f}×"),
                ("wall_vs_flops", "wall / FLOPs", "{:.2f}"), ("target_met", "≥ 0.7", "{}")]
        print_table(rows, cols, "STTF in HF vision towers")
        save_results("hf-sttf-towers" + suffix, rows, cols, {"tau": args.tau, "tower_layers": args.tower_layers, "timed": timed},
                     title="STTF in Hugging Face vision towers (random weights, real shapes)",
                     notes=[note_time, f"{args.tower_layers} tower layers run; 'full depth' extrapolates the counted "
                                       "FLOPs to the real depth (identical layers, same recomputed rows per layer)",
                            "accuracy is not claimed (random weights)"])
    if "decoder" in args.parts:
        rows = decoder_rows(args.decoder_layers, args.repeats, timed, args.shape)
        cols = [("method", "method", "{}"), ("keep", "keep (paper's count)", "{:.3f}"),
                ("mean_tokens", "mean visual tokens / sublayer", "{:.0f}"), ("last_layer", "last layer", "{:.0f}"),
                ("gflops", "prefill GFLOPs (counted)", "{:.1f}"), ("gflops_analytic", "analytic", "{:.1f}"),
                ("flops_saved", "FLOPs saved", "{:.1%}"), ("flops_speedup", "FLOPs speedup", "{:.2f}×"),
                ("prefill_ms", "prefill ms", "{:.0f}"), ("wall_speedup", "wall speedup", "{:.2f}×"),
                ("wall_vs_flops", "wall / FLOPs", "{:.2f}")]
        print_table(rows, cols, "SparseVLM / FastV in a Qwen2-0.5B-shaped decoder, 576 visual tokens")
        save_results("hf-decoder-prune" + suffix, rows, cols, {"decoder_layers": args.decoder_layers, "points": POINTS,
                                                      "fastv_K": 2.0, "timed": timed},
                     title="SparseVLM / FastV in a Hugging Face decoder (random weights, Qwen2-0.5B shape)",
                     notes=[note_time, "576 visual tokens of one 336-px image (LLaVA-1.5's CLIP-L/14-336) + the prompt",
                            "target: SparseVLM 128 ≥ 50 % fewer prefill FLOPs and wall speedup ≥ 0.7 × FLOPs speedup"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
