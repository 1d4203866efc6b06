"""The domain router: which weights a device applies to a clip — its adapted ones or the pocket's own.

Adapting to a shifted domain (night) with AKD moves weights the source domain needs too: measured on night,
adapters trained without source rehearsal recover 75 % of the gap to the teacher but drop source CIDEr from
1.53 to 0.22; with rehearsal the drop is smaller (to 1.29) and so is the gain (24 %) (bench_cloud_device). The router removes the
trade-off instead of tuning it: the device keeps the pocket model next to its adapted copy and captions a
clip with the adapted weights only when a small classifier says the clip comes from the deployment's
shifted domain. A clip routed to the pocket is captioned exactly as before any adaptation (bit for bit;
tested), so the source domain loses only what the router misroutes — which the benchmark measures.

The classifier is logistic regression on 46 pixel statistics of the sample's token set (`token_features`:
RGB means and spreads, neighbour differences, a luminance histogram, a chroma-weighted hue histogram, Laplacian
noise energy, the brightest tokens' peak values) — what changes when light, palette or veil change, computed in ≈ 15 ms from pixels the device
already has (no model pass). The cloud fits it each round (`fit_router`) on the samples the device uploaded
(positives) against its own source-domain clips (negatives, class-balanced, L2-regularised, LBFGS:
deterministic), and sends its 139 floats with the update (`wire` part `router`, fp32, outside the delta codec:
they are values, not deltas). The router is a module of the student (`add_router`), so it is in the weights'
hash and persisted like every other tensor. Its initial state routes every clip to the adapted weights —
the device without routing — so a device whose cloud does not fit a router behaves exactly as before.

    >>> from workbench.adapt.tokens import tokens_from_clip
    >>> from workbench.data.shifts import shifted_clip
    >>> f = token_features(tokens_from_clip(shifted_clip("night", 3), 0.16))
    >>> f.shape, bool(DomainRouter()(f) > 0)
    (torch.Size([46]), True)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from workbench.adapt.tokens import TokenSet

HUE_BINS = 24
LUM_BINS = 8
NUM_FEATURES = 3 + 3 + 2 + LUM_BINS + HUE_BINS + 3 + 3
ROUTER_NAMES = ("domain_router.bias", "domain_router.mean", "domain_router.scale", "domain_router.weight")
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


@torch.no_grad()
def token_features(tokens: TokenSet) -> torch.Tensor:
    """(NUM_FEATURES,) float32 statistics of a TokenSet's pixels (RGB tokens; other modalities use their
    channels' first three or repeat the first)."""
    c, p = tokens.channels, tokens.patch_size
    x = tokens.pixels.float().view(-1, c, p, p) / 255.0  # (K, C, p, p)
    if c != 3:
        x = x[:, :3] if c > 3 else x[:, :1].expand(-1, 3, -1, -1)
    rgb = x.permute(0, 2, 3, 1).reshape(-1, 3)  # (K·p·p, 3)
    if rgb.shape[0] == 0:
        return torch.zeros(NUM_FEATURES)
    y, i, q = (rgb @ _YIQ.T).unbind(1)
    hue = ((torch.atan2(q, i) + math.pi) / (2 * math.pi) * HUE_BINS).long().clamp(0, HUE_BINS - 1)
    hue_hist = torch.bincount(hue, weights=(i * i + q * q).sqrt() / (y + 0.05), minlength=HUE_BINS) / len(y)
    lum_hist = torch.histc(y, LUM_BINS, 0.0, 1.0) / len(y)
    lum = x.mean(1)  # (K, p, p)
    dx = (lum[:, :, 1:] - lum[:, :, :-1]).abs().mean()
    dy = (lum[:, 1:, :] - lum[:, :-1, :]).abs().mean()
    inner = lum[:, 1:-1, 1:-1]
    lap = (4 * inner - lum[:, :-2, 1:-1] - lum[:, 2:, 1:-1] - lum[:, 1:-1, :-2] - lum[:, 1:-1, 2:]).abs()
    rel = lap.mean((1, 2)) / (inner.mean((1, 2)) + 0.02)
    noise = torch.stack([lap.mean(), rel.mean(), rel.median()]).sqrt()
    peak = x.amax((1, 2, 3))  # (K,) the brightest value of each token: dim light caps it, a dark scene does not
    bright = torch.quantile(peak, torch.tensor([0.9, 0.99, 1.0]))
    return torch.cat([rgb.mean(0), rgb.std(0), torch.stack([dx, dy]), lum_hist.sqrt(), hue_hist.sqrt(), noise,
                      bright]).float()


class DomainRouter(nn.Module):
    """logit = w · (f − mean) / scale + b; > 0 → the adapted weights. Initial state: w = 0, b = 30 (always)."""

    def __init__(self, num_features: int = NUM_FEATURES):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(num_features), requires_grad=False)
        self.scale = nn.Parameter(torch.ones(num_features), requires_grad=False)
        self.weight = nn.Parameter(torch.zeros(num_features), requires_grad=False)
        self.bias = nn.Parameter(torch.full((1,), 30.0), requires_grad=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return ((features - self.mean) / self.scale) @ self.weight + self.bias[0]


def add_router(model: nn.Module) -> None:
    """Give `model` its `domain_router` (the initial, always-adapted one)."""
    model.domain_router = DomainRouter()


def fit_router(positives: torch.Tensor, negatives: torch.Tensor, l2: float = 1e-3) -> dict[str, torch.Tensor]:
    """Class-balanced, L2-regularised logistic regression, positives (P, F) = the shifted domain, negatives
    (N, F) = the source; returns the router's values {name: tensor} (ROUTER_NAMES)."""
    if len(positives) == 0 or len(negatives) == 0:
        raise ValueError("the router needs samples of both domains")
    x = torch.cat([positives, negatives]).double()
    y = torch.cat([torch.ones(len(positives)), torch.zeros(len(negatives))]).double()
    w_class = torch.where(y > 0, 0.5 / len(positives), 0.5 / len(negatives))
    mean, scale = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / scale
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (F.binary_cross_entropy_with_logits(z @ w + b, y, reduction="none") * w_class).sum() + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return {"domain_router.bias": b.detach().float(), "domain_router.mean": mean.float(),
            "domain_router.scale": scale.float(), "domain_router.weight": w.detach().float()}


def router_accuracy(values: dict[str, torch.Tensor], positives: torch.Tensor, negatives: torch.Tensor) -> dict:
    """Share of positives routed to the adapted weights and of negatives kept on the pocket's."""
    r = DomainRouter(positives.shape[1])
    with torch.no_grad():
        for name, v in values.items():
            getattr(r, name.split(".")[-1]).copy_(v)
    return {"target_routed": float((r(positives) > 0).float().mean()), "source_kept": float((r(negatives) <= 0).float().mean())}
