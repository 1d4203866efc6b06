"""STTF inside unmodified Hugging Face vision towers (models/hf/tower.py): exact at τ = 0, real partial encoding.

Tiny random models of the three families are built here from configs (models/hf/tiny.py, as transformers' own
tests do); the reference is always the unmodified HF model: its tower on the processor's pixel values, its
own `get_image_features` / `get_video_features`, its own `generate` on pixel inputs.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.data.shapesworld import make_clip
from workbench.methods.sttf import STTF, STTFConfig
from workbench.models.hf.tiny import tiny_vlm
from workbench.pipeline import describe, model_frames

FAMILIES = ("llava", "qwen2vl", "onevision")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clip():
    return make_clip(3, 8)  # a ShapesWorld clip: moving shapes on a background


def _hf_features(m, frames):
    """The unmodified model's own LM-side visual features for tower frames (T', C', H', W')."""
    fam, mdl = m.family, m.hf.model
    px = fam.hf_inputs(frames)
    with torch.no_grad():
        if fam.name == "llava":
            return torch.cat(list(mdl.get_image_features(px["pixel_values"]).pooler_output))
        if fam.name == "qwen2vl":
            return torch.cat(mdl.get_video_features(px["pixel_values_videos"], px["video_grid_thw"]).pooler_output)
        return mdl.get_video_features(px["pixel_values_videos"]).pooler_output[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_tau_zero_is_the_unmodified_model_bit_for_bit(hf_tiny_models, clip, family):
    m = hf_tiny_models[family]
    frames = model_frames(m, clip)  # (1, T', C', H', W') at the tower's size
    r = STTF(STTFConfig(tau=0.0)).run(m, frames, "rgb")
    assert bool(r.mask.all())
    assert torch.equal(r.enc, m.encode(frames))  # = the dense baseline (all frames in one batch) …
    assert torch.equal(r.enc[0], m.family.dense(frames[0]))  # … = the unmodified HF tower (row-major patches)
    kw, block = m.lm_inputs(r.vt, "what is moving")
    feats = kw["mm_encoder_outputs"]
    ours = torch.cat(list(feats["image"].pooler_output)) if "image" in feats else \
        torch.cat(list(feats["video"].pooler_output)).reshape(-1, m.hf.config.text_config.hidden_size)
    assert torch.equal(ours, _hf_features(m, frames[0]))  # LM-side features = get_image/video_features
    g = m.generate(r.vt, "what is moving", max_new_tokens=6)
    kw.pop("mm_encoder_outputs")
    ref = m.hf.generate(**(kw | m.family.hf_inputs(frames[0])), max_new_tokens=6, do_sample=False)
    assert torch.equal(g.sequences, ref) and len(g.ids[0]) >= 4  # generated ids = the unmodified generate
    d0, d1 = describe(m, clip, STTF(STTFConfig(tau=0.0)), max_new_tokens=6), describe(m, clip, max_new_tokens=6)
    assert d0.caption == d1.caption and d0.tokens_per_frame == d1.tokens_per_frame


@pytest.mark.parametrize("family", ("llava", "onevision"))
def test_tower_frames_normalise_exactly_as_the_processor(hf_tiny_models, clip, family):
    m = hf_tiny_models[family]
    u8 = (clip.frames * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    ours = m.encoder.normalise(model_frames(m, clip)[0])
    theirs = m.family.parts.image_processor(list(u8), return_tensors="pt")["pixel_values"]
    assert torch.equal(ours, theirs)


def test_qwen2vl_video_layout_is_the_processors(hf_tiny_models, clip):
    """One temporal patch of two equal frames = the image processor's output for that image (it tiles an image
    over the temporal patch): same values, same merge-window patch order."""
    m = hf_tiny_models["qwen2vl"]
    u8 = (clip.frames[:1] * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    tf = m.family.tower_frames(np.concatenate([u8, u8]))  # (1, 6, H, W)
    ours = m.family.pixel_values_videos(tf)
    ref = m.family.parts.image_processor(u8[0], return_tensors="pt")
    assert torch.equal(ours, ref["pixel_values"]) and ref["image_grid_thw"][0].tolist() == [1, *m.encoder.grid]


@pytest.mark.parametrize("family", FAMILIES)
def test_partial_encoding_is_real_and_counted(hf_tiny_models, family):
    """A static scene with one patch-sized change: only the changed patches go through the tower, the others
    cost nothing (FlopCounterMode per frame), and the decoder gets fewer tokens (fusion)."""
    m = hf_tiny_models[family]
    n = m.cfg.num_patches
    base = np.full((3, 112, 112), 0.3, np.float32)
    frames = np.stack([base] * 6)
    frames[4:, :, :20, :20] = 0.9  # one corner changes at frame 4 (tower frame 2 for Qwen2-VL's pairs)
    tf = m.input_frames(frames)
    r = STTF(STTFConfig(tau=0.05)).run(m, tf, "rgb", count=True)
    computed, k = r.mask[0].sum(1), 4 // m.cfg.frames_per_step  # k: the tower frame where the corner changes
    assert int(computed[0]) == n and 0 < int(computed[k]) < n // 2 and int(computed[1]) == 0
    assert r.flops[1] < r.flops[0] / 50 and 0 < r.flops[k] < r.flops[0] / 2  # gate only / a few rows
    dense = STTF(STTFConfig(tau=0.0)).run(m, tf, "rgb", count=True)
    assert dense.flops.sum() > 2 * r.flops.sum()
    g, gd = m.generate(r.vt, max_new_tokens=4), m.generate(dense.vt, max_new_tokens=4)
    assert g.visual_tokens < gd.visual_tokens == m.family.n_visual(tf.shape[1])


@pytest.mark.parametrize("family", FAMILIES)
def test_recomputed_rows_match_the_hf_tower_with_one_layer(family):
    """With one tower layer the cached keys/values of unchanged patches are exactly the new frame's, so a
    recomputed row equals the HF tower's row (up to the linear stem vs the conv): checks the rows' positions
    (Qwen2-VL's 2-D RoPE through attn.indexed), CLIP's CLS order and the normalisation of embed_at."""
    m = tiny_vlm(family, vision_layers=2 if family == "llava" else 1)  # LLaVA reads layer −2: one layer runs
    assert len(m.encoder.blocks) == 1
    rng = np.random.default_rng(0)
    f0 = rng.random((3, 112, 112), dtype=np.float32)
    f1 = f0.copy()
    f1[:, 40:80, 60:100] = rng.random((3, 40, 40), dtype=np.float32)
    frames = np.stack([f0, f0, f1, f1]) if family == "qwen2vl" else np.stack([f0, f1])
    tf = m.input_frames(frames)
    r = STTF(STTFConfig(tau=1e-6, scene_cut=None)).run(m, tf, "rgb")
    rows = r.mask[0, -1]
    assert 0 < int(rows.sum()) < m.cfg.num_patches
    dense = m.encode(tf)[0, -1]
    torch.testing.assert_close(r.enc[0, -1][rows], dense[rows], atol=2e-5, rtol=1e-4)
    assert not torch.allclose(r.enc[0, -1][~rows], dense[~rows], atol=1e-3)  # reused rows: the cached frame



@pytest.mark.parametrize("family", FAMILIES)
def test_layer_major_schedules_are_refused_in_words_on_hf_towers(hf_tiny_models, clip, family):
    """The clip schedule and chunk > 1 are written for TinyVLM's encoder (no CLS token, no HF key order): an HF
    tower gets one clear error, never wrong numbers."""
    m = hf_tiny_models[family]
    frames = model_frames(m, clip)
    for cfg in (STTFConfig(tau=0.02, chunk=3), STTFConfig(tau=0.02, schedule="clip")):
        with pytest.raises(ValueError, match="TinyVLM's encoder only"):
            STTF(cfg).run(m, frames, "rgb")
