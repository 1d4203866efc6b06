"""RunningNorm: feature normalisation by running statistics — identical in training and inference.

Like BatchNorm without affine parameters, except that training also normalises with the running statistics
(updated from each batch without gradient) instead of the batch's own. So there is no train/eval discrepancy
— with BatchNorm, event tokens (mostly empty, identical patches; batch statistics swinging with the batch's
composition) were normalised one way in training and another at inference, and the gesture head collapsed to
one class at eval time (observed). At inference it is a fixed per-token affine map, so any subset of tokens
(STTF's partial encoding) is treated exactly like the dense set.

    >>> import torch
    >>> n = RunningNorm(4, momentum=1.0).train()
    >>> _ = n(torch.randn(100, 4) * 3 + 5)
    >>> y = n.eval()(torch.randn(100, 4) * 3 + 5)
    >>> bool(y.mean().abs() < 0.5), bool((y.std() - 1).abs() < 0.3)
    (True, True)
"""
from __future__ import annotations

import torch
from torch import nn


class RunningNorm(nn.Module):
    def __init__(self, dim: int, momentum: float = 0.05, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) → (..., D) normalised per channel by the running statistics."""
        if self.training and x.numel() > x.shape[-1]:
            with torch.no_grad():
                flat = x.detach().reshape(-1, x.shape[-1])
                self.running_mean.lerp_(flat.mean(0), self.momentum)
                self.running_var.lerp_(flat.var(0, unbiased=False), self.momentum)
        return (x - self.running_mean) * torch.rsqrt(self.running_var + self.eps)
