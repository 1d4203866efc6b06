"""LoRA-style adapters and the trainable set of AKD (METHODS.md §5.2).

`add_adapters` swaps every attention / MLP projection of the encoder and decoder blocks (`qkv_proj`, `out_proj`,
`fc1`, `fc2`) for a `LoRALinear` — the same module with the same `weight` / `bias` parameters (so state-dict
names of the base weights do not change) plus `lora_A` (r × in, seeded init) and `lora_B` (out × r, zeros):
y = x Wᵀ + b + (α / r) · (x Aᵀ) Bᵀ. With B = 0 the output is exactly the base output, so a fresh adapter changes
nothing (tested). Our own ~60 lines rather than HF `peft`: the device and the cloud must build identical
adapters from a seed and name tensors the same way on both ends of the wire, and TinyVLM's blocks are plain
`nn.Linear`s that STTF's partial encoder calls directly — a module swap keeps every call site working.

`trainable_names(model, "adapters")` = LoRA A/B + every LayerNorm weight/bias + every bias of the blocks'
projections + the projector (the set Cdcca names, with the LoRA rank actually set) + the patch stems (the
encoder's input projections, 24.6 k weights for RGB: the layer a sensor shift hits first; like the projector
they are small enough to train in full); "full" = every parameter.

    >>> import torch
    >>> from workbench.models.registry import create_model
    >>> m = create_model("tinyvlm-debug")
    >>> x = torch.randn(2, 5, 32)
    >>> before = m.decoder.blocks[0](x)
    >>> add_adapters(m, rank=4, seed=0)
    8
    >>> torch.equal(m.decoder.blocks[0](x), before)
    True
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from workbench.models.tinyvlm import TinyVLM

TARGETS = ("attn.qkv_proj", "attn.out_proj", "mlp.fc1", "mlp.fc2")


class LoRALinear(nn.Linear):
    """nn.Linear + a low-rank update (α / r) · B A; shares `weight` / `bias` with the module it replaces."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.rank, self.scaling = rank, alpha / rank
        a = torch.empty(rank, base.in_features)
        bound = 1.0 / math.sqrt(base.in_features)
        a.uniform_(-bound, bound, generator=generator)
        self.lora_A = nn.Parameter(a.to(base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling


def add_adapters(model: TinyVLM, rank: int = 8, alpha: float = 16.0, seed: int = 0,
                 sides: tuple[str, ...] = ("encoder", "decoder")) -> int:
    """Swap the blocks' projections of `sides` for LoRALinear in place (A drawn from `seed`, in module order);
    returns how many were swapped. Calling it twice raises (the adapters are already there)."""
    gen = torch.Generator().manual_seed(seed)
    count = 0
    for side in sides:
        for blk in getattr(model, side).blocks:
            for path in TARGETS:
                parent_name, attr = path.split(".")
                parent = getattr(blk, parent_name)
                lin = getattr(parent, attr)
                if isinstance(lin, LoRALinear):
                    raise ValueError("the model already has adapters")
                setattr(parent, attr, LoRALinear(lin, rank, alpha, gen))
                count += 1
    return count


_ADAPTER_SET = [r"lora_[AB]$", r"(^|\.)(ln1|ln2|norm)\.(weight|bias)$",
                r"\.(qkv_proj|out_proj|fc1|fc2)\.bias$", r"^projector\.weight$", r"^encoder\.stems\.\w+\.(weight|bias)$"]


def trainable_names(model: TinyVLM, kind: str = "adapters", stems: bool = True) -> list[str]:
    """Names of the parameters AKD trains: 'adapters' (LoRA + norms + block biases + projector, + the patch
    stems unless stems=False) or 'full'.
    The gesture head is never trained here (captions only), nor the domain router (fitted apart, router.py).

        >>> from workbench.models.registry import create_model
        >>> m = create_model("tinyvlm-debug"); _ = add_adapters(m, 2)
        >>> "projector.weight" in trainable_names(m), "decoder.tok_embed.weight" in trainable_names(m)
        (True, False)
    """
    names = [n for n, _ in model.named_parameters() if not n.startswith(("gesture_head.", "domain_router."))]
    if kind == "full":
        return names
    if kind != "adapters":
        raise ValueError(f"kind must be 'adapters' or 'full', not {kind!r}")
    patterns = _ADAPTER_SET if stems else _ADAPTER_SET[:-1]
    return [n for n in names if any(re.search(p, n) for p in patterns)]


def named_tensors(model: TinyVLM, names: list[str]) -> dict[str, torch.Tensor]:
    """{name: detached CPU copy} of the given parameters."""
    params = dict(model.named_parameters())
    return {n: params[n].detach().cpu().clone() for n in names}


@torch.no_grad()
def load_tensors(model: TinyVLM, values: dict[str, torch.Tensor]) -> None:
    """Copy `values` into the model's parameters of the same names (shapes checked first, all or nothing)."""
    params = dict(model.named_parameters())
    for n, v in values.items():
        if n not in params or params[n].shape != v.shape:
            raise ValueError(f"{n}: no parameter of shape {tuple(v.shape)} in the model")
    for n, v in values.items():
        params[n].copy_(v)
