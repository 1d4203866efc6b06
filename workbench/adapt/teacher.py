"""The cloud teacher's recipe: the shipped `tinyvlm-shapes` fine-tuned on the shifted domains' teacher seeds.

Why this recipe: it is cheap and reproducible on 2 cores, and it gives a teacher that is measurably better on
the shifted data than the device (README model card: CIDEr per domain before any adaptation). A larger model
trained from scratch would cost hours here.

What it sees: every step a batch of `batch` clips, the domains in turn (night, palette, haze, source — the
source keeps it from forgetting), seeds from each domain's *teacher* range (`shifts.domain_seeds(..., "teacher")`,
disjoint from the device's stream and from the held-out test seeds). Inputs are what the cloud receives from a
device: STTF top-k token sets at a random budget ρ ∈ [0.06, 0.2] with a random 0–40 % of the tokens removed,
encoded by `tokens.encode_tokens` (4 frames per clip with autograd). Targets: a random one of the clip's five
reference captions (cross-entropy). Every parameter trains except the gesture head; AdamW, lr 3e-4 with linear
warm-up (20 steps) and cosine decay to 10 %.

    >>> cfg = TeacherConfig(steps=1, batch=1)
    >>> cfg.domains[-1]
    'source'
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from workbench.adapt.akd import caption_batch
from workbench.adapt.tokens import encode_tokens, tokens_from_clip
from workbench.data.shifts import domain_seeds, shifted_clip
from workbench.models.tinyvlm import TinyVLM
from workbench.models.visual_tokens import VisualTokens


@dataclass(frozen=True)
class TeacherConfig:
    steps: int = 300
    batch: int = 8
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup: int = 20
    weight_decay: float = 0.01
    rho_range: tuple[float, float] = (0.06, 0.2)
    drop_range: tuple[float, float] = (0.0, 0.4)
    grad_frames: int = 4
    domains: tuple[str, ...] = ("night", "palette", "haze", "source")
    seed: int = 0


def lr_at(cfg: TeacherConfig, step: int) -> float:
    """Linear warm-up, then cosine to lr · min_lr_ratio."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup))
    cos = 0.5 * (1 + math.cos(math.pi * min(step / max(1, cfg.steps), 1.0)))
    return cfg.lr * warm * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cos)


def teacher_batch(cfg: TeacherConfig, step: int, patch_size: int = 8):
    """(token sets, caption strings) of one step: clip i of the batch is domain (step·batch + i) mod |domains|,
    the next unused teacher seed of that domain; ρ, drop fraction and caption drawn from (seed, step, i)."""
    sets, caps = [], []
    for i in range(cfg.batch):
        k = step * cfg.batch + i
        dom = cfg.domains[k % len(cfg.domains)]
        seed = domain_seeds(dom, "teacher", 1, offset=k // len(cfg.domains))[0]
        rng = np.random.default_rng([cfg.seed, step, i])
        clip = shifted_clip(dom, seed)
        ts = tokens_from_clip(clip, float(rng.uniform(*cfg.rho_range)), patch_size)
        drop = float(rng.uniform(*cfg.drop_range))
        keep = torch.from_numpy(rng.random(ts.num_tokens) >= drop)
        keep[0] = True  # never an empty set
        sets.append(ts.select(keep))
        caps.append(clip.captions[int(rng.integers(len(clip.captions)))])
    return sets, caps


def train_teacher(model: TinyVLM, cfg: TeacherConfig, progress: bool = True, log=None) -> dict:
    """Fine-tune `model` in place (eval mode: running norms fixed); returns the fit record."""
    t0 = time.perf_counter()
    params = [p for n, p in model.named_parameters() if not n.startswith("gesture_head.")]
    for n, p in model.named_parameters():
        p.requires_grad_(not n.startswith("gesture_head."))
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    tok = model.tokenizer
    model.eval()
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = []
    for step in tqdm(range(cfg.steps), disable=not progress, desc="teacher", unit="step"):
        sets, caps = teacher_batch(cfg, step, model.cfg.patch_size)
        vt = VisualTokens.stack([encode_tokens(model, s, grad_frames=cfg.grad_frames, generator=gen) for s in sets])
        ids, targets, mask = caption_batch(tok, model.cfg.caption_prompt, [tok.encode(c) + [tok.eos_id] for c in caps])
        logits, _ = model(vt, ids)
        loss = F.cross_entropy(logits[mask], targets[mask])
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if log is not None and step % 10 == 0:
            log({"kind": "teacher", "step": step, "loss": float(np.mean(losses[-10:])), "lr": lr_at(cfg, step),
                 "tokens": vt.num_tokens})
    for p in model.parameters():
        p.requires_grad_(True)
    return {"kind": "teacher_fit", "config": json.loads(json.dumps(asdict(cfg))), "steps": cfg.steps,
            "final_loss": float(np.mean(losses[-20:])), "elapsed_s": time.perf_counter() - t0}
