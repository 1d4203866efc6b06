"""DWC codecs (reconstruction error bounds, byte counts, zero deltas) and the wire format (round trips, every
kind of damage refused, nothing unpickled)."""
from __future__ import annotations

import pickle

import pytest
import torch

from workbench.adapt import dwc, wire
from workbench.adapt.tokens import tokens_from_clip
from workbench.data.shapesworld import make_clip
from workbench.errors import InputError
from workbench.methods.ops import quant

NAMES = ["a", "b", "c", "z"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def delta():
    g = torch.Generator().manual_seed(0)
    return {"a": torch.randn(64, 48, generator=g) * 1e-3, "b": torch.randn(100, generator=g) * 0.1,
            "c": torch.randn(70_000, generator=g) * 1e-2, "z": torch.zeros(33)}


def _bytes(blobs) -> int:
    return sum(t.numel() * t.element_size() for t in blobs.values())


def _roundtrip(delta, codec):
    blobs, layout = dwc.encode_delta(delta, codec, NAMES)
    data = wire.encode("delta", blobs, {"layout": layout})
    back, meta = wire.decode(data, "delta")
    return dwc.decode_delta(back, meta["layout"], NAMES, {k: tuple(v.shape) for k, v in delta.items()}), blobs


def test_codec_error_bounds(delta):
    n = {k: v.numel() for k, v in delta.items()}
    out, blobs = _roundtrip(delta, dwc.CodecConfig("fp32"))
    assert all(torch.equal(out[k], v) for k, v in delta.items()) and _bytes(blobs) == 4 * sum(n.values())
    out, blobs = _roundtrip(delta, dwc.CodecConfig("fp16"))
    for k, v in delta.items():
        assert torch.all((out[k] - v).abs() <= v.abs() * 2 ** -11 + 6e-8)
    assert _bytes(blobs) == 2 * sum(n.values())
    out, blobs = _roundtrip(delta, dwc.CodecConfig("nf4"))
    gap = float((quant.NF4_LEVELS[1:] - quant.NF4_LEVELS[:-1]).max()) / 2  # half the widest level gap
    for k, v in delta.items():
        flat = torch.cat([v.reshape(-1), v.new_zeros(-v.numel() % 64)]).view(-1, 64)
        bound = flat.abs().amax(1, keepdim=True) * (gap + 1e-3)  # + fp16 rounding of absmax
        err = torch.cat([(out[k] - v).reshape(-1), v.new_zeros(-v.numel() % 64)]).view(-1, 64).abs()
        assert torch.all(err <= bound)
    assert _bytes(blobs) == sum(-(-m // 64) * 34 for m in n.values())
    out, blobs = _roundtrip(delta, dwc.CodecConfig("sign1"))
    for k, v in delta.items():
        s = v.abs().mean()
        assert torch.allclose(out[k].abs(), s.expand_as(v)) and torch.all(torch.sign(out[k]) * torch.sign(v) >= 0)
    assert _bytes(blobs) == sum(-(-m // 8) + 4 for m in n.values())
    for density, bits in ((0.1, 4), (0.01, 8), (0.3, 16), (0.05, 2)):
        out, blobs = _roundtrip(delta, dwc.CodecConfig("topk", density, bits))
        for k, v in delta.items():
            kept = out[k] != 0
            flat, mflat = v.reshape(-1), kept.reshape(-1)
            if k == "z":
                assert not mflat.any()
                continue
            k_want = max(1, round(density * v.numel()))
            assert int(mflat.sum()) <= k_want  # (a value may quantise to exactly 0)
            if bits <= 8:
                step = flat.abs().max() / ((1 << (bits - 1)) - 1)
                assert torch.all((out[k] - v).reshape(-1)[mflat].abs() <= step / 2 + 1e-7)
            top = quant.magnitude_mask(flat, k_want / v.numel())
            assert torch.all(out[k].reshape(-1)[~top] == 0)  # everything outside the top-k is exactly 0
            assert float(flat[~top].abs().max()) <= float(flat[top].abs().min())


def test_topk_bytes_are_what_the_table_says(delta):
    blobs, layout = dwc.encode_delta(delta, dwc.CodecConfig("topk", 0.1, 4), NAMES)
    want = 0
    for k, v in delta.items():
        m = v.numel()
        kept = 0 if k == "z" else max(1, round(0.1 * m))
        index = 0 if kept == 0 else min(-(-m // 8), 2 * kept if m <= 65536 else 4 * kept)
        want += -(-kept * 4 // 8) + index + 4
    assert _bytes(blobs) == want
    index = {NAMES[i]: dwc._INDEX[x] for i, _, x, _ in layout["tensors"]}
    assert index == {"a": "mask", "b": "mask", "c": "mask", "z": "none"}  # the cheaper position code per tensor
    sparse = {NAMES[i]: dwc._INDEX[x] for i, _, x, _ in
              dwc.encode_delta(delta, dwc.CodecConfig("topk", 0.01, 4), NAMES)[1]["tensors"]}
    assert sparse["c"] == "u32" and sparse["a"] == "u16"  # 700 × 4 B < 8 750-B mask; 31 × 2 B < 384-B mask


def test_zero_delta_decodes_to_exact_zeros_under_every_codec():
    zero = {n: torch.zeros(40, 7) for n in NAMES}
    for name in ("fp32", "fp16", "nf4", "sign1", "topk"):
        out, _ = _roundtrip(zero, dwc.CodecConfig(name))
        assert all(torch.equal(v, torch.zeros(40, 7)) for v in out.values()), name


def test_delta_layout_inconsistencies_are_refused(delta):
    blobs, layout = dwc.encode_delta(delta, dwc.CodecConfig("topk", 0.1, 4), NAMES)
    shapes = {k: tuple(v.shape) for k, v in delta.items()}
    with pytest.raises(wire.WireError, match="other tensors"):
        dwc.decode_delta(blobs, layout, NAMES[:-1], shapes)
    short = {k: v[:-1] for k, v in blobs.items()}
    with pytest.raises(wire.WireError):
        dwc.decode_delta(short, layout, NAMES, shapes)
    extra = {**blobs, "v.float32": torch.zeros(3)}
    with pytest.raises(wire.WireError, match="accounts for"):
        dwc.decode_delta(extra, layout, NAMES, shapes)
    with pytest.raises(wire.WireError, match="bad layout"):
        dwc.decode_delta(blobs, {"codec": "topk"}, NAMES, shapes)
    with pytest.raises(ValueError):
        dwc.CodecConfig("zip")


def test_sample_payload_round_trip_and_damage():
    ts = tokens_from_clip(make_clip(3), 0.1)
    data = wire.sample_payload(ts, {"confidence": 0.25, "round": 1})
    back = wire.parse_sample(data)
    assert torch.equal(back.pixels, ts.pixels) and torch.equal(back.patch, ts.patch)
    assert torch.equal(back.t_start, ts.t_start) and torch.equal(back.t_end, ts.t_end)
    assert back.meta["confidence"] == 0.25 and back.sample_id == ts.sample_id
    frames, present = back.frames()
    assert present.all()  # every patch of every frame is covered by some run (nothing was dropped)
    assert torch.allclose(frames[0], torch.from_numpy(make_clip(3).frames[0]), atol=0.5 / 255 + 1e-6)  # uint8
    for i in (20, len(data) // 2, len(data) - 5):  # a flipped byte anywhere (header or tensor data)
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(InputError):
            wire.parse_sample(bytes(bad))
    for cut in (0, 7, 100, len(data) - 1):
        with pytest.raises(wire.WireError):
            wire.parse_sample(data[:cut])
    with pytest.raises(wire.WireError, match="exceed"):
        wire.parse_sample(data, max_bytes=len(data) - 1)
    with pytest.raises(wire.WireError, match="kind"):
        wire.decode(data, "delta")
    with pytest.raises(wire.WireError):
        wire.parse_sample(pickle.dumps(ts.pixels))  # never unpickled: it is simply not a payload


def test_inconsistent_sample_fields_are_refused():
    ts = tokens_from_clip(make_clip(0), 0.1)
    base = {"pixels": ts.pixels, "patch": ts.patch.to(torch.uint8), "t_start": ts.t_start.to(torch.uint8),
            "t_end": ts.t_end.to(torch.uint8)}
    meta = {"sample_id": "x", "num_frames": 16, "grid": 14, "patch_size": 8, "channels": 3}
    for change, why in (({"patch": torch.full_like(base["patch"], 250)}, "grid"),
                        ({"t_end": torch.full_like(base["t_end"], 40)}, "frames"),
                        ({"pixels": base["pixels"][:, :10]}, "pixels"),
                        ({"t_start": base["t_start"][:3]}, "one entry")):
        with pytest.raises(wire.WireError, match=why):
            wire.parse_sample(wire.encode("sample", {**base, **change}, meta))
    with pytest.raises(wire.WireError, match="missing"):
        wire.parse_sample(wire.encode("sample", base, {"sample_id": "x"}))
