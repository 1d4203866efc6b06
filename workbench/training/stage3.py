"""Stage 3 for ANC: train the light/medium adapters and the router on a frozen TinyVLM.

The base model stays frozen (so the `full` branch stays bit-identical to dense). Per step, for a batch of clips
(ShapesWorld captions, every `gesture_every`-th step synthetic DVS gestures, seeds beyond stage 1's):
  1. one frozen encoder pass gives the full tokens and the shared trunk; the adapters give light / medium;
  2. frames are routed in order (batched over clips) with hard Gumbel-softmax (straight-through): a frame's
     tokens are the one-hot mix of [previous frame's tokens (skip), light, medium, full];
  3. loss = λ_task·(caption LM + gesture CE through the frozen decoder)
          + λ_F·mean Σ_k π_k c_k / c_full                    (expected FLOPs)
          + λ_bal·KL(mean π ‖ target mix)                    (no collapse onto one branch)
          + λ_stab·mean ‖π_t − π_{t−1}‖₁                      (stability, pairs after frame 1)
          + λ_distill·rel. MSE(light, full) + rel. MSE(medium, full)      (adapters; *proposal*)
          + λ_distort·mean Σ_k π_k·err_k, err_k = rel. token error of branch k against full at this frame
            (a dense, low-variance surrogate of the task signal for the router; *proposal*, 0 disables it).
Budget: the defaults run in about 20 min on 2 cores for the full-size model (`max_minutes` stops early and
saves). The run is deterministic given the config (except where `max_minutes` cuts it).

    train_stage3(Stage3Config(), "data/weights/tinyvlm-shapes.safetensors",
                 "data/weights/anc-tinyvlm-shapes.safetensors")
    python -m workbench.training.stage3 --nostab       # the λ_stab = 0 comparison router (same recipe)

Two phases (`workbench train --stage 3` runs both): a) adapters and router together, as above; b) `router_phase`:
a fresh router alone on a)'s frozen adapters, without the decoder, its chain following its own argmax decisions
(`explore=False`) and an oracle cross-entropy (`lam_oracle`) — the recipe that made the router refresh on motion.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from functools import partial
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from workbench.data import gestures, shapesworld
from workbench.methods.anc import ANC, ANCConfig, RouterState, advance, relative_costs, router_inputs
from workbench.methods.anc_modules import BRANCHES, ANCModule, all_branch_tokens, load_anc, save_anc
from workbench.methods.ops.routing import (expected_flops, gumbel_softmax_hard, kl_to_target, soft_switch_penalty,
                                           switch_rate)
from workbench.models.io import load_checkpoint
from workbench.models.registry import create_model
from workbench.models.tinyvlm import TinyVLM
from workbench.models.visual_tokens import VisualTokens
from workbench.training.batches import Batch, make_batch
from workbench.training.runtime import on_device, ordered_map
from workbench.training.stage1 import text_side


@dataclass(frozen=True)
class Stage3Config:
    steps: int = 300
    batch_size: int = 6
    num_frames: int = 16
    lr: float = 2e-3  # adapters
    router_lr: float = 1e-2  # the router is tiny and its signal (cost vs distortion) is consistent: learn faster
    min_lr_ratio: float = 0.1
    warmup: int = 20
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    temperature: float = 1.0  # Gumbel-softmax / router temperature
    lam_flops: float = 0.25  # λ_F
    lam_bal: float = 0.05  # λ_bal
    lam_stab: float = 0.1  # λ_stab
    lam_task: float = 1.0
    lam_distill: float = 1.0
    lam_distort: float = 5.0
    # λ_oracle: cross-entropy of the router's logits to the frame's cheapest branch under λ_F·cost + λ_distort·err
    # (*proposal*). The expected-cost terms alone vanish once the softmax saturates: the first routers learned
    # "skip" on every frame while refreshes were frequent (1-frame-stale tokens are cheap to reuse) and never
    # recovered when staleness grew; this term's gradient does not vanish when the router is wrong.
    lam_oracle: float = 3.0
    # oracle: "distortion" — the cheapest branch under λ_F·cost + λ_distort·err (mean token error; the phase-b
    # router of 2026-11-22); "staleness" — what the phase-c decoder loses (measured, README): it needs fresh views
    # of moving objects spread over the clip, and the light / medium tokens cost it more than a stale frame, so the
    # label is `full` when the reference is `stale_budget` frames old and something moved since (the mean relative
    # error of the `stale_topk` most-changed tokens of the stale frame exceeds `stale_level`), else `skip`
    oracle: str = "distortion"
    stale_budget: int = 4
    stale_level: float = 0.1
    stale_topk: int = 8
    # explore: frames follow Gumbel samples (training's exploration); False: the argmax, as at inference, so the
    # router sees the staleness its own decisions cause (with exploration refreshes are frequent, the oracle
    # rarely says "full", and the argmax router never refreshes)
    explore: bool = False
    router_steps: int = 200  # phase b (`router_phase`): the router alone, afresh, on phase a's adapters
    target_mix: tuple[float, ...] = (0.55, 0.25, 0.12, 0.08)  # skip, light, medium, full (frames after the first)
    first_frame: str | None = "full"  # keyframe branch of frame 0, as `ANCConfig.first_frame` (None = routed)
    gesture_every: int = 4
    qa_prob: float = 0.2
    seed: int = 0
    seed_offset: int = 5_000_000  # first train seed used (stage 1 uses the start of the train ranges)
    threads: int = 2
    device: str = "cpu"  # "cuda": train on a GPU (see training.runtime)
    workers: int = 0  # processes building batches ahead
    max_minutes: float | None = 24.0
    router_only: bool = False  # freeze the adapters (e.g. a second router on the same adapters)
    init: str | None = None  # start from this ANC checkpoint
    reset_router: bool = False  # with init: keep its adapters, start the router afresh (seeded)
    eval_every: int = 100
    eval_clips: int = 24
    progress: bool = True

    def __post_init__(self):
        if self.oracle not in ("distortion", "staleness"):
            raise ValueError(f"oracle must be 'distortion' or 'staleness', not {self.oracle!r}")
        if len(self.target_mix) != len(BRANCHES):
            raise ValueError(f"target_mix needs {len(BRANCHES)} weights ({BRANCHES})")
        if self.first_frame is not None and self.first_frame not in BRANCHES[1:]:
            raise ValueError(f"first_frame must be None or one of {BRANCHES[1:]}, not {self.first_frame!r}")


def lr_at(cfg: Stage3Config, step: int) -> float:
    """Linear warm-up, then cosine down to min_lr_ratio·lr."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    prog = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * prog)))


def batch_for_step(cfg: Stage3Config, model: TinyVLM, step: int) -> Batch:
    """The step's clips (a pure function of (seed, step)): gestures every `gesture_every`-th step."""
    rng = np.random.default_rng([cfg.seed, step, 3])
    first = cfg.seed_offset + step * cfg.batch_size
    if step % cfg.gesture_every == cfg.gesture_every - 1:
        seeds = gestures.GESTURE_SPLITS["train"][first: first + cfg.batch_size]
        clips = [gestures.make_gesture_clip(s, n_frames=cfg.num_frames) for s in seeds]
    else:
        seeds = shapesworld.SPLITS["train"][first: first + cfg.batch_size]
        clips = [shapesworld.make_clip(s, num_frames=cfg.num_frames) for s in seeds]
    return make_batch(clips, model.tokenizer, rng, model.cfg.caption_prompt, cfg.qa_prob)


def _rel_err(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Relative squared token error ‖x − ref‖² / ‖ref‖² per sample over the last two dims."""
    return ((x - ref) ** 2).mean((-1, -2)) / (ref ** 2).mean((-1, -2)).clamp_min(1e-8)


def staleness_label(stale: torch.Tensor, full: torch.Tensor, age: torch.Tensor, cfg: Stage3Config) -> torch.Tensor:
    """(B,) oracle branch: FULL where the reference is ≥ `stale_budget` frames old and its `stale_topk` most-changed
    tokens (stale (B, N, D) vs full (B, N, D), relative squared error per token) moved more than `stale_level`,
    else SKIP.

        >>> c = Stage3Config(oracle="staleness", stale_budget=2, stale_level=0.3, stale_topk=1)
        >>> full = torch.ones(2, 4, 3); stale = full.clone(); stale[1, 0] = 0.0
        >>> staleness_label(stale, full, torch.tensor([5, 5]), c).tolist(), staleness_label(stale, full, torch.tensor([1, 1]), c).tolist()
        ([0, 3], [0, 0])
    """
    per_token = ((stale - full) ** 2).mean(-1) / (full ** 2).mean(-1).clamp_min(1e-8)  # (B, N)
    moved = per_token.topk(min(cfg.stale_topk, per_token.shape[-1]), -1).values.mean(-1) > cfg.stale_level
    return torch.where((age >= cfg.stale_budget) & moved, BRANCHES.index("full"), BRANCHES.index("skip"))


def losses(model: TinyVLM, module: ANCModule, batch: Batch, cfg: Stage3Config, rel_costs: torch.Tensor,
           gen: torch.Generator) -> dict:
    """All loss terms of one batch (see the module docstring) and a few statistics."""
    frames = batch.frames  # (B, T, C, H, W)
    b, t_len = frames.shape[:2]
    br = all_branch_tokens(model, module, frames.flatten(0, 1), batch.modality)
    br = {k: v.unflatten(0, (b, t_len)) for k, v in br.items()}  # each (B, T, N, D)
    state = RouterState.start(b)
    z_prev = torch.zeros_like(br["full"][:, 0])
    zs, pis, errs, choices, oracle_ce = [], [], [], [], []
    for t in range(t_len):
        feats, allowed, e_ref = router_inputs(state, frames[:, t], batch.modality, model.cfg.patch_size,
                                              module.cfg.change_level)
        logits = module.router(feats)  # (B, K)
        y, pi = gumbel_softmax_hard(logits, cfg.temperature, allowed, gen)  # (B, K) each
        if not cfg.explore:  # follow the inference rule (argmax), straight-through
            y = F.one_hot(pi.argmax(-1), len(BRANCHES)).to(pi.dtype) - pi.detach() + pi
        keyframe = t == 0 and cfg.first_frame is not None
        if keyframe:  # keyframe: fixed branch, not routed
            y = pi = F.one_hot(torch.full((b,), BRANCHES.index(cfg.first_frame)), len(BRANCHES)).float()
        full_t = br["full"][:, t]
        cand = torch.stack([z_prev, br["light"][:, t], br["medium"][:, t], full_t], 1)  # (B, K, N, D)
        z_prev = (y[:, :, None, None] * cand).sum(1)  # (B, N, D)
        err_t = _rel_err(cand.detach(), full_t[:, None])  # (B, K)
        errs.append(err_t)
        if cfg.lam_oracle > 0 and not keyframe:
            if cfg.oracle == "staleness":  # refresh a stale reference once something moved (see Stage3Config)
                best = staleness_label(cand[:, 0].detach(), full_t, t - state.ref_t, cfg)
            else:  # the branch with the lowest cost + distortion at this frame
                best = (cfg.lam_flops * rel_costs + cfg.lam_distort * err_t).masked_fill(~allowed,
                                                                                         float("inf")).argmin(-1)
            oracle_ce.append(F.cross_entropy(logits.masked_fill(~allowed, float("-inf")) / cfg.temperature, best))
        choice = y.detach().argmax(-1)
        advance(state, frames[:, t], choice, e_ref)
        zs.append(z_prev)
        pis.append(pi)
        choices.append(choice)
    z = torch.stack(zs, 1)  # (B, T, N, D)
    pi = torch.stack(pis, 1)  # (B, T, K)
    err = torch.stack(errs, 1)  # (B, T, K)
    out = {}
    task = z.new_zeros(())
    if cfg.lam_task > 0:  # λ_task = 0: the router learns from the token-distortion surrogate alone (no decoder pass)
        vt = VisualTokens.dense(z)
        visual = model.visual_embeds(vt)
        logits, hidden = model(vt, batch.text_ids, visual)
        sel = batch.loss_mask
        out["lm"] = F.cross_entropy(logits[sel], batch.targets[sel])
        task = out["lm"]
        if batch.labels is not None:
            g = model.gesture_logits(vt, visual)
            out["gesture"] = F.cross_entropy(g, batch.labels)
            task = task + out["gesture"]
    out["task"] = task
    out["distill"] = _rel_err(br["light"], br["full"]).mean() + _rel_err(br["medium"], br["full"]).mean()
    routed = slice(1 if cfg.first_frame is not None else 0, None)  # frames the router decides
    out["distort"] = (pi * err)[:, routed].sum(-1).mean()
    out["flops"] = expected_flops(pi[:, routed], rel_costs).mean()
    out["bal"] = kl_to_target(pi[:, routed].mean((0, 1)), torch.tensor(cfg.target_mix))
    out["stab"] = soft_switch_penalty(pi)  # pairs after (0, 1): leaving the keyframe branch is expected
    out["oracle"] = torch.stack(oracle_ce).mean() if oracle_ce else task.new_zeros(())
    loss = (cfg.lam_task * task + cfg.lam_flops * out["flops"] + cfg.lam_bal * out["bal"]
            + cfg.lam_stab * out["stab"] + cfg.lam_distort * out["distort"] + cfg.lam_oracle * out["oracle"])
    if not cfg.router_only:
        loss = loss + cfg.lam_distill * out["distill"]
    out["loss"] = loss
    ch = torch.stack(choices, 1)  # (B, T)
    out["mix"] = [float((ch == k).float().mean()) for k in range(len(BRANCHES))]
    out["hard_cost"] = float(rel_costs[ch].mean())
    return out


@torch.no_grad()
def evaluate_routing(model: TinyVLM, module: ANCModule, shapes_seeds, gesture_seeds=(), cfg: ANCConfig = ANCConfig(),
                     num_frames: int = 16) -> dict:
    """Inference-path statistics per motion level: FLOPs fraction of dense, switches per second, branch mix and
    the relative token error against dense tokens."""
    anc = ANC(module, cfg)
    clips = [shapesworld.make_clip(s, num_frames=num_frames) for s in shapes_seeds]
    clips += [gestures.make_gesture_clip(s, n_frames=num_frames) for s in gesture_seeds]
    groups: dict[str, list] = {}
    for clip in clips:
        frames = torch.from_numpy(clip.frames)[None].to(model.device)
        vt, stats = anc.visual_tokens(model, frames, clip.modality, clip)
        route = anc.route(model, frames, clip.modality)
        full = anc.costs(model, clip.modality)["full"] * clip.num_frames
        dense = model.encode(frames, clip.modality)  # (1, T, N, D)
        err = float(_rel_err(vt.embeds.view_as(dense)[0], dense[0]).mean())
        level = clip.meta.get("motion_level", "gesture")
        groups.setdefault(level, []).append((float(stats.encoder_flops.sum()) / full,
                                             switch_rate(route.choices, clip.duration_s),
                                             np.bincount(route.choices, minlength=len(BRANCHES)) / clip.num_frames,
                                             err))
    out = {}
    for level, rows in sorted(groups.items()):
        out[level] = {"n": len(rows), "flops_frac": float(np.mean([r[0] for r in rows])),
                      "switches_per_s": float(np.mean([r[1] for r in rows])),
                      "mix": dict(zip(BRANCHES, np.mean([r[2] for r in rows], 0).round(4).tolist())),
                      "token_err": float(np.mean([r[3] for r in rows]))}
    return out


def _load_base(base) -> TinyVLM:
    if isinstance(base, TinyVLM):
        return base
    text = str(base)
    return load_checkpoint(text) if text.endswith(".safetensors") or "/" in text else create_model(text)


def router_phase(cfg: Stage3Config, adapters: str | Path) -> Stage3Config:
    """Phase b of the shipped recipe: a fresh router trained alone (adapters frozen) on `adapters`' branches,
    from the distortion surrogate and the oracle term without the decoder (λ_task = 0: the task gradient reaches
    the router only through a straight-through estimate, and was noise at this scale)."""
    return replace(cfg, steps=cfg.router_steps, init=str(adapters), router_only=True, reset_router=True,
                   lam_task=0.0, warmup=min(cfg.warmup, cfg.router_steps // 5), eval_every=cfg.router_steps // 2)


def staleness_phase(cfg: Stage3Config, adapters: str | Path) -> Stage3Config:
    """Phase b with the staleness oracle (the router shipped after phase c): `router_phase` on `adapters`, the
    oracle term alone (λ_distort, λ_F and λ_bal off: the oracle already encodes cost and what the decoder loses;
    λ_stab kept)."""
    return replace(router_phase(cfg, adapters), oracle="staleness", lam_distort=0.0, lam_flops=0.0, lam_bal=0.0)


def train_stage3(cfg: Stage3Config, base_ckpt, out: str | Path, log_path: str | Path | None = None) -> dict:
    """Train ANC on the frozen base (a checkpoint path, a preset name or a TinyVLM) and write `out`
    (safetensors, config + provenance in the metadata) plus `out` with suffix .log.jsonl. Returns the last
    evaluation record."""
    out = Path(out)
    with on_device(cfg.device) as dev:
        return _train_stage3(cfg, base_ckpt, out, dev, Path(log_path) if log_path else out.with_suffix(".log.jsonl"))


def _train_stage3(cfg: Stage3Config, base_ckpt, out: Path, dev: torch.device, log_path: Path) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = _load_base(base_ckpt).to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    module = load_anc(cfg.init) if cfg.init else ANCModule.for_model(model, seed=cfg.seed)
    module = module.to(dev)
    module.check_compatible(model)
    if cfg.init and cfg.reset_router:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            module.router.load_state_dict(ANCModule(module.cfg).router.state_dict())
    module.train()
    if cfg.router_only:
        for p in list(module.light.parameters()) + list(module.medium.parameters()):
            p.requires_grad_(False)
    params = [p for p in module.parameters() if p.requires_grad]
    router = {id(p) for p in module.router.parameters()}
    groups = [{"params": [p for p in params if id(p) not in router], "base_lr": cfg.lr},
              {"params": list(module.router.parameters()), "base_lr": cfg.router_lr}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, weight_decay=cfg.weight_decay)
    probe = ANC(module)
    rel = {m: relative_costs(probe.costs(model, m)) for m in ("rgb", "events")}
    gen = torch.Generator("cpu").manual_seed(cfg.seed * 7919 + 3)
    val_shapes = shapesworld.split_seeds("val", cfg.eval_clips)
    val_gest = gestures.gesture_split_seeds("val", max(1, cfg.eval_clips // 4))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    record: dict = {}
    base_name = str(base_ckpt) if not isinstance(base_ckpt, TinyVLM) else model.cfg.name
    with open(log_path, "w") as log, tqdm(total=cfg.steps, disable=not cfg.progress, desc="stage 3",
                                          unit="step") as bar:
        batches = ordered_map(partial(batch_for_step, cfg, text_side(model)), range(cfg.steps), cfg.workers)
        for step, batch in zip(range(cfg.steps), batches):
            batch = batch.to(dev)
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step) * g["base_lr"] / cfg.lr
            res = losses(model, module, batch, cfg, rel[batch.modality], gen)
            opt.zero_grad(set_to_none=True)
            res["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            bar.update(1)
            bar.set_postfix(loss=f"{res['loss'].item():.3f}", cost=f"{res['hard_cost']:.2f}")
            row = {"kind": "train", "step": step, "modality": batch.modality, "lr": lr_at(cfg, step),
                   **{k: float(res[k].detach()) for k in ("loss", "task", "distill", "distort", "flops", "bal", "stab", "oracle")},
                   "mix": res["mix"], "hard_cost": res["hard_cost"]}
            log.write(json.dumps(row) + "\n")
            over = cfg.max_minutes is not None and time.perf_counter() - t_start > cfg.max_minutes * 60
            last = step + 1 == cfg.steps or over
            if (step + 1) % cfg.eval_every == 0 or last:
                module.eval()
                record = {"kind": "eval", "step": step + 1, "elapsed_s": time.perf_counter() - t_start,
                          "stopped_early": bool(over and step + 1 < cfg.steps),
                          "routing": evaluate_routing(model, module, val_shapes, val_gest,
                                                      ANCConfig(first_frame=cfg.first_frame), cfg.num_frames)}
                module.train()
                log.write(json.dumps(record) + "\n")
                log.flush()
                info = {"stage": 3, "steps": step + 1, "base": base_name, "base_model": model.cfg.name,
                        "train_config": asdict(cfg), "costs": {m: probe.costs(model, m) for m in rel},
                        "last_eval": record}
                save_anc(module, out, info)
            if over:
                break
    module.eval()
    return record


def main(argv: list[str] | None = None) -> int:
    """`python -m workbench.training.stage3 [--nostab] [--steps N] [--base PATH] [--out PATH]`."""
    from workbench.models.registry import weights_dir
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default=str(weights_dir() / "tinyvlm-shapes.safetensors"))
    p.add_argument("--out", default=None, help="default data/weights/anc[-nostab]-<base model>.safetensors")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--nostab", action="store_true", help="λ_stab = 0 (the unregularised comparison router)")
    p.add_argument("--router-only", action="store_true", help="train only the router (adapters frozen)")
    p.add_argument("--init", default=None, help="start from this ANC checkpoint")
    p.add_argument("--max-minutes", type=float, default=24.0)
    p.add_argument("--router-phase-only", action="store_true",
                   help="only phase b: a fresh router on the adapters of --out (or --init)")
    p.add_argument("--oracle", choices=("staleness", "distortion"), default="staleness",
                   help="phase b's oracle (default staleness: the shipped router since phase c)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=0)
    args = p.parse_args(argv)
    cfg = Stage3Config(max_minutes=args.max_minutes, router_only=args.router_only, init=args.init,
                       device=args.device, workers=args.workers)
    if args.steps is not None:
        cfg = replace(cfg, steps=args.steps)
    if args.nostab:
        cfg = replace(cfg, lam_stab=0.0)
    name = _load_base(args.base).cfg.name
    out = args.out or str(weights_dir() / f"anc{'-nostab' if args.nostab else ''}-{name}.safetensors")
    if not args.router_phase_only:  # phase a: adapters + router, with the decoder's task loss
        train_stage3(cfg, args.base, out)
    adapters = args.init if args.router_phase_only and args.init else out
    phase = staleness_phase if args.oracle == "staleness" else router_phase
    rec = train_stage3(phase(cfg, adapters), args.base, out, Path(out).with_suffix(".router.log.jsonl"))
    print(json.dumps(rec, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
