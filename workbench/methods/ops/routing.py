"""Routing ops for ANC (METHODS.md §2): router features, hard Gumbel-softmax, hysteresis, switches, FLOPs.

Pure tensor functions, no modules and no state. A router picks one of K branches per frame from cheap features
computed before the encoder; these functions build those features, turn logits into a distribution (with
branches that are not allowed masked out), sample hard decisions for training, decide with hysteresis at
inference, and do the switch / FLOPs arithmetic.

    >>> import torch
    >>> p = masked_softmax(torch.tensor([2.0, 0.0, 0.0, 1.0]), 1.0, torch.tensor([False, True, True, True]))
    >>> round(float(p.sum()), 6), float(p[0])
    (1.0, 0.0)
    >>> hysteresis_choice(torch.tensor([0.0, 0.45, 0.05, 0.5]), current=1, margin=0.1)
    1
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# per-patch "energy" statistics, computed twice: against the previous frame and against the reference frame
# (the last frame whose tokens were actually computed — what a skip reuses; drift accumulates against it)
STATS = ("mean", "std", "q50", "q90", "max", "frac")
FEATURE_NAMES: tuple[str, ...] = (
    *(f"prev_{s}" for s in STATS), *(f"ref_{s}" for s in STATS), "complexity", "age", "first")
LOG_EPS = 1e-4  # log_feature(0) = 0, log_feature(1) ≈ 1
MAX_AGE = 16


def feature_names(branches: tuple[str, ...]) -> tuple[str, ...]:
    """Names of the router features, the previous-decision one-hot last.

    >>> feature_names(("skip", "full"))[-2:]
    ('prev_skip', 'prev_full')
    """
    return FEATURE_NAMES + tuple(f"prev_{b}" for b in branches)


def log_feature(v: torch.Tensor) -> torch.Tensor:
    """Monotone squashing of non-negative magnitudes: log10(v + 1e-4) / 4 + 1 (0 → 0, 0.01 → 0.5, 1 → ≈1).

    >>> [round(v, 2) for v in log_feature(torch.tensor([0.0, 0.01, 1.0])).tolist()]
    [0.0, 0.5, 1.0]
    """
    return torch.log10(v.clamp_min(0) + LOG_EPS) / 4.0 + 1.0


def patch_means(frames: torch.Tensor, patch: int) -> torch.Tensor:
    """Mean over channels and pixels of each patch: (..., C, H, W) → (..., N), grid row-major.

    >>> patch_means(torch.ones(2, 3, 16, 16), 8).shape
    torch.Size([2, 4])
    """
    *lead, c, h, w = frames.shape
    x = frames.reshape(-1, c, h // patch, patch, w // patch, patch)  # (F, C, gh, p, gw, p)
    return x.mean((1, 3, 5)).reshape(*lead, (h // patch) * (w // patch))  # (F, gh, gw) → (..., N)


def rgb_patch_energy(frame: torch.Tensor, ref: torch.Tensor, patch: int) -> torch.Tensor:
    """Per-patch mean |frame − ref| after matching frame's mean brightness to ref's (so global lighting
    flicker is not mistaken for motion): (..., C, H, W) × 2 → (..., N).

    >>> e = rgb_patch_energy(torch.zeros(3, 16, 16), torch.zeros(3, 16, 16), 8)
    >>> e.tolist()
    [0.0, 0.0, 0.0, 0.0]
    """
    m_f = frame.mean((-3, -2, -1), keepdim=True)
    m_r = ref.mean((-3, -2, -1), keepdim=True)
    scaled = frame * ((m_r + 1e-3) / (m_f + 1e-3))  # brightness-compensated current frame
    return patch_means((scaled - ref).abs(), patch)


def event_patch_energy(frame: torch.Tensor, patch: int) -> torch.Tensor:
    """Per-patch activity of an event frame (both polarity channels): (..., 2, H, W) → (..., N).

    Event frames already are changes, so this is the "difference energy" of the event modality (the
    normalised event count per pixel; proportional to `clip.patch_event_rate`).

    >>> event_patch_energy(torch.ones(2, 16, 16), 8).tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    return patch_means(frame, patch)


def energy_stats(e: torch.Tensor, level: float) -> torch.Tensor:
    """(..., N) per-patch energies → (..., 6): log-scaled mean, std, median, 90% quantile, max, and the
    fraction of patches whose energy exceeds the median by more than `level` (motion is local: a few
    patches far above a uniform noise floor).

    >>> energy_stats(torch.zeros(4, 196), 0.02).shape
    torch.Size([4, 6])
    """
    q = torch.quantile(e, torch.tensor([0.5, 0.9], dtype=e.dtype), dim=-1)  # (2, ...)
    frac = ((e - q[0].unsqueeze(-1)) > level).to(e.dtype).mean(-1)
    mags = torch.stack([e.mean(-1), e.std(-1, unbiased=False), q[0], q[1], e.amax(-1)], -1)  # (..., 5)
    return torch.cat([log_feature(mags), frac.unsqueeze(-1)], -1)


def router_features(e_prev: torch.Tensor, e_ref: torch.Tensor, complexity: torch.Tensor, age: torch.Tensor,
                    first: torch.Tensor, prev_choice: torch.Tensor, n_branches: int, level: float) -> torch.Tensor:
    """The router's input vector (..., F), F = 15 + n_branches (order: `feature_names`).

    e_prev / e_ref: (..., N) per-patch energy against the previous / the reference frame; complexity: (...)
    spatial std of patch means of the current frame; age: (...) frames since the reference (0 on frame 0);
    first: (...) bool, frame 0 of the clip; prev_choice: (...) long, previous decision (−1 = none).

    >>> z = torch.zeros(2, 196)
    >>> router_features(z, z, torch.zeros(2), torch.zeros(2), torch.ones(2, dtype=torch.bool),
    ...                 torch.full((2,), -1), 4, 0.02).shape
    torch.Size([2, 19])
    """
    onehot = F.one_hot(prev_choice.clamp_min(0), n_branches).to(e_prev.dtype)
    onehot = onehot * (prev_choice >= 0).unsqueeze(-1).to(e_prev.dtype)  # all zeros when there is none
    scal = torch.stack([log_feature(complexity.to(e_prev.dtype)),
                        age.to(e_prev.dtype).clamp(max=MAX_AGE) / MAX_AGE, first.to(e_prev.dtype)], -1)
    return torch.cat([energy_stats(e_prev, level), energy_stats(e_ref, level), scal, onehot], -1)


def masked_softmax(logits: torch.Tensor, temperature: float, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """π = softmax(logits / temperature) over the last dim, with exactly 0 on branches not `allowed`.

    >>> [round(v, 3) for v in masked_softmax(torch.zeros(3), 0.5).tolist()]
    [0.333, 0.333, 0.333]
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = logits / temperature
    if allowed is not None:
        z = z.masked_fill(~allowed, float("-inf"))
    return z.softmax(-1)


def gumbel_softmax_hard(logits: torch.Tensor, temperature: float, allowed: torch.Tensor | None = None,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard Gumbel-softmax with the straight-through estimator.

    Returns (y, π): y (..., K) is one-hot in the forward pass and carries the gradient of the soft sample
    softmax((logits + g) / temperature); π = softmax(logits / temperature) (no noise) for the expected-cost,
    balance and stability terms. Deterministic given `generator`.

    >>> y, p = gumbel_softmax_hard(torch.zeros(5, 3), 1.0, generator=torch.Generator().manual_seed(0))
    >>> y.sum(-1).tolist(), sorted(set(y.flatten().tolist()))
    ([1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 1.0])
    """
    dev = generator.device if generator is not None else logits.device  # CPU generator: same draws on any device
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=dev).to(logits.device)
    u = u.clamp(1e-9, 1 - 1e-9)
    g = -torch.log(-torch.log(u))
    soft = masked_softmax(logits + g, temperature, allowed)
    hard = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
    y = hard - soft.detach() + soft
    return y, masked_softmax(logits, temperature, allowed)


def hysteresis_choice(probs: torch.Tensor, current: int | None, margin: float,
                      allowed: torch.Tensor | None = None) -> int:
    """Argmax with hysteresis: keep `current` unless the best allowed branch beats it by more than `margin`.

    probs: (K,). Without a current branch (frame 0) or when it is not allowed, plain argmax.

    >>> p = torch.tensor([0.3, 0.7])
    >>> hysteresis_choice(p, 0, 0.5), hysteresis_choice(p, 0, 0.2), hysteresis_choice(p, None, 9.0)
    (0, 1, 1)
    """
    masked = probs if allowed is None else probs.masked_fill(~allowed, float("-inf"))
    best = int(masked.argmax())
    if current is None or (allowed is not None and not bool(allowed[current])):
        return best
    return best if float(probs[best] - probs[current]) > margin else int(current)


def hysteresis_sequence(probs: torch.Tensor, margin: float, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Decisions (T,) for a fixed probability sequence (T, K) (allowed: (T, K) or None).

    >>> p = torch.tensor([[0.6, 0.4], [0.45, 0.55], [0.6, 0.4]])
    >>> hysteresis_sequence(p, 0.0).tolist(), hysteresis_sequence(p, 0.2).tolist()
    ([0, 1, 0], [0, 0, 0])
    """
    out, cur = [], None
    for t in range(probs.shape[0]):
        cur = hysteresis_choice(probs[t], cur, margin, None if allowed is None else allowed[t])
        out.append(cur)
    return torch.tensor(out, dtype=torch.long)


def count_switches(choices) -> int:
    """Number of frames whose decision differs from the previous frame's (choices: (T,) ints).

    >>> count_switches([3, 0, 0, 1, 1, 0])
    3
    """
    c = torch.as_tensor(choices).reshape(-1)
    return int((c[1:] != c[:-1]).sum()) if c.numel() > 1 else 0


def switch_rate(choices, duration_s: float) -> float:
    """Switches per second of clip.

    >>> switch_rate([3, 0, 0, 1], 2.0)
    1.0
    """
    if duration_s <= 0:
        raise ValueError(f"duration must be > 0 s, got {duration_s}")
    return count_switches(choices) / duration_s


def soft_switch_penalty(probs: torch.Tensor, start: int = 1) -> torch.Tensor:
    """Differentiable switch count: mean over pairs (t−1, t), t > start, of ‖π_t − π_{t−1}‖₁ (probs (..., T, K)).

    `start=1` ignores the pair (0, 1): frame 0 cannot skip, so leaving its branch at frame 1 is expected.

    >>> p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    >>> float(soft_switch_penalty(p))
    1.0
    """
    d = (probs[..., start + 1:, :] - probs[..., start:-1, :]).abs().sum(-1)  # (..., T − start − 1)
    return d.mean() if d.numel() else probs.sum() * 0.0


def kl_to_target(mean_probs: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KL(mean π ‖ target mix) = Σ p log(p / q) (the balance term; target need not be normalised).

    >>> float(kl_to_target(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 1.0])))
    0.0
    """
    q = target / target.sum()
    p = mean_probs.clamp_min(eps)
    return (p * (p.log() - q.clamp_min(eps).log())).sum(-1)


def expected_flops(probs: torch.Tensor, costs: torch.Tensor) -> torch.Tensor:
    """Σ_k π_k c_k over the last dim (probs (..., K), costs (K,)).

    >>> float(expected_flops(torch.tensor([0.5, 0.5]), torch.tensor([0.0, 10.0])))
    5.0
    """
    return (probs * costs.to(probs.dtype)).sum(-1)


def realised_flops(choices, costs) -> float:
    """FLOPs of a decision sequence: Σ_t c[choice_t].

    >>> realised_flops([3, 0, 1], [0.0, 1.0, 5.0, 10.0])
    11.0
    """
    c = torch.as_tensor(costs, dtype=torch.float64)
    return float(c[torch.as_tensor(choices, dtype=torch.long)].sum())
