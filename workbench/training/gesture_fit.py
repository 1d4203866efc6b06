"""Stage 1, phase b: fit the gesture head on the frozen stage-1 model, under compression augmentation.

The main stage-1 loop trains everything jointly; this phase then trains only `model.gesture_head` on encoder
outputs cached once for `clips` synthetic gesture clips (train seeds disjoint from those the main loop used),
each step seeing the tokens the way a method hands them over: dense, STTF-fused runs from the pixel gate at a
random threshold, or a random token subset (`training.augment`). The encoder, projector and decoder are not
touched, so captions are unchanged by this phase.

Why a separate phase: in the shipped run the jointly trained head (then an attention pool) stayed at chance
(see `models/gesture_head.py`); fitting the head on frozen features is cheap (minutes) and isolates it.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from workbench.data import gestures
from workbench.methods.ops.fusion import fuse_runs
from workbench.methods.ops.gates import patch_pixels, reference_gate
from workbench.models.tinyvlm import TinyVLM
from workbench.models.visual_tokens import VisualTokens
from workbench.training.augment import AugmentConfig, compress_for_training
from workbench.training.runtime import ordered_map


@dataclass(frozen=True)
class GestureFitConfig:
    clips: int = 4800  # 2 400 until 2026-11-22: val 94.5 % → 95.9 % with 4 800
    first_seed: int = 900_000  # gesture train seeds from here (stage 1 uses < 124 000, stage 2 from 500 000)
    steps: int = 2500
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    eval_clips: int = 220  # gesture val split
    seed: int = 0
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(p_dense=0.3, p_fuse=0.5, p_drop=0.2))


def _render(seeds: list[int]) -> tuple[torch.Tensor, list[int]]:
    clips = [gestures.make_gesture_clip(s) for s in seeds]
    return torch.stack([torch.from_numpy(c.frames) for c in clips]), [c.label for c in clips]  # (b, T, 2, H, W)


@torch.no_grad()
def _cache(model: TinyVLM, seeds, progress: bool, desc: str,
           workers: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(encoder outputs (C, T, N, D) fp16, frames (C, T, 2, H, W) fp16, labels (C,)) of the gesture clips,
    on the model's device; clips are rendered in `workers` processes when > 0."""
    dev = next(model.parameters()).device
    enc, frames, labels = [], [], []
    seeds = list(seeds)
    chunks = [seeds[i: i + 16] for i in range(0, len(seeds), 16)]
    for f, lab in tqdm(ordered_map(_render, chunks, workers), total=len(chunks), disable=not progress, desc=desc,
                       unit="batch"):
        f = f.to(dev)
        enc.append(model.encode(f, "events").half())
        frames.append(f.half())
        labels += lab
    return torch.cat(enc), torch.cat(frames), torch.tensor(labels, device=dev)


def _tokens(enc: torch.Tensor, frames: torch.Tensor, mode: str, knob: float, patch: int,
            gen: torch.Generator) -> VisualTokens:
    if mode == "fuse":
        mask = reference_gate(patch_pixels(frames, patch), knob).mask  # (B, T, N)
        return fuse_runs(enc, mask)
    return compress_for_training(enc, mode, knob, gen)


@torch.no_grad()
def _accuracy(model: TinyVLM, enc, frames, labels, mode: str, knob: float) -> float:
    gen = torch.Generator("cpu").manual_seed(0)
    correct = 0
    for i in range(0, len(labels), 64):
        vt = _tokens(enc[i: i + 64].float(), frames[i: i + 64].float(), mode, knob, model.cfg.patch_size, gen)
        correct += int((model.gesture_logits(vt).argmax(-1) == labels[i: i + 64]).sum())
    return correct / len(labels)


def fit_gesture_head(model: TinyVLM, cfg: GestureFitConfig = GestureFitConfig(), progress: bool = True,
                     log=None, workers: int = 0) -> dict:
    """Re-initialise and train `model.gesture_head` in place; returns the fit record (val accuracies)."""
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.gesture_head
    for m in head.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    for p in head.parameters():
        p.requires_grad_(True)
    enc, frames, labels = _cache(model, range(cfg.first_seed, cfg.first_seed + cfg.clips), progress, "gesture clips",
                                 workers)
    v_enc, v_frames, v_labels = _cache(model, gestures.gesture_split_seeds("val", cfg.eval_clips), progress, "val",
                                       workers)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng([cfg.seed, 77])
    gen = torch.Generator("cpu").manual_seed(cfg.seed)
    head.train()
    for step in tqdm(range(cfg.steps), disable=not progress, desc="gesture head", unit="step"):
        for g in opt.param_groups:  # cosine decay
            g["lr"] = cfg.lr * 0.5 * (1 + np.cos(np.pi * step / cfg.steps))
        idx = torch.from_numpy(rng.choice(len(labels), cfg.batch_size, replace=False))
        mode, knob = cfg.augment.sample(rng)
        vt = _tokens(enc[idx].float(), frames[idx].float(), mode, knob, model.cfg.patch_size, gen)
        loss = F.cross_entropy(model.gesture_logits(vt), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log is not None and step % 50 == 0:
            log({"kind": "gesture_fit", "step": step, "loss": loss.item(), "mode": mode, "knob": knob})
    head.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    record = {"kind": "gesture_fit_eval", "config": asdict(cfg) | {"augment": asdict(cfg.augment)},
              "val_acc_dense": _accuracy(model, v_enc, v_frames, v_labels, "dense", 0.0),
              "val_acc_fused_tau0.05": _accuracy(model, v_enc, v_frames, v_labels, "fuse", 0.05),
              "val_acc_fused_tau0.15": _accuracy(model, v_enc, v_frames, v_labels, "fuse", 0.15),
              "elapsed_s": time.perf_counter() - t0}
    if log is not None:
        log(record)
    return record
