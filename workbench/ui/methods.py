"""The app's method choice and knobs → a pipeline method object (Dense, STTF, ANC, STTF+ANC).

No gradio here. `MethodSpec` is the frozen set of knobs the dashboard exposes; `build_method` turns it into
the object `workbench.pipeline.describe(..., method=...)` takes. Methods that cannot run here raise
`MethodUnavailableError` (an InputError, so the app shows its message and keeps serving):

- ANC needs its trained router/adapters (`data/weights/anc-<model>.safetensors`, `workbench.methods.anc`);
  until they are shipped, ANC and STTF+ANC say so. A module passed in explicitly (tests, notebooks) is used
  instead of the shipped file.
- STTF+ANC needs `workbench.methods.combined.STTFANC(sttf: STTFConfig, anc: ANC)`; without that module the
  mode reports "not available".

The shared, read-only pieces (the ANC module per weights file) are cached per process; everything per input
lives in the session (`session.py`).

    >>> MethodSpec("sttf", tau=0.1).label()
    'STTF (threshold τ=0.1, source pixels)'
    >>> MethodSpec.from_label("STTF+ANC").method
    'sttf+anc'
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from workbench.data.clip import Clip
from workbench.errors import CheckpointError, InputError
from workbench.pipeline import Dense

__all__ = ["METHODS", "METHOD_LABELS", "POLICIES", "SOURCES", "MethodSpec", "MethodUnavailableError",
           "build_method", "method_status", "anc_weights_path"]

METHODS = ("dense", "sttf", "anc", "sttf+anc")
METHOD_LABELS = {"dense": "dense", "sttf": "STTF", "anc": "ANC", "sttf+anc": "STTF+ANC"}
POLICIES = ("threshold", "budget")
SOURCES = ("pixels", "events", "embedding")


class MethodUnavailableError(InputError):
    """The chosen method cannot run in this build (weights or code not shipped yet)."""


@dataclass(frozen=True)
class MethodSpec:
    """The dashboard's knobs. tau: STTF threshold (policy "threshold"); budget: STTF tokens per frame (policy
    "budget", τ calibrated on the clip itself); keyframe_every: 0 = only frame 0 and scene cuts; source:
    STTF change score; hysteresis: ANC switch margin."""

    method: str = "sttf"
    policy: str = "threshold"
    tau: float = 0.05
    budget: int = 31
    keyframe_every: int = 0
    source: str = "pixels"
    hysteresis: float = 0.1

    def __post_init__(self):
        checks = [(self.method in METHODS, f"method must be one of {', '.join(METHODS)}, not {self.method!r}"),
                  (self.policy in POLICIES, f"policy must be one of {', '.join(POLICIES)}, not {self.policy!r}"),
                  (self.source in SOURCES, f"change-score source must be one of {', '.join(SOURCES)}"),
                  (0 <= self.tau <= 10, f"threshold τ must be in [0, 10], not {self.tau}"),
                  (1 <= self.budget <= 196, f"token budget must be 1–196 tokens per frame, not {self.budget}"),
                  (0 <= self.keyframe_every <= 64, f"keyframe interval must be 0–64, not {self.keyframe_every}"),
                  (0 <= self.hysteresis <= 1, f"hysteresis must be in [0, 1], not {self.hysteresis}")]
        for ok, message in checks:
            if not ok:
                raise InputError("settings", message)

    @classmethod
    def from_label(cls, label: str, **knobs) -> "MethodSpec":
        """From the UI's method label ("dense", "STTF", "ANC", "STTF+ANC") or a method name."""
        by_label = {v.lower(): k for k, v in METHOD_LABELS.items()}
        key = str(label).strip().lower()
        return cls(method=by_label.get(key, key), **knobs)

    @property
    def uses_sttf(self) -> bool:
        return self.method in ("sttf", "sttf+anc")

    @property
    def uses_anc(self) -> bool:
        return self.method in ("anc", "sttf+anc")

    def label(self) -> str:
        parts = []
        if self.uses_sttf:
            gate = f"threshold τ={self.tau:g}" if self.policy == "threshold" else f"budget {self.budget} tokens/frame"
            parts.append(f"{gate}, source {self.source}")
            if self.keyframe_every:
                parts.append(f"keyframe every {self.keyframe_every}")
        if self.uses_anc:
            parts.append(f"hysteresis {self.hysteresis:g}")
        name = METHOD_LABELS[self.method]
        return f"{name} ({'; '.join(parts)})" if parts else name

    def relevant(self) -> tuple:
        """The knobs that change this method's result (the cache key of a run)."""
        key: tuple = (self.method,)
        if self.uses_sttf:
            key += (self.policy, self.tau if self.policy == "threshold" else self.budget, self.keyframe_every,
                    self.source)
        if self.uses_anc:
            key += (self.hysteresis,)
        return key


def anc_weights_path(model) -> Path:
    from workbench.methods.anc import shipped_path
    return shipped_path(model)


@lru_cache(maxsize=4)
def _load_anc_module(path: str, mtime_ns: int):
    """One ANC module per weights file version, shared read-only by all sessions."""
    from workbench.methods.anc_modules import load_anc
    return load_anc(path)


def _anc_module(model, module=None):
    if module is not None:
        return module
    path = anc_weights_path(model)
    if not path.is_file():
        raise MethodUnavailableError("ANC", f"the ANC router/adapters for {model.cfg.name!r} are not shipped yet "
                                            f"(data/weights/{path.name} is missing); choose dense or STTF")
    try:
        return _load_anc_module(str(path), path.stat().st_mtime_ns)
    except CheckpointError as e:
        raise MethodUnavailableError("ANC", f"the ANC weights cannot be loaded ({e})") from None


def _combined_class():
    try:
        from workbench.methods.combined import STTFANC
    except ImportError as e:
        raise MethodUnavailableError("STTF+ANC", f"the combined mode is not available in this build ({e})") from None
    return STTFANC


def method_status(label: str, model) -> str:
    """One line for the UI: whether the method can run, and if not, why (never raises)."""
    try:
        spec = MethodSpec.from_label(label)
        if spec.uses_anc:
            module = _anc_module(model)
            module.check_compatible(model)
        if spec.method == "sttf+anc":
            _combined_class()
    except (InputError, CheckpointError) as e:
        return f"⚠ {e}"
    return {"dense": "every patch of every frame through every layer (the baseline)",
            "sttf": "recompute changed patches only; fuse static runs into one decoder token",
            "anc": "a router picks one encoder branch per frame (skip / light / medium / full)",
            "sttf+anc": "STTF's patch gate inside ANC's routed branches"}[spec.method]


def _sttf_config(spec: MethodSpec, model, clip: Clip):
    from workbench.methods.sttf import STTFConfig
    from workbench.methods.sttf_calibration import budget_config
    if spec.source == "events" and clip.patch_event_rate is None:
        raise InputError("change-score source", "'events' needs an event-camera input; use pixels or embedding "
                                                "for a video")
    knobs = {"keyframe_every": spec.keyframe_every or None}
    if spec.policy != "threshold" and hasattr(model, "input_frames"):
        raise InputError("STTF gate policy", "the budget policy calibrates τ on TinyVLM's frames; use the threshold "
                                             "policy with a Hugging Face model")
    if spec.policy == "threshold":
        return STTFConfig(source=spec.source, policy="threshold", tau=float(spec.tau), **knobs)
    try:
        return budget_config(model, [clip], spec.budget / model.cfg.num_patches, spec.source, **knobs)
    except ValueError as e:
        raise InputError("token budget", f"{spec.budget} tokens per frame cannot be met on this clip ({e})") from None


def build_method(spec: MethodSpec, model, clip: Clip, anc_module=None):
    """The pipeline method for `spec` on `clip` (the budget policy calibrates τ on the clip itself)."""
    if spec.method == "dense":
        return Dense()
    if spec.method == "sttf":
        from workbench.methods.sttf import STTF
        return STTF(_sttf_config(spec, model, clip))
    from workbench.methods.anc import ANC, ANCConfig
    module = _anc_module(model, anc_module)
    try:
        module.check_compatible(model)
    except CheckpointError as e:
        raise MethodUnavailableError("ANC", str(e)) from None
    anc = ANC(module, ANCConfig(hysteresis=float(spec.hysteresis)))
    if spec.method == "anc":
        return anc
    return _combined_class()(sttf=_sttf_config(spec, model, clip), anc=anc)  # keywords: field order may change
