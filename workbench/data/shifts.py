"""Named, seeded domain shifts of ShapesWorld: the data a device model meets after deployment (METHODS.md §5).

A shift is a pure transform of a rendered clip's frames, parameterised by a frozen `Shift` and seeded by
(domain, clip seed), so `shifted_clip("night", 7)` is the same clip on every machine. Captions, QA and the
motion mask are the source clip's: the world did not change, only the sensor that sees it.

Domains (`DOMAINS`, in this order; the first is the default of `workbench adapt`):

- `night`: low light with sensor noise — exposure gain 0.22, gamma 1.35 (crushed shadows), Poisson shot noise
  at 40 photo-electrons per unit intensity plus Gaussian read noise σ = 0.03 (per pixel and frame).
- `palette`: an unseen sensor palette — the colour channels mixed by a fixed matrix (a 140° hue rotation in
  YIQ space) with saturation 0.7: every object keeps its name, but not the colour the model learnt for it.
- `haze`: fog / veiling glare — contrast scaled by 0.4 towards a bright veil (0.55) with faint per-pixel
  scatter noise (σ = 0.01).

Measured on the shipped `tinyvlm-shapes` (60 held-out clips each, 2026-12): CIDEr source 1.40, night 0.18,
palette 0.56, haze 0.27 (40 clips). Camera shake with motion blur was tried and dropped: the model is robust to it
(CIDEr 1.19–1.33 even at σ 5 px/frame + 19-px blur), so it is no hard domain.

Seed roles are disjoint ranges (`domain_seeds`): held-out evaluation clips are the ShapesWorld *test* seeds
(0–499) under the shift; the device's stream and the teacher's training clips come from separate slices of the
*train* range, different per domain. No seed is in two roles (tested).

    >>> c = shifted_clip("night", 3)
    >>> c.meta["domain"], c.frames.shape, float(c.frames.mean()) < float(shifted_clip("source", 3).frames.mean())
    ('night', (16, 3, 112, 112), True)
    >>> list(domain_seeds("palette", "eval", 3))
    [0, 1, 2]
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from workbench.data.clip import Clip
from workbench.data.shapesworld import make_clip
from workbench.errors import InputError

ROLES = ("eval", "stream", "teacher")
STREAM_BASE = 7_000_000  # + 100 000 · domain index: the device's stream (train range, never trained on before)
TEACHER_BASE = 8_000_000  # + 100 000 · domain index: the teacher's fine-tuning clips
ROLE_SPAN = 100_000


@dataclass(frozen=True)
class Shift:
    """One domain's transform knobs (identity at the defaults), applied in this order:

    hue_deg, saturation: a YIQ hue rotation and chroma scale (one 3×3 colour matrix); contrast, veil: haze,
    x → contrast · x + veil; gain, gamma: exposure, x → (gain · x) ** gamma; photons: Poisson shot noise at this
    many photo-electrons per unit intensity (None = none); read_noise: Gaussian σ added last.
    """

    name: str
    description: str
    hue_deg: float = 0.0
    saturation: float = 1.0
    contrast: float = 1.0
    veil: float = 0.0
    gain: float = 1.0
    gamma: float = 1.0
    photons: float | None = None
    read_noise: float = 0.0


DOMAINS: dict[str, Shift] = {
    "night": Shift("night", "low light with sensor noise (gain 0.22, gamma 1.35, shot + read noise)",
                   gain=0.22, gamma=1.35, photons=40.0, read_noise=0.03),
    "palette": Shift("palette", "unseen sensor palette (140 deg hue rotation, saturation 0.7)",
                     hue_deg=140.0, saturation=0.7),
    "haze": Shift("haze", "fog / veiling glare (contrast 0.4 over a 0.55 veil, scatter noise 0.01)",
                  contrast=0.4, veil=0.55, read_noise=0.01),
}
SOURCE = Shift("source", "the training distribution (no shift)")


def get_shift(domain: str) -> Shift:
    """The `Shift` of a named domain ('source' = identity); InputError naming the known ones otherwise.

        >>> get_shift("haze").contrast
        0.4
    """
    if domain == "source":
        return SOURCE
    if domain not in DOMAINS:
        raise InputError("--domain", f"unknown domain {domain!r}; known: {', '.join(DOMAINS)} (or 'source')")
    return DOMAINS[domain]


def domain_seeds(domain: str, role: str, n: int, offset: int = 0) -> range:
    """The n clip seeds of a domain for a role: 'eval' (held out: ShapesWorld test seeds), 'stream' (what the
    device sees) or 'teacher' (the teacher's fine-tuning data). Disjoint across roles and (stream, teacher)
    across domains.

        >>> domain_seeds("night", "stream", 2)
        range(7100000, 7100002)
    """
    if role not in ROLES:
        raise InputError("role", f"must be one of {ROLES}, not {role!r}")
    if role == "eval":
        if offset + n > 500:
            raise InputError("n", f"only 500 held-out test seeds exist (asked for {offset}+{n})")
        return range(offset, offset + n)
    index = 0 if domain == "source" else list(DOMAINS).index(get_shift(domain).name) + 1
    base = (STREAM_BASE if role == "stream" else TEACHER_BASE) + ROLE_SPAN * index
    if offset + n > ROLE_SPAN:
        raise InputError("n", f"at most {ROLE_SPAN} seeds per role")
    return range(base + offset, base + offset + n)


def shift_rng(domain: str, seed: int) -> np.random.Generator:
    """The noise generator of one (domain, clip seed), stable across numpy versions."""
    key = int.from_bytes(hashlib.sha256(domain.encode()).digest()[:4], "little")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([key, int(seed)])))


def _colour_matrix(hue_deg: float, saturation: float) -> np.ndarray:
    """(3, 3) RGB → RGB: to YIQ, rotate the chroma plane by hue_deg and scale it, back to RGB."""
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    a = np.deg2rad(hue_deg)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rot[1:, 1:] *= saturation
    return np.linalg.inv(to_yiq) @ rot @ to_yiq


def apply_shift(frames: np.ndarray, shift: Shift, rng: np.random.Generator) -> np.ndarray:
    """RGB frames (T, 3, H, W) in [0, 1] → the shifted frames (same shape, float32, in [0, 1]).

        >>> f = np.full((2, 3, 112, 112), 0.5, np.float32)
        >>> np.array_equal(apply_shift(f, SOURCE, shift_rng("source", 0)), f)
        True
    """
    if shift == SOURCE:
        return frames
    x = frames.astype(np.float64)
    if shift.hue_deg or shift.saturation != 1.0:
        m = _colour_matrix(shift.hue_deg, shift.saturation)
        x = np.einsum("ij,tjhw->tihw", m, x)
    if shift.contrast != 1.0 or shift.veil:
        x = shift.contrast * x + shift.veil
    if shift.gain != 1.0 or shift.gamma != 1.0:
        x = np.clip(x * shift.gain, 0.0, 1.0) ** shift.gamma
    if shift.photons is not None:
        x = rng.poisson(np.clip(x, 0, None) * shift.photons) / shift.photons
    if shift.read_noise > 0:
        x = x + rng.normal(0.0, shift.read_noise, size=x.shape)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def shifted_clip(domain: str, seed: int, num_frames: int = 16) -> Clip:
    """The ShapesWorld clip of `seed` seen through `domain`'s shift (captions, QA, motion mask unchanged).

        >>> shifted_clip("palette", 0).sample_id
        'palette-0'
    """
    shift = get_shift(domain)
    clip = make_clip(seed, num_frames)
    frames = apply_shift(clip.frames, shift, shift_rng(shift.name, seed))
    meta = {**clip.meta, "domain": shift.name, "shift": shift.description}
    return Clip(frames=frames, modality="rgb", sample_id=f"{shift.name}-{seed}", fps=clip.fps,
                frame_times_us=clip.frame_times_us, motion_mask=clip.motion_mask, captions=clip.captions,
                qa=clip.qa, meta=meta)
