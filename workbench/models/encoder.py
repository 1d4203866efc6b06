"""ViT-style per-frame vision encoder with an RGB stem and an event stem (2-channel polarity frames).

Each frame is cut into 8×8 patches (a 14×14 grid on 112×112 frames), embedded, given a learned position
embedding, and run through pre-LN blocks with attention inside the frame. Hook points:
`encoder.hook_patch_embed` (after stem + position), `encoder.blocks.{i}.hook_out`, `encoder.hook_out`.

    >>> import torch
    >>> enc = VisionEncoder(dim=32, depth=1, heads=2)
    >>> enc(torch.rand(3, 3, 112, 112), "rgb").shape
    torch.Size([3, 196, 32])
"""
from __future__ import annotations

import torch
from torch import nn

from workbench.models.hooks import HookPoint
from workbench.models.layers import Block
from workbench.models.norm import RunningNorm

MODALITY_CHANNELS = {"rgb": 3, "events": 2}


def patchify(frames: torch.Tensor, patch: int) -> torch.Tensor:
    """(F, C, H, W) → (F, N, C·p·p) with patches in row-major grid order."""
    f, c, h, w = frames.shape
    x = frames.reshape(f, c, h // patch, patch, w // patch, patch)  # (F, C, gh, p, gw, p)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (F, gh, gw, C, p, p)
    return x.reshape(f, (h // patch) * (w // patch), c * patch * patch)


class VisionEncoder(nn.Module):
    def __init__(self, dim: int = 128, depth: int = 4, heads: int = 4, mlp_ratio: float = 4.0,
                 image_size: int = 112, patch_size: int = 8):
        super().__init__()
        self.patch_size = patch_size
        n = (image_size // patch_size) ** 2
        self.stems = nn.ModuleDict({m: nn.Linear(c * patch_size * patch_size, dim) for m, c in MODALITY_CHANNELS.items()})
        self.pos_embed = nn.Parameter(torch.randn(1, n, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        # per-modality feature normalisation of the output tokens (see `finish`)
        self.out_norms = nn.ModuleDict({m: RunningNorm(dim) for m in MODALITY_CHANNELS})
        self.hook_patch_embed = HookPoint()
        self.hook_out = HookPoint()

    def embed(self, frames: torch.Tensor, modality: str) -> torch.Tensor:
        """(F, C, H, W) → patch embeddings + position (F, N, D)."""
        if modality not in self.stems:
            raise ValueError(f"modality must be one of {sorted(self.stems)}, not {modality!r}")
        return self.hook_patch_embed(self.stems[modality](patchify(frames, self.patch_size)) + self.pos_embed)

    def finish(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Last block's output (F, K, D) → encoder tokens: LayerNorm, then per-modality `RunningNorm`.

        The running norm removes any component shared by all tokens and fixes the content's variance, the
        same way in training and inference (a fixed per-token affine map), so any subset of tokens (STTF's
        partial encoding) gets exactly what the dense pass gives it. One per modality: RGB and event
        statistics differ. Without it, Adam grows a shared component from tiny consistent gradients until
        the content is buried and the decoder ignores vision (observed in this project's first runs).
        """
        return self.hook_out(self.out_norms[modality](self.norm(x)))

    def forward(self, frames: torch.Tensor, modality: str) -> torch.Tensor:
        """(F, C, H, W) frames → (F, N, D) encoder tokens."""
        x = self.embed(frames, modality)
        for blk in self.blocks:
            x = blk(x)
        return self.finish(x, modality)
