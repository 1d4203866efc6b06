"""The unified compression operator C(s, b, ρ), its pure quantisation functions, and the shifted domains."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.data import shifts
from workbench.data.shapesworld import make_clip
from workbench.errors import CheckpointError, InputError
from workbench.methods import ucop
from workbench.methods.ops import quant
from workbench.models.registry import create_model
from workbench.models.visual_tokens import VisualTokens
from workbench.pipeline import describe

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def debug_model():
    return create_model("tinyvlm-debug")


def test_noop_operator_is_the_dense_model_bit_for_bit(debug_model, tmp_path):
    cfg = ucop.UCOPConfig()
    assert cfg.is_noop
    path = tmp_path / "noop.safetensors"
    ucop.save_pocket(ucop.compress(debug_model, cfg), path)
    device = ucop.load_pocket(path).model()
    state = device.state_dict()
    assert all(torch.equal(state[k], v) for k, v in debug_model.state_dict().items())
    clip = make_clip(3)
    frames = torch.from_numpy(clip.frames)[None]
    vt_d = debug_model.encode_dense(frames, "rgb")
    vt_c, _ = device.compression.visual_tokens(device, frames, "rgb", clip)
    assert torch.equal(vt_d.embeds, vt_c.embeds)
    ids = torch.tensor([debug_model.tokenizer.prompt_ids("describe the clip")])
    assert torch.equal(debug_model(vt_d, ids)[0], device(vt_c, ids)[0])
    assert describe(debug_model, clip).caption == describe(device, clip).caption


@pytest.mark.parametrize("cfg", [ucop.UCOPConfig(bits=8), ucop.UCOPConfig(sparsity=0.3, bits=4),
                                 ucop.UCOPConfig(sparsity=0.5, bits=3, group=64), ucop.UCOPConfig(bits=16),
                                 ucop.UCOPConfig(sparsity=0.25, bits=32), ucop.UCOPConfig()])
def test_size_accounting_bytes_on_disk_equal_bytes_claimed(debug_model, tmp_path, cfg):
    pocket = ucop.compress(debug_model, cfg)
    claimed = ucop.analytic_bytes(debug_model, cfg)
    assert pocket.nbytes == claimed["total"]
    path = tmp_path / "p.safetensors"
    size = ucop.save_pocket(pocket, path)
    assert size == path.stat().st_size == ucop.header_bytes(path) + claimed["total"]
    for name in ucop.weight_names(debug_model):  # per tensor too
        stored = sum(t.numel() * t.element_size() for k, t in pocket.tensors.items() if k.split(":")[0] == name)
        assert stored == claimed[name], name
    again, before = ucop.load_pocket(path).state_dict(), pocket.state_dict()
    assert again.keys() == before.keys() and all(torch.equal(again[k], v) for k, v in before.items())


def test_pruning_and_quantisation_error_bounds(debug_model):
    cfg = ucop.UCOPConfig(sparsity=0.3, bits=4)
    pocket = ucop.compress(debug_model, cfg)
    dense = debug_model.state_dict()
    state = pocket.state_dict()
    for name in ucop.weight_names(debug_model):
        w, q = dense[name], state[name]
        kept = quant.magnitude_mask(w, 1 - cfg.sparsity)
        assert int((q != 0).sum()) <= int(kept.sum())
        assert torch.all(q[~kept] == 0)  # pruned entries exactly zero
        assert abs(int(kept.sum()) - round(0.7 * w.numel())) <= 1
        scale = pocket.tensors[f"{name}:scale"]  # one per output row
        assert scale.shape == (w.shape[0],)
        err = (q - w * kept).abs()
        assert torch.all(err <= scale[:, None] / 2 + 1e-6)  # round-to-nearest: at most half a step


def test_quant_pack_round_trip_and_bad_sizes():
    rng = np.random.default_rng(0)
    for bits in range(1, 9):
        codes = rng.integers(0, 1 << bits, 1001)
        packed = quant.pack_codes(codes, bits)
        assert packed.size == quant.packed_bytes(1001, bits)
        assert quant.unpack_codes(packed, bits, 1001).tolist() == codes.tolist()
    with pytest.raises(ValueError):
        quant.unpack_codes(packed[:-1], 8, 1001)
    with pytest.raises(ValueError):
        quant.pack_codes(np.array([4]), 2)
    mask = torch.from_numpy(rng.random((7, 9)) > 0.5)
    assert torch.equal(quant.unpack_mask(quant.pack_mask(mask), (7, 9)), mask)


def test_token_budget_reduces_tokens(debug_model):
    device = ucop.apply(debug_model, ucop.UCOPConfig(rho=0.1))
    d = describe(device, make_clip(0))
    k = round(0.1 * 196)
    assert d.tokens_to_decoder <= 196 + 15 * k < 16 * 196
    assert d.method == "ucop"


def test_bad_configs_and_files(tmp_path, debug_model):
    for bad in ({"sparsity": 1.0}, {"bits": 12}, {"rho": 0.0}, {"group": -1}):
        with pytest.raises(ValueError):
            ucop.UCOPConfig(**bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00not a header")
    with pytest.raises(CheckpointError):
        ucop.load_pocket(junk)
    from workbench.models.io import save_checkpoint
    save_checkpoint(debug_model, tmp_path / "full.safetensors")
    with pytest.raises(CheckpointError, match="not a pocket"):
        ucop.load_pocket(tmp_path / "full.safetensors")


# ---- shifted domains --------------------------------------------------------------------------------------

def test_shifts_are_deterministic_named_and_change_the_frames():
    assert list(shifts.DOMAINS) == ["night", "palette", "haze"]
    src = shifts.shifted_clip("source", 11)
    assert np.array_equal(src.frames, make_clip(11).frames)
    for name in shifts.DOMAINS:
        a, b = shifts.shifted_clip(name, 11), shifts.shifted_clip(name, 11)
        assert np.array_equal(a.frames, b.frames)
        assert a.captions == src.captions and a.meta["domain"] == name
        assert float(np.abs(a.frames - src.frames).mean()) > 0.05
        assert a.frames.min() >= 0 and a.frames.max() <= 1 and a.frames.dtype == np.float32
    with pytest.raises(InputError, match="unknown domain"):
        shifts.get_shift("fog")


def test_domain_seed_roles_are_disjoint():
    seen: dict[int, tuple] = {}
    for dom in ["source", *shifts.DOMAINS]:
        for role in ("stream", "teacher"):
            for s in shifts.domain_seeds(dom, role, 5000):
                assert s not in seen, (s, seen.get(s), (dom, role))
                seen[s] = (dom, role)
    evals = set(shifts.domain_seeds("night", "eval", 500))
    assert not evals & set(seen)
    assert evals <= set(range(500))  # ShapesWorld test split
