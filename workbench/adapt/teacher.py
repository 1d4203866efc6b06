"""The cloud teacher: the shipped `tinyvlm-shapes` with a domain-specialist input layer per shifted domain.

Recipe (`fit_stem`, seconds per domain): the RGB stem is the encoder's first, linear layer (patch pixels →
embedding). The cloud has what a device has not — paired renders: every teacher training clip exists clean and
shifted (ShapesWorld is procedural). For each domain the stem is refitted in closed form, by ridge regression,
so that stem_d(shift(patch)) ≈ stem(patch) over all patches of `clips` teacher clips (16 frames × 196 patches
each, seeds from the domain's *teacher* range, disjoint from the device's stream and the held-out test seeds):

    [W_d | b_d] = argmin Σ ‖W_d x_shift + b_d − W x_clean‖² + λ·M·‖[W_d | b_d]‖²   (M = number of patches)

Everything after the stem is the shipped model, untouched, so the teacher captions a shifted clip about as the
shipped model captions the clean one — a colour rotation or a haze veil is (nearly) linear per patch and is
undone almost exactly; low light with shot noise only approximately (the fit is the best linear denoiser).
The cloud picks the teacher of the device's domain (`Teacher.for_domain`; 'source' = the shipped model).

Two earlier recipes failed and are kept in the README's history: 300 steps of caption cross-entropy on the whole
model (night 0.54, palette 0.60, source 1.10 CIDEr — the decoder drifted) and 400 steps aligning the whole
encoder's output tokens on the four domains at once (night 0.36, palette 0.23, source 0.76).

The teacher file (`workbench-teacher/1`) holds only the per-domain stems and names its base model; a plain
TinyVLM checkpoint also works as a teacher (the same model for every domain; the tests use one).

    >>> from workbench.models.registry import create_model
    >>> t = Teacher(create_model("tinyvlm-debug"), {})
    >>> t.for_domain("night") is t.for_domain("source")
    True
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from workbench.data.shapesworld import make_clip
from workbench.data.shifts import domain_seeds, shifted_clip
from workbench.errors import CheckpointError
from workbench.methods.ops.gates import patch_pixels
from workbench.models.tinyvlm import TinyVLM

FORMAT = "workbench-teacher/1"


@dataclass(frozen=True)
class TeacherConfig:
    clips: int = 24
    ridge: float = 1e-3
    domains: tuple[str, ...] = ("night", "palette", "haze")


@torch.no_grad()
def fit_stem(model: TinyVLM, domain: str, cfg: TeacherConfig) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(weight (D, C·p·p), bias (D,), relative residual) of the domain's ridge-regressed RGB stem."""
    stem = model.encoder.stems["rgb"]
    w, b = stem.weight.double(), stem.bias.double()
    p = model.cfg.patch_size
    gram = torch.zeros(w.shape[1] + 1, w.shape[1] + 1, dtype=torch.float64)
    cross = torch.zeros(w.shape[1] + 1, w.shape[0], dtype=torch.float64)
    count, target_sq, seeds = 0, 0.0, domain_seeds(domain, "teacher", cfg.clips)
    for seed in seeds:  # accumulate the normal equations clip by clip (flat memory)
        x = patch_pixels(torch.from_numpy(shifted_clip(domain, seed).frames)[None], p)[0].reshape(-1, w.shape[1])
        clean = patch_pixels(torch.from_numpy(make_clip(seed).frames)[None], p)[0].reshape(-1, w.shape[1])
        a = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)  # (M, C·p·p + 1)
        y = clean.double() @ w.T  # (M, D) the clean embedding without its bias
        gram += a.T @ a
        cross += a.T @ y
        count, target_sq = count + len(x), target_sq + float(y.square().sum())
    sol = torch.linalg.solve(gram + cfg.ridge * count * torch.eye(len(gram), dtype=torch.float64), cross)
    resid = float(max(target_sq - 2 * (sol * cross).sum() + (sol * (gram @ sol)).sum(), 0.0)) / max(target_sq, 1e-12)
    return sol[:-1].T.float().contiguous(), (b + sol[-1]).float().contiguous(), resid ** 0.5


def build_teacher(model: TinyVLM, cfg: TeacherConfig) -> tuple[dict[str, torch.Tensor], dict]:
    """Per-domain stems of `model` → (tensors, info)."""
    t0 = time.perf_counter()
    tensors, fits = {}, {}
    for dom in cfg.domains:
        w, b, resid = fit_stem(model, dom, cfg)
        tensors[f"{dom}.weight"], tensors[f"{dom}.bias"] = w, b
        fits[dom] = {"relative_residual": resid}
    return tensors, {"config": asdict(cfg), "fits": fits, "elapsed_s": time.perf_counter() - t0}


def save_teacher(path: str | os.PathLike, tensors: dict, base: str, info: dict) -> None:
    meta = {"format": FORMAT, "base": base, "info": json.dumps(info, sort_keys=True)}
    tmp = Path(str(path) + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


class Teacher:
    """The base model plus per-domain stems; `for_domain(d)` is the model with d's stem (cached)."""

    def __init__(self, base: TinyVLM, stems: dict[str, tuple[torch.Tensor, torch.Tensor]]):
        self.base, self.stems, self._cache = base.eval(), stems, {}

    @property
    def cfg(self):
        return self.base.cfg

    def for_domain(self, domain: str) -> TinyVLM:
        if domain not in self.stems:
            return self.base
        if domain not in self._cache:
            import copy
            m = copy.deepcopy(self.base)
            with torch.no_grad():
                m.encoder.stems["rgb"].weight.copy_(self.stems[domain][0])
                m.encoder.stems["rgb"].bias.copy_(self.stems[domain][1])
            self._cache[domain] = m.eval()
        return self._cache[domain]


def load_teacher(path: str | os.PathLike) -> Teacher:
    """A teacher file (per-domain stems over a named base model) or a plain TinyVLM checkpoint."""
    from workbench.models.io import FORMAT as CHECKPOINT, load_checkpoint
    from workbench.models.registry import create_model
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()} if meta.get("format") == FORMAT else {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable teacher file ({e})") from e
    if meta.get("format") == CHECKPOINT:
        return Teacher(load_checkpoint(path), {})
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: neither a teacher file nor a TinyVLM checkpoint")
    base = create_model(meta["base"])
    domains = sorted({k.split(".")[0] for k in tensors})
    return Teacher(base, {d: (tensors[f"{d}.weight"], tensors[f"{d}.bias"]) for d in domains})
