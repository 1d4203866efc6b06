"""Stage 2: fine-tune the stage-1 TinyVLM with STTF in the loop (METHODS.md §1.7, §3.2) — `workbench train --stage 2`.

Every step runs the clip batch through the STTF encoder the way inference does — a reference-state gate per
frame, keyframes, and partial encoding in which reused tokens keep their cached outputs and recomputed tokens
attend to the cached (stale) keys/values of reused ones — and the decoder sees the fused tokens. To make that
differentiable, partial encoding is simulated at dense cost by `ops.partial.masked_step` (identical forward
values), and the gate is straight-through: the forward pass uses the hard decision s ≥ τ, the backward pass the
gradient of sigmoid((log s − log τ) / temperature). Each change-score source has its own learnable log τ,
initialised at the τ that meets the budget ρ with the base weights (`calibrate_tau`), and a budget loss
λ_b·(mean(m) − ρ)² (m over all patch-frames, keyframes included) keeps the recompute rate near ρ.

When stage 1's training-only reconstruction heads sit beside the base checkpoint (`.heads.safetensors`), their
patch-reconstruction loss is kept on the tokens the decoder sees (each predicts its patch at its run's first
frame), as in stage 1. RGB batches (ShapesWorld) use the pixel or embedding source, event batches (synthetic
gestures) the event-rate source; data come from the stage-1 training seed streams at an offset, so no clip of
stage 1, val or test is seen. The checkpoint has the stage-1 format; the learned thresholds are in its info
under "sttf_gate" (read them with `workbench.methods.sttf_calibration.learned_config`).

    train_stage2(Stage2Config(), "data/weights/tinyvlm-shapes.safetensors",
                 "data/weights/tinyvlm-shapes-sttf.safetensors")
"""
from __future__ import annotations

import json
import math
import time
from functools import partial
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from workbench.data import gestures, shapesworld
from workbench.data.clip import Clip
from workbench.methods.ops.fusion import fuse_runs
from workbench.methods.ops.gates import GateRule, GateState, gate_step, patch_pixels, soft_gate
from workbench.methods.ops.partial import masked_step
from workbench.methods.sttf import SCORE_KIND, STTFConfig
from workbench.methods.sttf_calibration import calibrate_tau
from workbench.models.io import load_checkpoint, read_metadata, save_checkpoint
from workbench.models.tinyvlm import TinyVLM
from workbench.training.batches import Batch, make_batch
from workbench.training.runtime import on_device, ordered_map
from workbench.training.stage1 import PretrainHeads, _jsonable, _param_groups, text_side


@dataclass(frozen=True)
class Stage2Config:
    steps: int = 150  # the shipped run (time budget); each ≈ a stage-1 "fuse" step, ~2–3 s on 2 cores
    batch_size: int = 8
    lr: float = 2e-4  # model weights (cosine to min_lr_ratio after warmup)
    min_lr_ratio: float = 0.1
    warmup: int = 20
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    gate_lr: float = 0.03  # the log-thresholds (constant)
    gesture_every: int = 4  # every n-th step is a gesture (event) batch
    qa_prob: float = 0.2
    rho: float = 31 / 196  # token budget: the paper's 31 of 196 tokens per frame
    budget_weight: float = 10.0  # λ_b
    temperature: float = 0.5  # of the straight-through sigmoid, in log-score units
    rgb_sources: tuple[str, ...] = ("pixels", "embedding")
    event_sources: tuple[str, ...] = ("events",)
    keyframe_every: int | None = None
    scene_cut: float | None = 0.5
    recon_weight: float = 1.0  # stage 1's patch-reconstruction loss on the decoder's tokens (when its heads exist)
    calib_clips: int = 24  # train clips per source for the initial τ
    eval_every: int = 100
    eval_clips: int = 16
    data_offset: int = 50_000  # steps into stage 1's train seed streams (stage 1 uses the first 3000)
    seed: int = 0
    threads: int = 2
    device: str = "cpu"  # "cuda": train on a GPU (see training.runtime)
    workers: int = 0  # processes building batches ahead
    max_minutes: float | None = 18.0  # stop early (evaluate, save) once the loop has run this long


class GateParams(nn.Module):
    """One learnable log τ per change-score source (kept outside the model, saved in the checkpoint's info)."""

    def __init__(self, taus: dict[str, float]):
        super().__init__()
        self.log_tau = nn.ParameterDict({s: nn.Parameter(torch.tensor(math.log(max(t, 1e-6))))
                                         for s, t in taus.items()})

    def tau(self, source: str) -> float:
        return float(self.log_tau[source].detach().exp())


@dataclass
class Stage2Batch:
    batch: Batch
    source: str
    rates: torch.Tensor | None  # (B, T, N) event rates for the events source

    def to(self, device) -> "Stage2Batch":
        return Stage2Batch(self.batch.to(device), self.source, None if self.rates is None else self.rates.to(device))


def lr_scale(cfg: Stage2Config, step: int) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    prog = min((step - cfg.warmup) / max(1, cfg.steps - cfg.warmup), 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * prog))


def _rates(clips: list[Clip]) -> torch.Tensor | None:
    if any(c.patch_event_rate is None for c in clips):
        return None
    r = np.stack([c.patch_event_rate for c in clips]).astype(np.float32)  # (B, T, g, g)
    return torch.from_numpy(r).flatten(2)  # (B, T, N)


def batch_for_step(cfg: Stage2Config, model: TinyVLM, step: int) -> Stage2Batch:
    """Deterministic in (seed, step): a ShapesWorld or gesture batch and the change-score source it trains."""
    rng = np.random.default_rng([cfg.seed, step, 21])
    first = (step + cfg.data_offset) * cfg.batch_size
    if step % cfg.gesture_every == cfg.gesture_every - 1:
        seeds = gestures.GESTURE_SPLITS["train"][first: first + cfg.batch_size]
        clips, sources = [gestures.make_gesture_clip(s) for s in seeds], cfg.event_sources
    else:
        seeds = shapesworld.SPLITS["train"][first: first + cfg.batch_size]
        clips, sources = [shapesworld.make_clip(s) for s in seeds], cfg.rgb_sources
    batch = make_batch(clips, model.tokenizer, rng, model.cfg.caption_prompt, cfg.qa_prob)
    return Stage2Batch(batch, sources[int(rng.integers(len(sources)))], _rates(clips))


def sttf_forward(model: TinyVLM, gate: GateParams, cfg: Stage2Config, b: Stage2Batch,
                 heads: PretrainHeads | None = None) -> dict:
    """STTF-in-the-loop forward: losses (LM + gesture + budget [+ patch reconstruction]) and the realised rate."""
    batch, src = b.batch, b.source
    frames, enc = batch.frames, model.encoder
    bsz, t = frames.shape[:2]
    emb = enc.embed(frames.flatten(0, 1), batch.modality).unflatten(0, (bsz, t))  # (B, T, N, D)
    if src == "pixels":
        feats = patch_pixels(frames, model.cfg.patch_size)  # (B, T, N, C·p·p)
    elif src == "embedding":
        feats = emb.detach()
    else:
        feats = None
        if b.rates is None:
            raise ValueError("the events source needs event clips (patch_event_rate)")
    log_tau = gate.log_tau[src]
    rule = GateRule("threshold", gate.tau(src), 0, cfg.keyframe_every, cfg.scene_cut)
    state, cache = GateState(), None
    outs, ms, hard = [], [], []
    for f in range(t):
        g = gate_step(state, rule, None if feats is None else feats[:, f],
                      None if b.rates is None or src != "events" else b.rates[:, f], SCORE_KIND[src] or "l1")
        soft = soft_gate(g.score, log_tau, cfg.temperature)  # (B, N)
        m = g.mask.float() + soft - soft.detach()  # straight-through: hard forward, soft backward
        m = torch.where(g.key[:, None], torch.ones_like(m), m)  # dense frames carry no gate gradient
        out, cache = masked_step(enc, emb[:, f], m, batch.modality, cache)
        outs.append(out)
        ms.append(m)
        hard.append(g.mask)
    enc_out = torch.stack(outs, 1)  # (B, T, N, D)
    m = torch.stack(ms, 1)  # (B, T, N)
    vt = fuse_runs(enc_out, torch.stack(hard, 1))
    # the task losses mirror stage 1's `losses` on this token set
    visual = model.visual_embeds(vt)
    logits, _ = model(vt, batch.text_ids, visual)
    sel = batch.loss_mask
    lm = F.cross_entropy(logits[sel], batch.targets[sel])
    budget = (m.mean() - cfg.rho) ** 2
    out = {"lm": lm, "budget": budget, "rate": float(m.detach().mean()),
           "tokens_per_frame": float(vt.counts().float().mean()) / t,
           "token_acc": float((logits[sel].argmax(-1) == batch.targets[sel]).float().mean())}
    task = lm
    if batch.labels is not None:
        gl = model.gesture_logits(vt, visual)
        out["gesture"] = F.cross_entropy(gl, batch.labels)
        out["gesture_acc"] = float((gl.argmax(-1) == batch.labels).float().mean())
        task = task + out["gesture"]
    if heads is not None and cfg.recon_weight > 0:  # each fused token predicts its patch at its run's first frame
        pix = patch_pixels(frames, model.cfg.patch_size)  # (B, T, N, C·p·p)
        rows = torch.arange(bsz)[:, None].expand_as(vt.patch)  # (B, M)
        valid = torch.ones_like(vt.patch, dtype=torch.bool) if vt.valid is None else vt.valid
        target = pix[rows, vt.t_start, vt.patch]  # (B, M, C·p·p)
        out["recon"] = F.mse_loss(heads.recon[batch.modality](vt.embeds)[valid], target[valid])
        task = task + cfg.recon_weight * out["recon"]
        concepts = getattr(batch, "concepts", None)
        if concepts is not None and hasattr(heads, "concepts"):
            c = heads.concepts(visual, vt.attn_key_bias())
            out["concept"] = F.binary_cross_entropy_with_logits(c, concepts)
            task = task + out["concept"]
    out["loss"] = task + cfg.budget_weight * budget
    return out


def initial_taus(model: TinyVLM, cfg: Stage2Config) -> dict[str, float]:
    """τ per source meeting the budget ρ with the base weights, on training clips past the stage-2 stream."""
    base = STTFConfig(keyframe_every=cfg.keyframe_every, scene_cut=cfg.scene_cut)
    far = (cfg.data_offset + 10 * max(cfg.steps, 1000)) * cfg.batch_size
    shapes = [shapesworld.make_clip(s) for s in shapesworld.SPLITS["train"][far: far + cfg.calib_clips]]
    gest = [gestures.make_gesture_clip(s) for s in gestures.GESTURE_SPLITS["train"][far: far + cfg.calib_clips]]
    taus = {}
    for src in cfg.rgb_sources:
        taus[src] = calibrate_tau(model, shapes, cfg.rho, src, base)
    for src in cfg.event_sources:
        if src in taus:
            raise ValueError(f"source {src!r} is listed for both rgb and event batches; one τ per source")
        taus[src] = calibrate_tau(model, gest, cfg.rho, src, base)
    return taus


@torch.no_grad()
def evaluate_stage2(model: TinyVLM, gate: GateParams, cfg: Stage2Config) -> dict:
    """Teacher-forced loss / token accuracy / gesture accuracy and realised rate on fixed val clips, per source."""
    model.eval()
    rng = np.random.default_rng([cfg.seed, 10**9])
    shapes = [shapesworld.make_clip(s) for s in shapesworld.split_seeds("val", cfg.eval_clips)]
    gest = [gestures.make_gesture_clip(s) for s in gestures.gesture_split_seeds("val", cfg.eval_clips)]
    res = {}
    for clips, sources in ((shapes, cfg.rgb_sources), (gest, cfg.event_sources)):
        batch = make_batch(clips, model.tokenizer, rng, model.cfg.caption_prompt, qa_prob=0.0)
        for src in sources:
            out = sttf_forward(model, gate, cfg, Stage2Batch(batch, src, _rates(clips)).to(model.device))
            for k in ("lm", "token_acc", "gesture_acc", "rate", "tokens_per_frame"):
                if k in out:
                    res[f"{src}_{k}"] = float(out[k])
    model.train()
    return res


def train_stage2(cfg: Stage2Config, base_ckpt: str | Path, out: str | Path, progress: bool = True) -> dict:
    """Fine-tune `base_ckpt` with STTF in the loop; write `out` (+ a JSONL log beside it). Returns the last eval.

    Not resumable (it is short): a rerun starts over from `base_ckpt`.
    """
    with on_device(cfg.device) as dev:
        return _train_stage2(cfg, base_ckpt, Path(out), progress, dev)


def _train_stage2(cfg: Stage2Config, base_ckpt: str | Path, out: Path, progress: bool, dev: torch.device) -> dict:
    log_path = out.with_suffix(".log.jsonl")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = load_checkpoint(base_ckpt).to(dev)
    base_info = read_metadata(base_ckpt)
    heads_path = Path(base_ckpt).with_suffix(".heads.safetensors")
    heads = None
    if heads_path.is_file():  # stage 1's training-only reconstruction heads keep the tokens informative
        heads = PretrainHeads(model.cfg).to(dev)
        heads.load_state_dict({k: v for k, v in load_file(str(heads_path)).items()
                               if not k.startswith("main_gesture_head.")})  # stage 1's resume copy of its head
    init = initial_taus(model, cfg)
    gate = GateParams(init).to(dev)
    model.train()
    groups = _param_groups([model] + ([heads] if heads is not None else []), cfg.weight_decay)
    opt = torch.optim.AdamW(groups + [{"params": list(gate.parameters()), "weight_decay": 0.0, "lr": cfg.gate_lr}],
                            lr=cfg.lr, betas=(0.9, 0.98))
    record: dict = {}
    t_start = time.perf_counter()
    done = cfg.steps
    with open(log_path, "w") as log, tqdm(total=cfg.steps, disable=not progress, desc="stage 2", unit="step") as bar:
        log.write(json.dumps({"kind": "init", "tau": init, "base": str(base_ckpt),
                              "recon_heads": str(heads_path) if heads is not None else None}) + "\n")
        batches = ordered_map(partial(batch_for_step, cfg, text_side(model)), range(cfg.steps), cfg.workers)
        for step, b in zip(range(cfg.steps), batches):
            b = b.to(dev)
            for g in opt.param_groups[:-1]:
                g["lr"] = cfg.lr * lr_scale(cfg, step)
            res = sttf_forward(model, gate, cfg, b, heads)
            opt.zero_grad(set_to_none=True)
            res["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            bar.update(1)
            bar.set_postfix(loss=f"{res['loss'].item():.3f}", src=b.source, rate=f"{res['rate']:.3f}")
            if step % 10 == 0:
                log.write(json.dumps({"kind": "train", "step": step, "source": b.source, "loss": res["loss"].item(),
                                      "lm": res["lm"].item(), "budget": res["budget"].item(), "rate": res["rate"],
                                      "recon": float(res["recon"].detach()) if "recon" in res else None,
                                      "tau": {s: gate.tau(s) for s in gate.log_tau}}) + "\n")
                log.flush()
            over = cfg.max_minutes is not None and time.perf_counter() - t_start > 60 * cfg.max_minutes
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps or over:
                record = {"kind": "eval", "step": step + 1, "elapsed_s": time.perf_counter() - t_start,
                          "tau": {s: gate.tau(s) for s in gate.log_tau}, **evaluate_stage2(model, gate, cfg)}
                log.write(json.dumps(record) + "\n")
                log.flush()
            if over:
                done = step + 1
                break
    model.eval()
    model.cfg = replace(model.cfg, name=f"{model.cfg.name}-sttf")
    sttf_gate = {s: {"tau": gate.tau(s), "log_tau": float(gate.log_tau[s].detach()), "init_tau": init[s],
                     "rho": cfg.rho, "temperature": cfg.temperature, "keyframe_every": cfg.keyframe_every,
                     "scene_cut": cfg.scene_cut}
                 for s in gate.log_tau}
    info = {"stage": 2, "steps": done, "stopped_early": done < cfg.steps, "base": str(base_ckpt),
            "base_steps": base_info.get("steps"), "recon_heads": heads is not None,
            "train_config": _jsonable(asdict(cfg)), "sttf_gate": sttf_gate, "last_eval": record}
    save_checkpoint(model, out, info)
    return record
