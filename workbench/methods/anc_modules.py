"""ANC's trainable parts (two token adapters + the router) and the four encoder branches built around them.

All branches map a frame to final encoder tokens (N, D_enc) — the same interface as the dense encoder — and
share what can be shared with the frozen base model:

    skip    reuse the previous frame's output tokens                         (0 FLOPs; never at frame 0)
    light   shared stem + position → adapter (LN → MLP D→2D→D) → normalised tokens  (≈ 9% of full)
    medium  shared stem + position → first `medium_blocks` encoder blocks → adapter (D→D→D) → normalised tokens
                                                                                          (≈ 55% of full)
    full    the base encoder, unchanged (bit-identical to dense)

`ANCModule` holds only what stage 3 trains (the adapters and the router); the base TinyVLM stays frozen and is
passed in. Checkpoints are safetensors with the module config in the metadata (format "workbench-anc/1").

`run_branch(..., token_index=...)` computes only some tokens of a frame and reuses the rest from the previous
output; attention for the computed queries runs over all keys, the other tokens' keys/values coming from a
per-clip `BranchCache` (Eventful-Transformer style) — the hook for STTF+ANC combined mode.

    >>> from workbench.models.registry import create_model
    >>> model = create_model("tinyvlm-debug")
    >>> module = ANCModule.for_model(model)
    >>> frames = torch.rand(2, 3, 112, 112)
    >>> run_branch(model, module, "light", frames, "rgb")[0].shape
    torch.Size([2, 196, 32])
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from workbench.errors import CheckpointError
from workbench.eval.flops import block_flops, encoder_flops
from workbench.methods.ops.routing import feature_names
from workbench.models.config import TinyVLMConfig
from workbench.models.encoder import MODALITY_CHANNELS, patchify
from workbench.models.io import read_module_metadata, write_module
from workbench.models.tinyvlm import TinyVLM

BRANCHES: tuple[str, ...] = ("skip", "light", "medium", "full")
SKIP, LIGHT, MEDIUM, FULL = range(4)
FORMAT = "workbench-anc/1"


@dataclass(frozen=True)
class ANCModuleConfig:
    """Architecture of the ANC parts (saved in the checkpoint). `for_model` fills the defaults from a TinyVLM."""

    enc_dim: int
    enc_depth: int
    num_patches: int
    medium_blocks: int  # shared encoder blocks run by `medium` (2 of 4 on the full-size model)
    light_hidden: int  # light adapter MLP width (2·D: 128→256→128)
    medium_hidden: int  # medium adapter MLP width (D)
    router_hidden: int = 32
    change_level: float = 0.02  # a patch "changed" when its energy exceeds the frame's median by this much
    base_model: str = ""  # name of the TinyVLM the adapters were trained against
    branches: tuple[str, ...] = BRANCHES

    @property
    def n_features(self) -> int:
        return len(feature_names(self.branches))

    @classmethod
    def for_model(cls, mcfg: TinyVLMConfig, **overrides) -> "ANCModuleConfig":
        """Defaults for a base model config.

        >>> ANCModuleConfig.for_model(TinyVLMConfig()).medium_blocks
        2
        """
        base = cls(enc_dim=mcfg.enc_dim, enc_depth=mcfg.enc_depth, num_patches=mcfg.num_patches,
                   medium_blocks=max(1, mcfg.enc_depth // 2), light_hidden=2 * mcfg.enc_dim,
                   medium_hidden=mcfg.enc_dim, base_model=mcfg.name)
        return replace(base, **overrides)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ANCModuleConfig":
        raw = json.loads(text)
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown ANC config fields {sorted(unknown)}")
        raw["branches"] = tuple(raw.get("branches", BRANCHES))
        return cls(**raw)


class TokenAdapter(nn.Module):
    """Token-wise MLP W₂·GELU(W₁·LN(x)) (no attention) that predicts the *normalised* encoder token directly.

    The encoder's tokens are the last block's output through LayerNorm and a per-modality running norm whose
    variances are tiny (≈1e-5): any adapter output routed through that norm has its errors amplified a
    thousandfold (the first stage-3 run started at a relative error of ~10³). Predicting in the normalised
    space instead starts at relative error 1 (W₂ = 0 → the zero token) and learns from there."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(self.norm(x))))


class Router(nn.Module):
    """Tiny MLP: router features (..., F) → branch logits (..., K)."""

    def __init__(self, n_features: int, hidden: int, n_branches: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, n_branches))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net(feats)


class ANCModule(nn.Module):
    """The trainable parts of ANC: `light` and `medium` adapters and the `router`."""

    def __init__(self, cfg: ANCModuleConfig):
        super().__init__()
        if cfg.branches != BRANCHES:
            raise ValueError(f"branches must be {BRANCHES}, got {cfg.branches}")
        if not 1 <= cfg.medium_blocks <= cfg.enc_depth:
            raise ValueError(f"medium_blocks must be in 1..{cfg.enc_depth}, got {cfg.medium_blocks}")
        self.cfg = cfg
        self.light = TokenAdapter(cfg.enc_dim, cfg.light_hidden)
        self.medium = TokenAdapter(cfg.enc_dim, cfg.medium_hidden)
        self.router = Router(cfg.n_features, cfg.router_hidden, len(cfg.branches))

    @classmethod
    def for_model(cls, model: TinyVLM, seed: int = 0, **overrides) -> "ANCModule":
        """A freshly initialised module (deterministic given `seed`) matching `model`'s encoder."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(ANCModuleConfig.for_model(model.cfg, **overrides)).eval()

    def check_compatible(self, model: TinyVLM) -> None:
        """Raise CheckpointError when the module does not fit `model`'s encoder."""
        c, m = self.cfg, model.cfg
        if (c.enc_dim, c.enc_depth, c.num_patches) != (m.enc_dim, m.enc_depth, m.num_patches):
            raise CheckpointError(f"ANC module built for encoder (dim {c.enc_dim}, depth {c.enc_depth}, "
                                  f"{c.num_patches} patches) cannot run on {m.name!r} (dim {m.enc_dim}, "
                                  f"depth {m.enc_depth}, {m.num_patches} patches)")


# ---- checkpoints ---------------------------------------------------------------------------------------------

def save_anc(module: ANCModule, path: str | os.PathLike, info: dict | None = None) -> None:
    """Write the module's weights + config + `info` (JSON provenance) to one safetensors file, atomically.

    >>> import tempfile
    >>> from workbench.models.registry import create_model
    >>> m = ANCModule.for_model(create_model("tinyvlm-debug"))
    >>> p = Path(tempfile.mkdtemp()) / "anc.safetensors"
    >>> save_anc(m, p, {"steps": 0}); load_anc(p).cfg == m.cfg
    True
    """
    write_module(module, module.cfg.to_json(), FORMAT, path, info)


def read_anc_metadata(path: str | os.PathLike) -> dict:
    """The file's `info` dict plus `config` (a dict), without loading tensors."""
    return read_module_metadata(path, FORMAT, "an ANC checkpoint", "file")


def load_anc(path: str | os.PathLike) -> ANCModule:
    """Build an `ANCModule` from a file written by `save_anc` (strict: every tensor must match), in eval mode."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: ANC checkpoint not found")
    info = read_anc_metadata(path)
    try:
        module = ANCModule(ANCModuleConfig.from_json(json.dumps(info["config"])))
        module.load_state_dict(load_file(str(path)), strict=True)
    except (SafetensorError, RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: ANC weights do not match their config ({e})") from e
    return module.eval()


# ---- branch execution ----------------------------------------------------------------------------------------

@dataclass
class BranchCache:
    """Per-clip keys/values of every encoder block at the latest computation of each token (1, h, N, hd).

    Only needed for partial (token_index) runs of `medium` / `full`; a block without an entry forces a dense
    run of that branch, which fills it.
    """

    k: list[torch.Tensor | None]
    v: list[torch.Tensor | None]

    @classmethod
    def empty(cls, depth: int) -> "BranchCache":
        return cls([None] * depth, [None] * depth)

    @classmethod
    def from_layers(cls, layers) -> "BranchCache":
        """Share an STTF `EncoderCache.layers` list (objects with `.k`, `.v` of shape (1, h, N, hd))."""
        return cls([c.k for c in layers], [c.v for c in layers])


def embed_tokens(model: TinyVLM, frames: torch.Tensor, modality: str,
                 token_index: torch.Tensor | None = None) -> torch.Tensor:
    """Stem + position embedding of all tokens (F, N, D) or only `token_index` (K,) → (F, K, D)."""
    enc = model.encoder
    if token_index is None:
        return enc.embed(frames, modality)
    patches = patchify(frames, enc.patch_size)[:, token_index]  # (F, N, C·p·p) → (F, K, C·p·p)
    return enc.stems[modality](patches) + enc.pos_embed[:, token_index]


def _block_dense(blk, x: torch.Tensor, cache: BranchCache, i: int) -> torch.Tensor:
    """Block.forward over all tokens (same ops, same numbers), storing its keys/values in the cache."""
    q, k, v = blk.attn.qkv(blk.ln1(x))
    cache.k[i], cache.v[i] = k, v
    x = x + blk.attn.attend(q, k, v)
    return blk.hook_out(x + blk.mlp(blk.ln2(x)))


def _block_partial(blk, x_sel: torch.Tensor, idx: torch.Tensor, cache: BranchCache, i: int) -> torch.Tensor:
    """The block for the selected tokens only (1, K, D): their queries attend over all N keys (cached keys
    and values of the others, fresh ones of the selected, which also update the cache). Approximation: the
    other tokens' outputs are not refreshed. The block's hook is not called (partial shape)."""
    q, k, v = blk.attn.qkv(blk.ln1(x_sel))  # each (1, h, K, hd)
    keys, vals = cache.k[i].clone(), cache.v[i].clone()  # (1, h, N, hd)
    keys[:, :, idx], vals[:, :, idx] = k, v
    cache.k[i], cache.v[i] = keys, vals
    x = x_sel + blk.attn.attend(q, keys, vals)
    return x + blk.mlp(blk.ln2(x))


def _branch_blocks(model: TinyVLM, module: ANCModule, name: str) -> int:
    return {"light": 0, "medium": module.cfg.medium_blocks, "full": len(model.encoder.blocks)}[name]


def _finish(model: TinyVLM, module: ANCModule, name: str, x: torch.Tensor, modality: str) -> torch.Tensor:
    if name == "light":
        return model.encoder.hook_out(module.light(x))  # adapters predict normalised tokens (TokenAdapter)
    if name == "medium":
        return model.encoder.hook_out(module.medium(x))
    return model.encoder.finish(x, modality)


def run_branch(model: TinyVLM, module: ANCModule, name: str, frames: torch.Tensor, modality: str,
               prev_tokens: torch.Tensor | None = None, token_index: torch.Tensor | None = None,
               cache: BranchCache | None = None) -> tuple[torch.Tensor, int]:
    """Run one branch on frames (F, C, H, W) → (tokens (F, N, D), tokens computed per frame).

    skip: returns `prev_tokens` (F, N, D) (required). token_index (K,) long: compute only those tokens of a
    single frame (F = 1) and take the others from `prev_tokens`; blocks need `cache` entries (else the branch
    runs densely and fills them). With cache=None and no token_index, `full` is exactly `model.encoder`.

    >>> from workbench.models.registry import create_model
    >>> model = create_model("tinyvlm-debug"); module = ANCModule.for_model(model)
    >>> f = torch.rand(1, 3, 112, 112)
    >>> full, n = run_branch(model, module, "full", f, "rgb")
    >>> torch.equal(full, model.encoder(f, "rgb")), n
    (True, 196)
    >>> part, k = run_branch(model, module, "light", f, "rgb", full, torch.tensor([0, 5]))
    >>> k, torch.equal(part[:, 1:5], full[:, 1:5])
    (2, True)
    """
    if name not in BRANCHES:
        raise ValueError(f"branch must be one of {BRANCHES}, not {name!r}")
    n = model.cfg.num_patches
    if name == "skip":
        if prev_tokens is None:
            raise ValueError("skip needs the previous frame's tokens (it can never run at frame 0)")
        return prev_tokens, 0
    depth = _branch_blocks(model, module, name)
    blocks = model.encoder.blocks[:depth]
    if token_index is not None:
        if frames.shape[0] != 1 or prev_tokens is None:
            raise ValueError("token_index needs a single frame (F = 1) and prev_tokens")
        ready = cache is not None and all(cache.k[i] is not None for i in range(depth))
        if depth == 0 or ready:
            idx = token_index.to(torch.long)
            x = embed_tokens(model, frames, modality, idx)  # (1, K, D)
            for i, blk in enumerate(blocks):
                x = _block_partial(blk, x, idx, cache, i)
            out = prev_tokens.clone()
            out[:, idx] = _finish(model, module, name, x, modality)
            return out, int(idx.numel())
    if name == "full" and cache is None:
        return model.encoder(frames, modality), n
    x = embed_tokens(model, frames, modality)
    for i, blk in enumerate(blocks):
        x = blk(x) if cache is None else _block_dense(blk, x, cache, i)
    return _finish(model, module, name, x, modality), n  # finish() passes hook_out for every branch


def all_branch_tokens(model: TinyVLM, module: ANCModule, frames: torch.Tensor, modality: str) -> dict:
    """Training path: light / medium / full tokens (F, N, D) of every frame in one pass sharing the stem and
    the first blocks. The frozen base runs without gradient; the adapters get gradients."""
    enc = model.encoder
    m = module.cfg.medium_blocks
    with torch.no_grad():
        emb = enc.embed(frames, modality)
        x = emb
        for blk in enc.blocks[:m]:
            x = blk(x)
        trunk = x
        for blk in enc.blocks[m:]:
            x = blk(x)
        full = enc.finish(x, modality)
    return {"light": enc.hook_out(module.light(emb)), "medium": enc.hook_out(module.medium(trunk)),
            "full": full}


# ---- accounting ----------------------------------------------------------------------------------------------

def analytic_branch_flops(mcfg: TinyVLMConfig, cfg: ANCModuleConfig, modality: str) -> dict[str, int]:
    """Analytic FLOPs per frame of every branch and of the router (METHODS.md §7 convention).

    >>> from workbench.models.config import TinyVLMConfig
    >>> mc = TinyVLMConfig()
    >>> f = analytic_branch_flops(mc, ANCModuleConfig.for_model(mc), "rgb")
    >>> round(f["light"] / f["full"], 3), round(f["medium"] / f["full"], 3)
    (0.089, 0.545)
    """
    n, d = mcfg.num_patches, mcfg.enc_dim
    patch_dim = MODALITY_CHANNELS[modality] * mcfg.patch_size ** 2
    stem = 2 * n * patch_dim * d
    blk = block_flops(n, n, d, int(d * mcfg.enc_mlp_ratio))
    adapter = lambda h: 2 * n * d * h * 2  # noqa: E731
    h, k = cfg.router_hidden, len(cfg.branches)
    return {"skip": 0, "light": stem + adapter(cfg.light_hidden),
            "medium": stem + cfg.medium_blocks * blk + adapter(cfg.medium_hidden),
            "full": encoder_flops(n, 1, d, mcfg.enc_depth, mcfg.enc_mlp_ratio, patch_dim),
            "router": 2 * (cfg.n_features * h + h * h + h * k)}
