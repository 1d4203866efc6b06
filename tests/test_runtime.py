"""Training runtime: ordered parallel batch building and device placement."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from workbench.data import shapesworld
from workbench.models.tokenizer import WordTokenizer
from workbench.training.batches import make_batch
from workbench.training.runtime import on_device, ordered_map


def _square_after_work(x: int) -> int:
    np.linalg.svd(np.random.default_rng(x).random((60, 60)))  # uneven work so workers finish out of order
    return x * x


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_ordered_map_keeps_order(workers):
    items = list(range(11, 0, -1))
    assert list(ordered_map(_square_after_work, items, workers)) == [x * x for x in items]


def test_ordered_map_of_nothing_is_empty():
    assert list(ordered_map(_square_after_work, [], workers=2)) == []


def test_on_device_sets_the_default_device_only_inside():
    with on_device("cpu") as dev:
        assert dev == torch.device("cpu") and torch.zeros(1).device == dev
    assert torch.zeros(1).device == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_on_device_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="cuda"):
        with on_device("cuda"):
            pass


def test_batch_to_moves_every_tensor_and_keeps_values():
    clips = [shapesworld.make_clip(s, num_frames=2) for s in shapesworld.split_seeds("val", 2)]
    words = sorted({w for c in clips for cap in c.captions for w in cap.split()} | {"describe", "the", "clip"})
    b = make_batch(clips, WordTokenizer(words), np.random.default_rng(0), "describe the clip", qa_prob=0.0)
    moved = b.to("cpu")
    assert torch.equal(moved.frames, b.frames) and torch.equal(moved.text_ids, b.text_ids)
    assert torch.equal(moved.loss_mask, b.loss_mask) and torch.equal(moved.concepts, b.concepts)
    assert moved.modality == b.modality and moved.labels is None


def test_batch_building_in_a_worker_equals_in_process():
    from workbench.training.stage1 import Stage1Config, batch_for_step, text_side
    from workbench.models.tinyvlm import TinyVLM
    from workbench.models.config import TinyVLMConfig
    from workbench.training.stage1 import model_config
    cfg = Stage1Config(batch_size=2, text_warmup_steps=0, model=TinyVLMConfig(enc_dim=16, dec_dim=16, enc_depth=1,
                                                                              dec_depth=1, enc_heads=2, dec_heads=2))
    side = text_side(TinyVLM(model_config(cfg)))
    fn = partial(batch_for_step, cfg, side)
    here = list(ordered_map(fn, [0, 3]))
    there = list(ordered_map(fn, [0, 3], workers=2))
    for a, b in zip(here, there):
        assert torch.equal(a.frames, b.frames) and torch.equal(a.text_ids, b.text_ids) and a.modality == b.modality
