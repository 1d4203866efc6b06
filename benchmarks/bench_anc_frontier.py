"""What the decoder loses to stale frames: CIDEr per motion level under fixed refresh rules (the ANC oracle's design).

Whole-frame routing can only reuse a frame (skip) or compute it (full / light / medium). Before retraining the
router, this measures which rule keeps the phase-c decoder's captions: frame 0 full, then per frame either the
last computed frame's tokens (skip) or a fresh computation, decided by

- `every k`: a refresh every k frames (k = 2, 4, 8), `never` (frame 0 only), `dense`;
- `mean err > θ`: the mean relative token error of the stale frame vs the current one (the old oracle's
  distortion) exceeds θ;
- `top8 err > θ`: the mean of its 8 most-changed tokens exceeds θ (local motion);
- `age ≥ K & top8 > θ`: the staleness rule the shipped router learns (`Stage3Config(oracle="staleness")`);
- `light every k` / `medium every 4`: the refresh computed by the cheaper branches (shipped adapters).

Per-level CIDEr is the mean per-clip CIDEr of one scoring run over all levels (as bench_anc.py); refresh = the
fraction of frames 1..T−1 computed. Deterministic; ~90 s per rule on 2 loaded cores at --limit 20.

    python benchmarks/bench_anc_frontier.py --limit 20
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, save_results  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import workbench  # noqa: E402,F401
from bench_anc import LEVELS, seeds_by_level  # noqa: E402
from workbench.eval.evaluate import caption_eval  # noqa: E402
from workbench.methods.anc import shipped_path  # noqa: E402
from workbench.methods.anc_modules import load_anc, run_branch  # noqa: E402
from workbench.models.registry import create_model  # noqa: E402
from workbench.models.visual_tokens import VisualTokens  # noqa: E402
from workbench.pipeline import FrameStats  # noqa: E402


def token_err(ref: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
    """(N,) relative squared error per token of a stale frame ref (N, D) against the current cur (N, D)."""
    return ((ref - cur) ** 2).mean(-1) / (cur ** 2).mean(-1).clamp_min(1e-8)


class RefreshRule:
    """A pipeline method: frame 0 full, then `refresh(t, age, stale, current)` decides per frame; refreshed
    frames take the `branch` tokens (full = the dense encoder), the others the last refreshed frame's."""

    def __init__(self, name: str, refresh, branch: str = "full", module=None):
        self.name, self.refresh, self.branch, self.module = name, refresh, branch, module
        self.fractions: list[float] = []

    def config(self) -> dict:
        return {"rule": self.name}

    @torch.no_grad()
    def visual_tokens(self, model, frames, modality, clip=None, count=False):
        full = model.encode(frames, modality)[0]  # (T, N, D)
        fresh = full if self.branch == "full" else run_branch(model, self.module, self.branch, frames[0], modality)[0]
        t_len, n = full.shape[:2]
        out, last, hits = full.clone(), 0, []
        for t in range(1, t_len):
            hit = bool(self.refresh(t, t - last, out[t - 1], full[t]))
            hits.append(hit)
            if hit:
                last = t
            out[t] = fresh[t] if hit else out[t - 1]
        self.fractions.append(float(np.mean(hits)) if hits else 0.0)
        computed = np.array([n] + [n if h else 0 for h in hits])
        return VisualTokens.dense(out[None]), FrameStats(computed, np.full(t_len, n), np.zeros(t_len), np.zeros(t_len))


def rules(module) -> list[RefreshRule]:
    top8 = lambda stale, cur: float(token_err(stale, cur).topk(8).values.mean())  # noqa: E731
    out = [RefreshRule("dense", lambda t, age, s, c: True)]
    out += [RefreshRule(f"every {k}", (lambda k: lambda t, age, s, c: age >= k)(k)) for k in (2, 4, 8)]
    out += [RefreshRule("never", lambda t, age, s, c: False)]
    out += [RefreshRule(f"mean err > {th}", (lambda th: lambda t, age, s, c: float(token_err(s, c).mean()) > th)(th))
            for th in (0.05, 0.1, 0.2)]
    out += [RefreshRule(f"top8 err > {th}", (lambda th: lambda t, age, s, c: top8(s, c) > th)(th)) for th in (0.3, 0.6)]
    out += [RefreshRule(f"age ≥ {k} & top8 > {th}", (lambda k, th: lambda t, age, s, c: age >= k and top8(s, c) > th)(k, th))
            for k, th in ((4, 0.3), (4, 0.1))]
    out += [RefreshRule(f"{b} every {k}", (lambda k: lambda t, age, s, c: t % k == 0)(k), b, module)
            for b, k in (("light", 1), ("light", 2), ("light", 4), ("medium", 4))]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tinyvlm-shapes")
    p.add_argument("--limit", type=int, default=20, help="ShapesWorld test clips per motion level")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = create_model(args.model)
    levels = seeds_by_level(args.limit)
    seeds = [s for lvl in LEVELS for s in levels[lvl]]
    rows = []
    for rule in rules(load_anc(shipped_path(model))):
        per = caption_eval(model, seeds, rule, progress=False).scores.per_image
        row = {"rule": rule.name}
        for i, lvl in enumerate(LEVELS):
            row[f"{lvl}_cider"] = 100 * float(np.mean([per[f"shapes-{s}"]["cider"] for s in levels[lvl]]))
            row[f"{lvl}_refresh"] = float(np.mean(rule.fractions[i * args.limit:(i + 1) * args.limit]))
        rows.append(row)
        print(f"[frontier] {rule.name}: " + ", ".join(f"{lvl} {row[f'{lvl}_cider']:.1f}" for lvl in LEVELS),
              file=sys.stderr, flush=True)
    cols = [("rule", "rule", "{}")] + [(f"{lvl}_cider", f"{lvl} CIDEr", "{:.1f}") for lvl in LEVELS] + \
           [(f"{lvl}_refresh", f"{lvl} refresh", "{:.3f}") for lvl in LEVELS]
    save_results(f"anc-frontier-{Path(args.model).stem}", rows, cols,
                 {"model": args.model, "clips_per_level": args.limit, "seconds": round(time.perf_counter() - t0)},
                 args.out, title=f"Refresh rules vs caption quality — {args.model}")
    print_table(rows, cols)
    return 0


if __name__ == "__main__":
    sys.exit(main())
