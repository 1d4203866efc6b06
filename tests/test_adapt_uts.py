"""UTS: the sequence gate, MC dropout inside the model (not a magnitude ranking), tokens really absent."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.adapt import wire
from workbench.adapt.akd import caption_batch
from workbench.adapt.tokens import encode_tokens, tokens_from_clip
from workbench.adapt.uts import (UTSConfig, keep_mask, magnitude_uncertainty, mc_variance_from,
                                 sequence_confidence, token_uncertainty)
from workbench.data.shapesworld import make_clip
from workbench.models.registry import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return create_model("tinyvlm-debug")


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().float(), b.argsort().argsort().float()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def test_equal_norm_tokens_are_ranked_by_uncertainty_not_magnitude(model):
    enc = model.encoder
    torch.manual_seed(0)
    x = torch.randn(1, 196, enc.norm.normalized_shape[0])
    x = x / x.norm(dim=-1, keepdim=True) * 5.0  # every token has the same norm
    cfg = UTSConfig(passes=100, p=0.2, layers=(-1,))
    first = len(enc.blocks) - 1
    ours = mc_variance_from(enc, x, first, cfg, gen=torch.Generator().manual_seed(1))[0]
    again = mc_variance_from(enc, x, first, cfg, gen=torch.Generator().manual_seed(2))[0]
    assert float(ours.max() / ours.min()) > 2.0  # equal norms, clearly different uncertainty
    assert _spearman(ours, again) > 0.9  # and it is a property of the token, not of the draw
    released = magnitude_uncertainty(x[0], UTSConfig(passes=2000, p=0.2))  # dropout on the fixed features
    assert float(released.max() / released.min()) < 1.35  # flat: it cannot tell these tokens apart
    assert abs(_spearman(released, ours)) < 0.5
    # on tokens of different norms the released score is simply a magnitude ranking
    scaled = x[0] * torch.linspace(0.5, 2.0, 196)[:, None]
    assert _spearman(magnitude_uncertainty(scaled, UTSConfig(passes=400, p=0.2)), scaled.norm(dim=-1)) > 0.95


def test_the_dropped_tokens_are_the_most_uncertain_and_absent_from_the_payload(model):
    clip = make_clip(4)
    ts = tokens_from_clip(clip, 0.1)
    cfg = UTSConfig(passes=6, drop=0.25)
    unc = token_uncertainty(model, clip, ts, cfg)
    assert torch.equal(unc, token_uncertainty(model, clip, ts, cfg))  # seeded: deterministic
    keep = keep_mask(unc, cfg.drop)
    assert int((~keep).sum()) == round(0.25 * ts.num_tokens)
    assert float(unc[~keep].min()) >= float(unc[keep].max())
    full = wire.sample_payload(ts, {"confidence": 0.1})
    part = wire.sample_payload(ts.select(keep), {"confidence": 0.1})
    sent = wire.parse_sample(part)
    assert sent.num_tokens == int(keep.sum())
    got = set(zip(sent.t_start.tolist(), sent.patch.tolist()))
    dropped = set(zip(ts.t_start[~keep].tolist(), ts.patch[~keep].tolist()))
    assert not got & dropped  # not sent means not in the payload
    per_token = ts.pixels.shape[1] + 3  # uint8 pixels + patch + t_start + t_end
    assert len(full) - len(part) >= int((~keep).sum()) * per_token - 200  # the header shrinks a little too
    frames, present = sent.frames()
    for t, p in dropped:  # an absent patch is zero in the rebuilt frame and masked from attention
        if not present[t, p]:
            assert float(frames[t].reshape(3, 14, 8, 14, 8)[:, p // 14, :, p % 14, :].abs().sum()) == 0


def test_sequence_confidence_is_the_product_of_the_greedy_max_probabilities(model):
    clip = make_clip(2)
    vt = encode_tokens(model, tokens_from_clip(clip, 0.1))
    gen = model.generate(vt, max_new_tokens=8)
    ids, targets, mask = caption_batch(model.tokenizer, model.cfg.caption_prompt, [gen.ids[0]])
    with torch.no_grad():
        logits, _ = model(vt, ids)
    assert logits[mask].argmax(-1).tolist() == gen.ids[0]  # teacher forcing reproduces the greedy decode
    probs = logits[mask].softmax(-1).amax(-1)
    assert sequence_confidence(model, vt, gen.ids[0]) == pytest.approx(float(probs.prod()), rel=1e-4)


def test_gate_uploads_only_uncertain_samples(tmp_path, model):
    from workbench.adapt.device import Device, DeviceConfig
    from workbench.methods import ucop
    path = tmp_path / "p.safetensors"
    ucop.save_pocket(ucop.compress(model, ucop.UCOPConfig(bits=8, rho=0.1)), path)
    never = Device(path, tmp_path / "a", DeviceConfig(adapter_rank=2, uts=UTSConfig(threshold=0.0, passes=3)))
    obs = never.observe(make_clip(1), 0)
    assert not obs.uploaded and len(never.queue) == 0 and obs.payload_bytes == 0
    always = Device(path, tmp_path / "b", DeviceConfig(adapter_rank=2, uts=UTSConfig(threshold=1.01, passes=3)))
    obs = always.observe(make_clip(1), 0)
    assert obs.uploaded and len(always.queue) == 1 and obs.confidence < 1.01
    assert obs.payload_bytes == always.queue.total_bytes()


def test_bad_uts_configs():
    for bad in ({"drop": 1.0}, {"ranking": "norm"}, {"passes": 1}, {"p": 0.0}):
        with pytest.raises(ValueError):
            UTSConfig(**bad)
    assert keep_mask(torch.ones(3), 0.99).sum() == 1  # never an empty sample
    assert np.isclose(float(magnitude_uncertainty(torch.ones(2, 4), UTSConfig(passes=3)).shape[0]), 2)
