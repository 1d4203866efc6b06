"""What the encoder-side baselines (ToMe, Eventful, VisionZip, random selection, uniform pooling) share: one
result record, the measured run (timed; FLOPs by FlopCounterMode on a second, identical run), the per-frame
accounting (`pipeline.FrameStats`) and the trace rows every one of them writes.

A baseline's work function returns a `BaselineRun`: the decoder's visual tokens, where every patch-frame went
(`owner`: the decoder token it is part of, −1 when dropped), a DECISIONS code per patch-frame, the tokens
entering and leaving every encoder layer per frame, and its analytic FLOPs per frame (METHODS.md §7, the
method's own matching / scoring work included). `finish_run` turns it into (VisualTokens, FrameStats) (with `stats.encoder_flops_analytic`, (T,)) and logs:

- `decision` (site `<name>.tokens`, token = patch, target = decoder token) — kept 4, fused 2 (merged in space
  with the other patches of the same target), pruned 3, recycled 5 (into a contextual token), recomputed 0 /
  fused 2 over time (Eventful);
- `tokens_in` / `tokens_out` (site `<name>.encoder`, layer = block, one row per frame);
- `encoder_flops_analytic` (site `<name>`, per frame) beside the pipeline's measured `encoder_flops`.

    >>> import numpy as np, torch
    >>> from workbench.models.visual_tokens import VisualTokens
    >>> run = BaselineRun(VisualTokens.dense(torch.zeros(1, 2, 4, 3)), torch.arange(8).view(2, 4),
    ...                   torch.full((2, 4), 4), np.full((1, 2), 4), np.full((1, 2), 4), np.full(2, 10.0))
    >>> run.tokens_per_frame(), run.tokens_computed().tolist()
    (4.0, [4.0, 4.0])
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from workbench.errors import InputError
from workbench.eval.flops import count_flops
from workbench.models.visual_tokens import VisualTokens
from workbench.pipeline import FrameStats
from workbench.trace import active_recorder


@dataclass
class BaselineRun:
    vt: VisualTokens  # (1, M) the decoder's visual tokens
    owner: torch.Tensor  # (T, N) long, decoder token of every patch-frame (−1: dropped)
    codes: torch.Tensor  # (T, N) long, DECISIONS code of every patch-frame
    layer_in: np.ndarray  # (L, T) tokens entering each encoder block, per frame
    layer_out: np.ndarray  # (L, T) tokens leaving it
    analytic: np.ndarray  # (T,) analytic encoder FLOPs per frame
    to_decoder: np.ndarray | None = None  # (T,) decoder tokens whose run starts at the frame (None: per frame)

    def tokens_per_frame(self) -> float:
        return self.vt.num_tokens / self.owner.shape[0]

    def tokens_computed(self) -> np.ndarray:
        """(T,) mean over blocks of the tokens entering them (token-layers ÷ depth: what the encoder computed)."""
        return self.layer_in.mean(0).astype(np.float64)


def measured(work, count: bool) -> tuple[BaselineRun, float, float]:
    """(run, FlopCounterMode FLOPs of the whole run (0 unless count), wall ms of the timed run). The counted
    run is a second call of the same deterministic work, never the timed one."""
    with torch.inference_mode():
        start = time.perf_counter()
        run = work()
        ms = (time.perf_counter() - start) * 1e3
        flops = count_flops(work)[1] if count else 0
    vt = run.vt
    run.vt = VisualTokens(vt.embeds.clone(), vt.patch.clone(), vt.t_start.clone(), vt.t_end.clone(),
                          vt.size.clone(), None)  # normal tensors outside inference mode
    return run, float(flops), ms


def finish_run(name: str, run: BaselineRun, flops: float, ms: float) -> tuple[VisualTokens, FrameStats]:
    """(VisualTokens, FrameStats) of a run, FLOPs and time split over frames by the analytic share; logs the
    trace rows of the module docstring when a recorder is open."""
    t = run.owner.shape[0]
    share = run.analytic / run.analytic.sum() if run.analytic.sum() > 0 else np.full(t, 1.0 / t)
    to_dec = run.to_decoder if run.to_decoder is not None else _per_frame(run.vt, t)
    stats = FrameStats(run.tokens_computed(), to_dec.astype(np.float64), flops * share, ms * share)
    stats.encoder_flops_analytic = run.analytic  # (T,) beside the measured count (FrameStats has no field for it)
    rec = active_recorder()
    if rec is not None:
        rec.log_grid("decision", run.codes, site=f"{name}.tokens", target=run.owner)
        for layer in range(run.layer_in.shape[0]):
            rec.log_frames("tokens_in", run.layer_in[layer], site=f"{name}.encoder", layer=layer)
            rec.log_frames("tokens_out", run.layer_out[layer], site=f"{name}.encoder", layer=layer)
        rec.log_frames("encoder_flops_analytic", run.analytic, site=name)
    return run.vt, stats


def _per_frame(vt: VisualTokens, t: int) -> np.ndarray:
    return np.bincount(vt.t_start[0].numpy(), minlength=t).astype(np.float64)


def owner_in_order(owner_local: torch.Tensor, order: torch.Tensor, per_frame: int) -> torch.Tensor:
    """owner_local (T, N) token index inside its frame before sorting, order (T, K) the frame's sort → (T, N)
    decoder token ids (frame-major, K per frame); −1 stays −1."""
    t, k = order.shape
    inv = torch.empty_like(order).scatter_(1, order, torch.arange(k).expand(t, -1))  # (T, K) old → new slot
    pos = inv.gather(1, owner_local.clamp_min(0))
    ids = pos + torch.arange(t)[:, None] * per_frame
    return torch.where(owner_local >= 0, ids, torch.full_like(ids, -1))


class EncoderBaseline:
    """What every baseline class shares: `config()` (its frozen config as a dict) and the pipeline's
    `visual_tokens(...)` around its own `work(model, frames, modality) -> BaselineRun` (timed, counted, traced)."""

    def config(self) -> dict:
        return asdict(self.cfg)

    def visual_tokens(self, model, frames: torch.Tensor, modality: str, clip=None,
                      count: bool = False) -> tuple[VisualTokens, FrameStats]:
        if frames.shape[0] != 1:
            raise ValueError(f"{self.name} encodes one clip at a time (batch 1), got batch {frames.shape[0]}")
        run, flops, ms = measured(lambda: self.work(model, frames, modality), count)
        return finish_run(self.name, run, flops, ms)


def qkv(blk, h: torch.Tensor, idx: torch.Tensor | None = None):
    """q, k, v of rows h (F, R, D): `attn.qkv(h)`, or `attn.qkv(h, idx)` on a RoPE tower (`attn.indexed`, HF
    Qwen2-VL), whose rows need their patch positions idx (R,) — shared by the batch, so a method whose frames keep
    different patches (ToMe after a merge, random selection at the input) cannot run there and says so."""
    if getattr(blk.attn, "indexed", False):
        if idx is None:
            raise InputError("encoder-side baseline", "this tower's attention needs each row's patch position "
                             "(2-D RoPE, Qwen2-VL) and this method gives every frame different rows; run it on a "
                             "tower without RoPE, or use sttf / sparsevlm / fastv on this model")
        return blk.attn.qkv(h, idx)
    return blk.attn.qkv(h)


def dense_block(blk, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One encoder block on every token of x (F, n, D), with the dense model's calls → (output, q, k)."""
    q, k, v = qkv(blk, blk.ln1(x), torch.arange(x.shape[1]))  # each (F, h, n, hd)
    x = x + blk.attn.attend(q, k, v)
    return blk.hook_out(x + blk.mlp(blk.ln2(x))), q, k


def block_costs(n: int, d: int, mlp: int) -> tuple[int, int]:
    """(attention-side FLOPs, MLP FLOPs) of one block over n tokens (METHODS.md §7: 8nd² + 4n²d, 4ndm)."""
    return 8 * n * d * d + 4 * n * n * d, 4 * n * d * mlp


def stem_flops(model, modality: str, n: int) -> int:
    """Analytic FLOPs of the patch embedding of n patches (a linear stem: 2 · n · pixels per patch · width)."""
    stem = getattr(model.encoder, "stems", {})[modality]
    return 2 * n * stem.in_features * stem.out_features


def mlp_width(model) -> int:
    """The encoder MLP's hidden width, read from the first block's `mlp.fc1` (TinyVLM, CLIP, SigLIP, Qwen2-VL)."""
    return int(model.encoder.blocks[0].mlp.fc1.out_features)


def patch_tokens(model, x: torch.Tensor) -> int:
    """The patch count of embeddings x (F, n, D): a tower that adds tokens of its own (CLIP's CLS) is refused —
    the baselines select, merge and place patches on the grid."""
    n = model.cfg.num_patches
    if x.shape[1] != n:
        raise InputError("encoder-side baseline", f"the encoder embeds {x.shape[1]} tokens for {n} patches (a CLS "
                         "token?): ToMe, Eventful, VisionZip, random and pool run on patch-only towers (TinyVLM, "
                         "SigLIP / LLaVA-OneVision); use sttf / sparsevlm / fastv on this model")
    return n
