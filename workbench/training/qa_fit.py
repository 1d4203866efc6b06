"""Stage 1, phase d: a short QA fine-tune of the language side on the frozen encoder (after phase c).

Why (measured 2026-12-03, shipped phase-c weights, 60 ShapesWorld test clips, 402 questions, dense, exact
match): accuracy 0.47 overall — background 1.00, object colour 0.70, count 0.47, motion 0.44, shape 0.15,
"what is moving" 0.05. The wrong answers were the training prior ("one", "circle", "it stays still", "the
<colour> circle") whatever the clip showed: phase c trained questions on only 20 % of its batches. A pruning
study on such answers would measure the prior, not what the pruned tokens carry, so the language side gets a
QA-heavy fine-tune first (the encoder, and everything that reads encoder tokens, stays exactly as it was).

Recipe: phase c's machinery (`decoder_fit.fit_decoder`: projector, position embeddings, sink and decoder
trained; encoder frozen in eval mode), with questions on `qa_prob` of the ShapesWorld samples (captions on the
rest, so caption quality is kept), fresh train seeds (`data_offset` steps into stage 1's seed streams, past
phase c's), and a validation batch of questions beside the caption batches (teacher-forced answer loss).

    >>> cfg = QAFitConfig()
    >>> cfg.qa_prob, cfg.fit.steps > 0
    (0.7, True)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from workbench.training.augment import AugmentConfig
from workbench.training.decoder_fit import DecoderFitConfig, fit_decoder


@dataclass(frozen=True)
class QAFitConfig:
    qa_prob: float = 0.7
    fit: DecoderFitConfig = field(default_factory=lambda: DecoderFitConfig(
        steps=1000, lr=3e-4, min_lr_ratio=0.1, warmup=30, data_offset=400_000, eval_every=250,
        augment=AugmentConfig(p_dense=0.0, p_fuse=0.75, p_drop=0.25, tau_log_range=(math.log(0.03), math.log(0.3)),
                              keep_range=(0.05, 0.3))))


def qa_val_batch(stage1, model, n: int | None = None):
    """Fixed validation questions (one per val clip, teacher-forced answer loss): `evaluate_stage1` reads it."""
    from workbench.data import shapesworld
    from workbench.training.batches import make_batch
    rng = np.random.default_rng([stage1.seed, 10**9 + 1])
    clips = [shapesworld.make_clip(s) for s in shapesworld.split_seeds("val", n or stage1.eval_clips)]
    return make_batch(clips, model.tokenizer, rng, model.cfg.caption_prompt, qa_prob=1.0)


def fit_qa(model, cfg: QAFitConfig, stage1, val: dict | None = None, progress: bool = True, log=None,
           workers: int = 0) -> dict:
    """Fine-tune `model`'s language side in place on QA-heavy batches; returns the fit record (phase c's format)."""
    val = dict(val or {})
    if val:
        val["shapes_qa"] = qa_val_batch(stage1, model).to(model.device)
    rec = fit_decoder(model, cfg.fit, replace(stage1, qa_prob=cfg.qa_prob), None, val, progress, log, workers,
                      kind="qa_fit")
    return {**rec, "qa_prob": cfg.qa_prob}
