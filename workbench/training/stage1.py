"""Stage 1: compression-aware pre-training of the reference TinyVLM (`workbench train`).

Data is generated on the fly from disjoint train seed ranges (ShapesWorld captions + QA; synthetic DVS gestures
with captions and the gesture head), so the model never sees a test or val clip. Every step's randomness is a
pure function of (seed, step): a resumed run continues exactly where it stopped.

    train_stage1(Stage1Config(steps=3000), "data/weights/tinyvlm-shapes.safetensors")
"""
from __future__ import annotations

import json
import math
import time
from functools import partial
from types import SimpleNamespace
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from workbench.data import gestures, shapesworld
from workbench.models.config import TinyVLMConfig
from workbench.models.encoder import patchify
from workbench.models.pooling import AttentionPool
from workbench.errors import CheckpointError
from workbench.models.io import load_checkpoint, read_metadata, save_checkpoint
from workbench.models.tinyvlm import TinyVLM
from workbench.models.visual_tokens import VisualTokens
from workbench.training.augment import AugmentConfig, training_tokens
from workbench.training.batches import Batch, make_batch
from workbench.training.decoder_fit import DecoderFitConfig, fit_decoder
from workbench.training.qa_fit import QAFitConfig, fit_qa
from workbench.training.gesture_fit import GestureFitConfig, fit_gesture_head
from workbench.training.runtime import on_device, ordered_map
from workbench.training.vocab import build_vocabulary


@dataclass(frozen=True)
class Stage1Config:
    steps: int = 3000  # the learning-rate schedule's length
    # the main loop ends here (None = at `steps`), after a linear learning-rate cooldown over its last
    # `cooldown` steps: the shipped run stopped early to fit this machine's time budget
    stop_after: int | None = 1800
    cooldown: int = 300
    batch_size: int = 8
    lr: float = 1.5e-3
    min_lr_ratio: float = 0.05
    warmup: int = 150
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    gesture_every: int = 4  # every n-th step trains on a gesture (event) batch
    recon_weight: float = 1.0  # patch-reconstruction auxiliary loss (PretrainHeads)
    text_warmup_steps: int = 300  # first steps: text-only LM (establishes the attention sink before vision)
    curriculum_steps: int = 600  # then strongly compressed token sets (see augment_for_step)
    qa_prob: float = 0.2
    eval_every: int = 150
    eval_clips: int = 44
    seed: int = 0
    threads: int = 2
    device: str = "cpu"  # "cuda" trains on a GPU (same recipe; the numbers differ from a CPU run)
    workers: int = 0  # processes building batches ahead (0: in the training process)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    gesture_fit: GestureFitConfig = field(default_factory=GestureFitConfig)  # phase b, after the main loop
    decoder_fit: DecoderFitConfig = field(default_factory=DecoderFitConfig)  # phase c: language side, frozen encoder
    qa_fit: QAFitConfig = field(default_factory=QAFitConfig)  # phase d: QA-heavy fine-tune of the language side
    model: TinyVLMConfig = field(default_factory=TinyVLMConfig)


def model_config(cfg: Stage1Config) -> TinyVLMConfig:
    return replace(cfg.model, vocab=build_vocabulary(), gesture_classes=tuple(gestures.GESTURE_CLASSES),
                   caption_prompt=shapesworld.CAPTION_PROMPT, gesture_prompt=shapesworld.CAPTION_PROMPT,
                   name="tinyvlm-shapes")


def augment_for_step(cfg: Stage1Config, step: int) -> tuple[str, float]:
    """Compression mode of a step. For the first `curriculum_steps` vision steps the token sets are strongly
    compressed (few tokens → each object is a larger share of the decoder's visual attention)."""
    rng = np.random.default_rng([cfg.seed, step, 2])
    if step - cfg.text_warmup_steps < cfg.curriculum_steps:
        return replace(cfg.augment, p_dense=0.0, tau_log_range=(np.log(0.06), np.log(0.3)),
                       keep_range=(0.04, 0.15)).sample(rng)
    return cfg.augment.sample(rng)


def lr_at(cfg: Stage1Config, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    prog = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    lr = cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(prog, 1.0))))
    if cfg.stop_after is not None and cfg.stop_after < cfg.steps and step >= cfg.stop_after - cfg.cooldown:
        floor = cfg.lr * cfg.min_lr_ratio  # linear cooldown from the cosine value to the floor at stop_after
        lr = floor + (lr - floor) * max(0.0, (cfg.stop_after - step) / max(1, cfg.cooldown))
    return lr


def text_batch_for_step(cfg: Stage1Config, model: TinyVLM, step: int) -> Batch:
    """Captions and QA of ShapesWorld scenes without rendering (text-only warm-up); frames are empty."""
    from workbench.data.clip import Clip
    rng = np.random.default_rng([cfg.seed, step, 1])
    first = step * cfg.batch_size
    clips = []
    for s in shapesworld.SPLITS["train"][first: first + cfg.batch_size]:
        scene = shapesworld.sample_scene(s)
        clips.append(Clip(np.zeros((0, 3, 1, 1), np.float32), "rgb", f"text-{s}",
                          captions=shapesworld.captions(scene), qa=shapesworld.question_answers(scene)))
    return make_batch(clips, model.tokenizer, rng, model.cfg.caption_prompt, cfg.qa_prob)


def batch_for_step(cfg: Stage1Config, model: TinyVLM, step: int) -> Batch:
    if step < cfg.text_warmup_steps:
        return text_batch_for_step(cfg, model, step)
    rng = np.random.default_rng([cfg.seed, step, 1])
    first = step * cfg.batch_size
    if step % cfg.gesture_every == cfg.gesture_every - 1:
        seeds = gestures.GESTURE_SPLITS["train"][first: first + cfg.batch_size]
        clips = [gestures.make_gesture_clip(s) for s in seeds]
    else:
        seeds = shapesworld.SPLITS["train"][first: first + cfg.batch_size]
        clips = [shapesworld.make_clip(s) for s in seeds]
    return make_batch(clips, model.tokenizer, rng, model.cfg.caption_prompt, cfg.qa_prob)


class PretrainHeads(torch.nn.Module):
    """Training-only heads (not part of the shipped model).

    recon: each patch's pixels from its encoder token — a direct per-token gradient keeps every visual token
    informative (without it the encoder collapsed to constant outputs in this project's first run).
    concepts: the scene's attributes (colours, shapes, sizes, textures, motions, background, count) by
    attention pooling over the decoder-space visual tokens — shapes those tokens so that attention can pick
    out objects before the decoder has learned to; without it the decoder's attention stayed uniform.
    """

    def __init__(self, cfg: TinyVLMConfig):
        super().__init__()
        p2 = cfg.patch_size ** 2
        self.recon = torch.nn.ModuleDict({"rgb": torch.nn.Linear(cfg.enc_dim, 3 * p2),
                                          "events": torch.nn.Linear(cfg.enc_dim, 2 * p2)})
        # scene concepts read from the decoder-space visual tokens, like the gesture head
        self.concepts = AttentionPool(cfg.dec_dim, cfg.dec_heads, queries=8, out_dim=len(shapesworld.CONCEPTS))

    def recon_loss(self, enc: torch.Tensor, frames: torch.Tensor, modality: str, patch: int) -> torch.Tensor:
        """MSE between predicted and true patch pixels; enc (F, N, D), frames (F, C, H, W)."""
        return F.mse_loss(self.recon[modality](enc), patchify(frames, patch))


def losses(model: TinyVLM, batch: Batch, mode: str, knob: float, gen: torch.Generator | None = None,
           heads: PretrainHeads | None = None, recon_weight: float = 1.0) -> dict:
    """LM loss on answer tokens (+ gesture CE, + patch reconstruction) for one batch under one compression mode."""
    if batch.frames.shape[1] == 0:  # text-only warm-up
        vt = VisualTokens.empty(len(batch.text_ids), model.cfg.enc_dim)
        logits, _ = model(vt, batch.text_ids)
        sel = batch.loss_mask
        lm = F.cross_entropy(logits[sel], batch.targets[sel])
        return {"lm": lm, "loss": lm, "tokens": 0.0, "recon": lm.new_zeros(()),
                "correct": (logits[sel].argmax(-1) == batch.targets[sel]).float().mean()}
    vt, enc, frames = training_tokens(lambda f: model.encoder(f, batch.modality), batch.frames, mode, tau=knob,
                                      keep=knob, patch=model.cfg.patch_size, generator=gen)
    visual = model.visual_embeds(vt)
    logits, hidden = model(vt, batch.text_ids, visual)
    sel = batch.loss_mask
    lm = F.cross_entropy(logits[sel], batch.targets[sel])
    out = {"lm": lm, "tokens": float(vt.counts().float().mean()), "correct": (logits[sel].argmax(-1) == batch.targets[sel]).float().mean()}
    if batch.labels is not None:
        g = model.gesture_logits(vt, visual)
        out["gesture"] = F.cross_entropy(g, batch.labels)
        out["gesture_acc"] = (g.argmax(-1) == batch.labels).float().mean()
    out["loss"] = lm + out.get("gesture", 0.0)
    if heads is not None:  # recon_weight 0 (phase c, frozen encoder): the reconstruction is not computed at all
        out["recon"] = (heads.recon_loss(enc, frames, batch.modality, model.cfg.patch_size) if recon_weight
                        else lm.new_zeros(()))
        out["loss"] = out["loss"] + recon_weight * out["recon"]
        if batch.concepts is not None:
            c = heads.concepts(visual, vt.attn_key_bias())
            out["concept"] = F.binary_cross_entropy_with_logits(c, batch.concepts)
            out["loss"] = out["loss"] + out["concept"]
    return out


@torch.no_grad()
def evaluate_stage1(model: TinyVLM, cfg: Stage1Config, val: dict[str, Batch]) -> dict:
    """Teacher-forced token accuracy / loss on fixed val batches, dense and fused (τ = 0.05)."""
    model.eval()
    res = {}
    for name, batch in val.items():
        for mode in ("dense", "fuse"):
            out = losses(model, batch, mode, 0.05)
            res[f"{name}_{mode}_loss"] = float(out["lm"])
            res[f"{name}_{mode}_token_acc"] = float(out["correct"])
            res[f"{name}_{mode}_tokens"] = out["tokens"]
            if "gesture_acc" in out:
                res[f"{name}_{mode}_gesture_acc"] = float(out["gesture_acc"])
        # vision check: each clip's text against another clip's frames; ≈ the dense loss means vision is ignored
        swapped = replace(batch, frames=batch.frames.roll(1, 0))
        res[f"{name}_mismatched_loss"] = float(losses(model, swapped, "dense", 0.0)["lm"])
    model.train()
    return res


def text_side(model: TinyVLM) -> SimpleNamespace:
    """What batch building needs of the model (tokenizer, config): small and picklable, for worker processes."""
    return SimpleNamespace(tokenizer=model.tokenizer, cfg=model.cfg)


def _val_batches(cfg: Stage1Config, model: TinyVLM) -> dict[str, Batch]:
    rng = np.random.default_rng([cfg.seed, 10**9])
    shapes = [shapesworld.make_clip(s) for s in shapesworld.split_seeds("val", cfg.eval_clips)]
    gest = [gestures.make_gesture_clip(s) for s in gestures.gesture_split_seeds("val", cfg.eval_clips)]
    return {"shapes": make_batch(shapes, model.tokenizer, rng, model.cfg.caption_prompt, qa_prob=0.0),
            "gestures": make_batch(gest, model.tokenizer, rng, model.cfg.caption_prompt, qa_prob=0.0)}


def _param_groups(modules: list[torch.nn.Module], wd: float):
    named = [(n, p) for m in modules for n, p in m.named_parameters()]
    decay = [p for n, p in named if p.ndim == 2 and "embed" not in n and "pos" not in n]
    ids = {id(p) for p in decay}
    rest = [p for _, p in named if id(p) not in ids]
    return [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]


def _save_optimizer(opt: torch.optim.Optimizer, path: Path, step: int) -> None:
    sd = opt.state_dict()
    tensors = {f"{i}.{k}": v.contiguous().cpu() for i, st in sd["state"].items() for k, v in st.items()}
    meta = {"step": str(step), "param_groups": json.dumps(sd["param_groups"])}
    save_file(tensors, str(path), metadata=meta)


def _load_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})


def train_stage1(cfg: Stage1Config, out: str | Path, resume: bool = True, progress: bool = True) -> dict:
    """Train (or resume) and write the checkpoint `out`, its optimizer state `out`.optim, and a JSONL log.

    Returns the final evaluation record. The log (`out` with suffix .log.jsonl) holds one record per
    `eval_every` steps ("epochs") and the train loss every 10 steps.
    """
    with on_device(cfg.device) as dev:
        return _train_stage1(cfg, Path(out), resume, progress, dev)


def _train_stage1(cfg: Stage1Config, out: Path, resume: bool, progress: bool, dev: torch.device) -> dict:
    optim_path, log_path = out.with_suffix(".optim.safetensors"), out.with_suffix(".log.jsonl")
    heads_path = out.with_suffix(".heads.safetensors")
    # the main loop's own model, saved with its optimizer state (local, not shipped): phase c later fine-tunes
    # the language side of `out`, so a resumed main loop must start from this copy
    trunk_path = out.with_suffix(".main.safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    start = 0
    end = cfg.steps if cfg.stop_after is None else min(cfg.steps, cfg.stop_after)
    done = resume and out.is_file() and read_metadata(out).get("steps", 0) >= end
    if done:  # main loop finished: only phase b (the gesture head fit) may be left
        model = _load_trunk(out).to(dev)
        start = end
    elif resume and out.is_file() and optim_path.is_file() and heads_path.is_file():
        if "decoder_fit" in read_metadata(out) and not trunk_path.is_file():
            raise CheckpointError(f"{out}: cannot resume the main loop: phase c has fine-tuned this checkpoint's "
                                  f"language side and the main loop's own copy ({trunk_path.name}) is missing")
        model = load_checkpoint(trunk_path if trunk_path.is_file() else out).to(dev).train()
        heads, main_head = _read_heads(heads_path, model, dev)
        if main_head:  # the head as the main loop left it (phase b may have refit the checkpoint's head)
            model.gesture_head.load_state_dict(main_head)
        opt = torch.optim.AdamW(_param_groups([model, heads], cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98))
        _load_optimizer(opt, optim_path)
        from safetensors import safe_open
        with safe_open(str(optim_path), framework="pt") as f:
            start = int(f.metadata()["step"])
    elif resume and out.is_file():
        raise CheckpointError(f"{out}: cannot resume to step {end}: its optimizer state ({optim_path.name}) or "
                              f"pre-training heads ({heads_path.name}) are missing (the optimizer state is not "
                              "shipped); retrain from scratch with --fresh, or write elsewhere with --out")
    else:
        model = TinyVLM(model_config(cfg)).to(dev).train()
        heads = PretrainHeads(model.cfg).to(dev)
        opt = torch.optim.AdamW(_param_groups([model, heads], cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98))
        log_path.unlink(missing_ok=True)
    t_start = time.perf_counter()
    record: dict = {}
    val = {k: b.to(dev) for k, b in _val_batches(cfg, model).items()} if start < end else {}
    batches = ordered_map(partial(batch_for_step, cfg, text_side(model)), range(start, end), cfg.workers)
    with open(log_path, "a") as log, tqdm(total=end, initial=start, disable=not progress,
                                          desc="stage 1", unit="step") as bar:
        for step, batch in zip(range(start, end), batches):
            batch = batch.to(dev)
            mode, knob = augment_for_step(cfg, step)
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step)
            out_step = losses(model, batch, mode, knob, torch.Generator("cpu").manual_seed(cfg.seed * 7919 + step), heads,
                              cfg.recon_weight)
            opt.zero_grad(set_to_none=True)
            out_step["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            bar.update(1)
            bar.set_postfix(loss=f"{out_step['loss'].item():.3f}", mode=mode, tok=int(out_step["tokens"]))
            if step % 10 == 0:
                log.write(json.dumps({"kind": "train", "step": step, "loss": out_step["loss"].item(),
                                      "lm": out_step["lm"].item(), "recon": out_step["recon"].item(),
                                      "mode": mode, "knob": knob,
                                      "tokens": out_step["tokens"], "modality": batch.modality,
                                      "lr": lr_at(cfg, step)}) + "\n")
            last = step + 1 == end
            if (step + 1) % cfg.eval_every == 0 or last:
                record = {"kind": "eval", "step": step + 1, "epoch": (step + 1) // cfg.eval_every,
                          "elapsed_s": time.perf_counter() - t_start, **evaluate_stage1(model, cfg, val)}
                log.write(json.dumps(record) + "\n")
                log.flush()
                info = {"stage": 1, "steps": step + 1, "train_config": _jsonable(asdict(cfg)), "last_eval": record}
                save_checkpoint(model, out, info)
                save_checkpoint(model, trunk_path, info)
                aux = {k: v.contiguous().cpu() for k, v in heads.state_dict().items()}
                aux |= {f"main_gesture_head.{k}": v.contiguous().cpu() for k, v in model.gesture_head.state_dict().items()}
                save_file(aux, str(heads_path))
                _save_optimizer(opt, optim_path, step + 1)
        info = read_metadata(out)

        def write(rec):
            log.write(json.dumps(_jsonable(rec)) + "\n")
            log.flush()
        if "gesture_fit" not in info:
            fit = fit_gesture_head(model, cfg.gesture_fit, progress, write, workers=cfg.workers)
            info = {k: v for k, v in info.items() if k != "config"} | {"gesture_fit": _jsonable(fit)}
            save_checkpoint(model, out, info)
            record = {**info.get("last_eval", {}), "gesture_fit": fit}
        if "decoder_fit" not in info:
            # phase c trains the concept head too when the training-only heads exist (else without that loss)
            heads = _read_heads(heads_path, model, dev)[0] if heads_path.is_file() else None
            val = {k: b.to(dev) for k, b in _val_batches(cfg, model).items()}
            fit = fit_decoder(model, cfg.decoder_fit, cfg, heads, val, progress, write, workers=cfg.workers)
            info = {k: v for k, v in info.items() if k != "config"} | {"decoder_fit": _jsonable(fit)}
            save_checkpoint(model, out, info)
            record = {**info.get("last_eval", {}), "gesture_fit": info.get("gesture_fit"), "decoder_fit": fit}
        if "qa_fit" not in info:
            val = {k: b.to(dev) for k, b in _val_batches(cfg, model).items()}
            fit = fit_qa(model, cfg.qa_fit, cfg, val, progress, write, workers=cfg.workers)
            info = {k: v for k, v in info.items() if k != "config"} | {"qa_fit": _jsonable(fit)}
            save_checkpoint(model, out, info)
            record = {**info.get("last_eval", {}), "gesture_fit": info.get("gesture_fit"),
                      "decoder_fit": info.get("decoder_fit"), "qa_fit": fit}
    return record


def _read_heads(path: Path, model: TinyVLM, dev: torch.device) -> tuple[PretrainHeads, dict]:
    """Stage 1's training-only heads from `path`, and the gesture head's state as the main loop left it (saved
    beside them as `main_gesture_head.*`; empty in files written before that copy existed)."""
    saved = load_file(str(path))
    heads = PretrainHeads(model.cfg).to(dev)
    heads.load_state_dict({k: v for k, v in saved.items() if not k.startswith("main_gesture_head.")})
    return heads, {k.split(".", 1)[1]: v for k, v in saved.items() if k.startswith("main_gesture_head.")}


def _load_trunk(path: Path) -> TinyVLM:
    """The model of a finished main loop. A gesture head of another architecture (the attention pool the
    shipped run's main loop used) is dropped: phase b re-initialises and fits the head anyway."""
    info = read_metadata(path)
    model = TinyVLM(TinyVLMConfig.from_json(json.dumps(info["config"])))
    state = load_file(str(path))
    own = model.state_dict()
    head = {k for k in state if k.startswith("gesture_head.")}
    if any(k not in own or own[k].shape != state[k].shape for k in head) or set(own) - set(state):
        state = {k: v for k, v in state.items() if k not in head}
        missing = model.load_state_dict(state, strict=False).missing_keys
        assert all(k.startswith("gesture_head.") for k in missing), missing
    else:
        model.load_state_dict(state)
    return model


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x
