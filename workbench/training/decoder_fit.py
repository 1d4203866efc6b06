"""Stage 1, phase c: fine-tune the language side on the frozen encoder (`workbench train` runs it after phase b).

Why: the shipped main loop was cut at step 1 800 of its 3 000-step schedule with a cooldown to the floor
learning rate (7.5e-5), and its captions described objects as the training prior. A measured probe (2026-11-22,
60 val clips): 300 more steps of the language side alone at 5e-4 on the frozen encoder took CIDEr 0.42 → 0.67,
while a resampler of 16 summary tokens in front of the decoder did worse at equal steps (0.58). The visual
information was there; the decoder was under-trained. Freezing the encoder keeps everything that reads
encoder tokens valid — the gesture head (phase b), STTF's caches and thresholds, ANC's adapters and router
(valid, not equally good: a decoder that reads objects pays for ANC's whole-frame reuse — see README).

What trains: projector, spatial/temporal/text position embeddings, the sink and the decoder (plus the
training-only concept head when stage 1's `.heads.safetensors` is beside the checkpoint). The encoder runs in
eval mode (its running norms are frozen too) and without gradient. Batches are stage 1's (`batch_for_step`,
captions + QA, every `gesture_every`-th a gesture batch) taken `data_offset` steps into its seed streams, so no
clip of stage 1, stage 2, phase b, val or test is seen. Token sets are compressed as in stage 1 (STTF-fused at
a random threshold or a random subset): a fused run with proportional attention stands for its dense tokens
(stage 1's val loss is identical dense and fused), and a few hundred tokens keep a step at ≈ 1.3 s on 2 cores.
The shipped run (3 000 steps, 80 min): shapes val loss 1.089 → 0.914; test CIDEr 0.403 → 1.374, BLEU-4 0.264 →
0.371 (README model card).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench.models.tinyvlm import TinyVLM
from workbench.training.augment import AugmentConfig
from workbench.training.runtime import ordered_map


@dataclass(frozen=True)
class DecoderFitConfig:
    steps: int = 3000
    lr: float = 5e-4
    min_lr_ratio: float = 0.1
    warmup: int = 30
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    data_offset: int = 200_000  # steps into stage 1's seed streams (stage 1 < 3 000, stage 2 ≈ 50 000–60 000)
    eval_every: int = 500
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(
        p_dense=0.0, p_fuse=0.75, p_drop=0.25, tau_log_range=(math.log(0.03), math.log(0.3)),
        keep_range=(0.05, 0.25)))


def lr_at(cfg: DecoderFitConfig, step: int) -> float:
    """Linear warm-up, then cosine from `lr` to `lr · min_lr_ratio` at `steps`."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup))
    cos = 0.5 * (1 + math.cos(math.pi * min(step / max(1, cfg.steps), 1.0)))
    return cfg.lr * warm * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cos)


def language_parameters(model: TinyVLM) -> list[torch.nn.Parameter]:
    """Everything phase c trains: all of the model but the encoder and the gesture head."""
    frozen = {id(p) for m in (model.encoder, model.gesture_head) for p in m.parameters()}
    return [p for p in model.parameters() if id(p) not in frozen]


def fit_decoder(model: TinyVLM, cfg: DecoderFitConfig, stage1, heads=None, val: dict | None = None,
                progress: bool = True, log=None, workers: int = 0, kind: str = "decoder_fit") -> dict:
    """Train the language side of `model` in place (`stage1` = the run's Stage1Config, for its batches, seed and
    batch size); returns the fit record with the val evaluations (stage 1's teacher-forced metrics). `kind`
    names the phase in the log records ("decoder_fit" = phase c, "qa_fit" = phase d)."""
    from workbench.training.stage1 import _param_groups, batch_for_step, evaluate_stage1, losses, text_side

    t0 = time.perf_counter()
    dev = model.device
    train = language_parameters(model)
    ids = {id(p) for p in train}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)
    modules = [model] + ([heads.concepts] if heads is not None else [])  # not heads.recon: recon_weight is 0
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]}
              for g in _param_groups(modules, cfg.weight_decay)]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98))
    model.train()
    model.encoder.eval()
    s1 = replace(stage1, augment=cfg.augment)
    build = partial(batch_for_step, s1, text_side(model))
    steps = range(cfg.data_offset, cfg.data_offset + cfg.steps)
    evals = []
    with tqdm(total=cfg.steps, disable=not progress, desc=kind.replace("_", " "), unit="step") as bar:
        for i, (step, batch) in enumerate(zip(steps, ordered_map(build, steps, workers))):
            batch = batch.to(dev)
            mode, knob = cfg.augment.sample(np.random.default_rng([stage1.seed, step, 2]))
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, i)
            gen = torch.Generator("cpu").manual_seed(stage1.seed * 7919 + step)
            out = losses(model, batch, mode, knob, gen, heads, recon_weight=0.0)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(train, cfg.grad_clip)
            opt.step()
            bar.update(1)
            bar.set_postfix(lm=f"{out['lm'].item():.3f}", tok=int(out["tokens"]))
            if log is not None and i % 10 == 0:
                log({"kind": kind, "step": i, "lm": out["lm"].item(), "mode": mode, "knob": knob,
                     "tokens": out["tokens"], "modality": batch.modality, "lr": lr_at(cfg, i)})
            if val and ((i + 1) % cfg.eval_every == 0 or i + 1 == cfg.steps):
                rec = {"kind": f"{kind}_eval", "step": i + 1, **evaluate_stage1(model, s1, val)}
                model.encoder.eval()
                evals.append(rec)
                if log is not None:
                    log(rec)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return {"kind": kind, "config": json.loads(json.dumps(asdict(cfg), default=float)),
            "last_eval": evals[-1] if evals else {}, "elapsed_s": time.perf_counter() - t0}

