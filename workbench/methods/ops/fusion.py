"""Temporal fusion of reused tokens (STTF step 6): a patch's run of reused frames becomes one token.

A run starts at a recomputed frame and lasts until the next recompute of that patch. The run's token is the
cached encoder output from its first frame; it carries the run's frame span (for the mean temporal
embedding) and its length as `size` (proportional attention in the decoder).

    >>> import torch
    >>> enc = torch.arange(6.).reshape(1, 3, 2, 1)      # (B, T, N, D)
    >>> mask = torch.tensor([[[True, True], [False, True], [False, False]]])
    >>> vt = fuse_runs(enc, mask)
    >>> vt.size[0].tolist(), vt.t_end[0].tolist()
    ([3.0, 1.0, 2.0], [2, 0, 2])
"""
from __future__ import annotations

import torch

from workbench.models.visual_tokens import VisualTokens


def run_ends(mask: torch.Tensor) -> torch.Tensor:
    """(B, T, N) recompute mask → (B, T, N) last frame (inclusive) of the run that starts at each frame."""
    b, t, n = mask.shape
    ends = torch.empty(b, t, n, dtype=torch.long)
    ends[:, t - 1] = t - 1
    for f in range(t - 2, -1, -1):
        ends[:, f] = torch.where(mask[:, f + 1], f, ends[:, f + 1])
    return ends


def fuse_runs(enc: torch.Tensor, mask: torch.Tensor) -> VisualTokens:
    """Encoder tokens (B, T, N, D) + recompute mask (B, T, N) → one token per run, frame-major order.

    Samples keep their own token counts; the batch is padded (VisualTokens.valid marks real tokens).
    """
    ends = run_ends(mask)
    items = []
    for b in range(enc.shape[0]):
        tt, ii = mask[b].nonzero(as_tuple=True)  # row-major → sorted by frame, then patch
        t_end = ends[b, tt, ii]
        items.append(VisualTokens(enc[b, tt, ii][None], ii[None], tt[None], t_end[None],
                                  (t_end - tt + 1).to(enc.dtype)[None], None))
    return items[0] if len(items) == 1 else VisualTokens.stack(items)


def run_token_index(mask: torch.Tensor) -> torch.Tensor:
    """(B, T, N) recompute mask → (B, T, N) index of the decoder token (in `fuse_runs` order) that each
    patch-frame belongs to: its own token where recomputed, else the token of the run it was fused into.

        >>> mask = torch.tensor([[[True, True], [False, True], [False, False]]])
        >>> run_token_index(mask)[0].tolist()
        [[0, 1], [0, 2], [0, 2]]
    """
    b, t, n = mask.shape
    own = mask.reshape(b, t * n).long().cumsum(1).reshape(b, t, n) - 1  # (B, T, N) rank among recomputed
    out = torch.empty_like(own)
    out[:, 0] = own[:, 0]
    for f in range(1, t):
        out[:, f] = torch.where(mask[:, f], own[:, f], out[:, f - 1])
    return out
