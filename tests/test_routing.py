"""Pure routing ops of ANC (workbench/methods/ops/routing.py): distributions, Gumbel, hysteresis, accounting."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.methods.ops.routing import (FEATURE_NAMES, count_switches, energy_stats, expected_flops,
                                           feature_names, gumbel_softmax_hard, hysteresis_choice,
                                           hysteresis_sequence, kl_to_target, log_feature, masked_softmax,
                                           realised_flops, rgb_patch_energy, router_features, soft_switch_penalty,
                                           switch_rate)

TEMPERATURES = [0.05, 0.1, 0.3, 0.5, 1.0, 2.0, 5.0, 20.0]
logit_lists = st.lists(st.floats(-30, 30, allow_nan=False), min_size=4, max_size=4)


@settings(max_examples=60, deadline=None)
@given(logits=logit_lists, temperature=st.sampled_from(TEMPERATURES), skip_allowed=st.booleans())
def test_masked_softmax_is_a_distribution(logits, temperature, skip_allowed):
    allowed = torch.tensor([skip_allowed, True, True, True])
    p = masked_softmax(torch.tensor(logits), temperature, allowed)
    assert torch.isfinite(p).all() and (p >= 0).all()
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-5)
    if not skip_allowed:
        assert float(p[0]) == 0.0


@settings(max_examples=40, deadline=None)
@given(logits=logit_lists, temperature=st.sampled_from(TEMPERATURES), seed=st.integers(0, 2**31 - 1))
def test_gumbel_hard_is_one_hot_on_allowed_branches(logits, temperature, seed):
    x = torch.tensor(logits, requires_grad=True)
    allowed = torch.tensor([False, True, True, True])
    y, p = gumbel_softmax_hard(x, temperature, allowed, torch.Generator().manual_seed(seed))
    y0, p0 = y.detach(), p.detach()
    assert sorted(y0.tolist()) == [0.0, 0.0, 0.0, 1.0]
    assert float(y0[0]) == 0.0 and float(p0[0]) == 0.0
    assert float(p0.sum()) == pytest.approx(1.0, abs=1e-5)
    (y * torch.arange(4.0)).sum().backward()  # straight-through: the soft sample's gradient reaches the logits
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_gumbel_is_deterministic_given_a_generator():
    x = torch.randn(8, 4)
    a = gumbel_softmax_hard(x, 1.0, generator=torch.Generator().manual_seed(3))[0]
    b = gumbel_softmax_hard(x, 1.0, generator=torch.Generator().manual_seed(3))[0]
    assert torch.equal(a, b)


def test_gumbel_samples_follow_the_distribution():
    logits = torch.tensor([0.0, 1.0, 2.0]).expand(20000, 3)
    y, p = gumbel_softmax_hard(logits, 1.0, generator=torch.Generator().manual_seed(0))
    assert np.allclose(y.mean(0).numpy(), p[0].numpy(), atol=0.02)


def _noisy_sequence(seed=0, t=200):
    """Two branches with nearly equal probabilities plus noise: plain argmax flickers."""
    rng = np.random.default_rng(seed)
    p1 = np.clip(0.5 + 0.08 * rng.standard_normal(t), 0, 1)
    return torch.tensor(np.stack([1 - p1, p1], 1), dtype=torch.float32)


def test_hysteresis_reduces_switches_on_noisy_probabilities():
    p = _noisy_sequence()
    plain = count_switches(hysteresis_sequence(p, 0.0))
    assert plain > 40  # the unregularised decision flickers
    counts = [count_switches(hysteresis_sequence(p, h)) for h in (0.1, 0.2, 0.3)]
    assert counts[0] < plain and counts[1] < plain / 3 and counts[2] <= counts[1]
    assert torch.equal(hysteresis_sequence(p, 0.0), p.argmax(1))  # h = 0 is plain argmax


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(2, 5), t=st.integers(2, 40))
def test_huge_margin_never_switches(seed, k, t):
    p = torch.from_numpy(np.random.default_rng(seed).dirichlet(np.ones(k), t)).float()
    assert count_switches(hysteresis_sequence(p, 1.0)) == 0


def test_hysteresis_respects_allowed_branches():
    p = torch.tensor([0.9, 0.05, 0.05])
    allowed = torch.tensor([False, True, True])
    assert hysteresis_choice(p, None, 0.0, allowed) in (1, 2)
    assert hysteresis_choice(torch.tensor([0.2, 0.3, 0.5]), 0, 0.5, allowed) == 2  # current not allowed


def test_switch_accounting():
    assert count_switches([3, 0, 0, 1, 1, 0]) == 3
    assert count_switches([2]) == 0
    assert switch_rate([3, 0, 0, 1], 2.0) == 1.0
    with pytest.raises(ValueError):
        switch_rate([0, 1], 0.0)
    onehot = torch.eye(3)[torch.tensor([2, 0, 0, 1, 1, 0])]
    assert float(soft_switch_penalty(onehot, start=0)) == pytest.approx(2 * 3 / 5)
    assert float(soft_switch_penalty(torch.full((5, 3), 1 / 3))) == 0.0


def test_flops_and_kl():
    costs = torch.tensor([0.0, 1.0, 5.0, 10.0])
    p = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    assert expected_flops(p, costs).tolist() == [0.5, 10.0]
    assert realised_flops([3, 0, 1], costs.tolist()) == 11.0
    assert float(kl_to_target(torch.tensor([0.25] * 4), torch.ones(4))) == pytest.approx(0.0, abs=1e-6)
    assert float(kl_to_target(torch.tensor([0.7, 0.1, 0.1, 0.1]), torch.ones(4))) > 0


def test_router_features_shape_and_names():
    n = 196
    e = torch.rand(3, n) * 0.1
    f = router_features(e, e, torch.rand(3), torch.tensor([0, 2, 40]), torch.tensor([True, False, False]),
                        torch.tensor([-1, 0, 3]), 4, 0.02)
    names = feature_names(("skip", "light", "medium", "full"))
    assert f.shape == (3, len(names)) and len(FEATURE_NAMES) == len(names) - 4
    assert torch.isfinite(f).all()
    assert f[0, -4:].tolist() == [0, 0, 0, 0]  # no previous decision at frame 0
    assert f[2, -4:].tolist() == [0, 0, 0, 1]
    assert float(f[2, names.index("age")]) == 1.0  # clamped


def test_energy_ignores_flicker_and_sees_local_motion():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(3, 112, 112, generator=g) * 0.5 + 0.2
    flicker = ref * 1.1
    moved = ref.clone()
    moved[:, 8:24, 8:24] = 1.0  # an object appears in 4 patches
    e_flicker = rgb_patch_energy(flicker, ref, 8)
    e_moved = rgb_patch_energy(moved, ref, 8)
    assert float(e_flicker.max()) < 0.01 < float(e_moved.max())
    s_flicker, s_moved = energy_stats(e_flicker, 0.02), energy_stats(e_moved, 0.02)
    assert float(s_flicker[-1]) == 0.0 and float(s_moved[-1]) == pytest.approx(4 / 196)


def test_log_feature_is_monotone_and_bounded():
    v = torch.tensor([0.0, 1e-4, 1e-3, 0.01, 0.1, 1.0])
    f = log_feature(v)
    assert float(f[0]) == pytest.approx(0.0, abs=1e-6) and (f.diff() > 0).all() and float(f[-1]) < 1.01
