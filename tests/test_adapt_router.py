"""The domain router (adapt/router.py): its features tell the shifted domains from the source on held-out clips,
a clip it keeps on the pocket is captioned bit for bit as by the pocket model, and a downlink's router part is
checked like the rest of the update (nothing applied when it does not fit)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.adapt import dwc, wire
from workbench.adapt.akd import AKDConfig
from workbench.adapt.device import Device, DeviceConfig, DownlinkRejected
from workbench.adapt.router import NUM_FEATURES, ROUTER_NAMES, DomainRouter, fit_router, router_accuracy, token_features
from workbench.adapt.tokens import tokens_from_clip
from workbench.adapt.uts import UTSConfig
from workbench.data.shifts import domain_seeds, shifted_clip
from workbench.methods import ucop

pytestmark = pytest.mark.usefixtures("one_torch_thread")
AKD = AKDConfig(steps=2, batch=2, rank=2)
CODEC = dwc.CodecConfig("topk", density=0.2, bits=4)


def features(domain: str, role: str, n: int) -> torch.Tensor:
    return torch.stack([token_features(tokens_from_clip(shifted_clip(domain, s), 0.16))
                        for s in domain_seeds(domain, role, n)])


def test_features_are_deterministic_and_finite():
    ts = tokens_from_clip(shifted_clip("haze", 5), 0.16)
    a, b = token_features(ts), token_features(ts)
    assert a.shape == (NUM_FEATURES,) and torch.equal(a, b) and bool(torch.isfinite(a).all())
    assert torch.equal(token_features(ts.select(torch.zeros(ts.num_tokens, dtype=torch.bool))), torch.zeros(NUM_FEATURES))


@pytest.mark.parametrize("domain", ["night", "haze"])
def test_router_fitted_on_one_round_of_uploads_separates_held_out_clips(domain):
    """12 uploads (stream seeds) against 48 cloud source clips (teacher seeds); scored on the disjoint held-out
    eval seeds of both domains."""
    values = fit_router(features(domain, "stream", 12), features("source", "teacher", 48))
    acc = router_accuracy(values, features(domain, "eval", 24), features("source", "eval", 24))
    assert acc["target_routed"] >= 0.9 and acc["source_kept"] >= 0.9, acc
    assert set(values) == set(ROUTER_NAMES)


def test_fit_is_deterministic_and_refuses_one_class():
    pos, neg = torch.randn(5, NUM_FEATURES) + 1, torch.randn(7, NUM_FEATURES)
    a, b = fit_router(pos, neg), fit_router(pos, neg)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError):
        fit_router(pos[:0], neg)


def test_the_initial_router_sends_every_clip_to_the_adapted_weights():
    r = DomainRouter()
    for dom in ("source", "night"):
        assert float(r(token_features(tokens_from_clip(shifted_clip(dom, 1), 0.16)))) > 0


def _device(files, tmp_path, name="r") -> Device:
    return Device(files[0], tmp_path, DeviceConfig(device_id=name, adapter_rank=2, uts=UTSConfig(passes=3)))


@torch.no_grad()
def test_a_clip_kept_on_the_pocket_is_captioned_bit_for_bit_as_the_pocket(tiny_adapt_files, tmp_path):
    dev = _device(tiny_adapt_files, tmp_path)
    for n, p in dev.model.named_parameters():  # the adapted weights now differ from the pocket's
        if n.endswith("lora_B"):
            p.copy_(torch.randn_like(p) * 0.5)
    clip = shifted_clip("source", 3)
    frames = torch.from_numpy(np.ascontiguousarray(clip.frames))[None]
    pocket = ucop.load_pocket(tiny_adapt_files[0]).model().eval()

    def logits(m):
        vt, _ = m.compression.visual_tokens(m, frames, clip.modality, clip)
        ids = torch.tensor([m.tokenizer.prompt_ids(m.cfg.caption_prompt)])
        return m(vt, ids)[0]

    assert dev.routes_to_adapted(clip) and not torch.equal(logits(dev.model_for(clip)), logits(pocket))
    dev.model.domain_router.weight[0] = 1e-6  # a fitted router that keeps every clip on the pocket
    dev.model.domain_router.bias[0] = -30.0
    assert not dev.routes_to_adapted(clip)
    assert torch.equal(logits(dev.model_for(clip)), logits(pocket))
    caps, share = dev.captions([clip])
    assert share == 0.0 and caps[clip.sample_id] == pocket.generate(
        pocket.compression.visual_tokens(pocket, frames, clip.modality, clip)[0]).texts[0]


def test_a_router_part_that_does_not_fit_is_rejected_whole(tiny_adapt_files, tmp_path):
    dev = _device(tiny_adapt_files, tmp_path, "rp")
    names = dev.agree(AKD, CODEC)
    params = dict(dev.model.named_parameters())
    blobs, layout = dwc.encode_delta({n: torch.full_like(params[n], 0.01) for n in names}, CODEC, names)
    good = torch.cat([torch.full((params[n].numel(),), 0.5) for n in ROUTER_NAMES])
    before = {k: v.clone() for k, v in dev.weights().items()}
    for part, flag in ((None, True), (good[:-1], True), (good.double(), True), (good, False)):
        b = dict(blobs) if part is None else {**blobs, dwc.ROUTER_PART: part}
        meta = {"round": 0, "codec": CODEC.name, "layout": layout, "base_hash": dev.hash, "router": flag,
                "new_hash": "x"}
        with pytest.raises(DownlinkRejected):
            dev.apply_downlink(wire.encode("delta", b, meta))
        assert all(torch.equal(before[k], v) for k, v in dev.weights().items())
    new = dwc.apply_update({**blobs, dwc.ROUTER_PART: good}, {"layout": layout, "router": True}, names,
                           {n: p.detach() for n, p in params.items()})
    meta = {"round": 0, "codec": CODEC.name, "layout": layout, "base_hash": dev.hash, "router": True,
            "new_hash": wire.state_hash({**dev.weights(), **new})}
    info = dev.apply_downlink(wire.encode("delta", {**blobs, dwc.ROUTER_PART: good}, meta))
    assert info["router"] and torch.equal(dev.model.domain_router.weight, torch.full((NUM_FEATURES,), 0.5))
