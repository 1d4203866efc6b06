"""Method names → method objects, for the CLI, the QA evaluation and the benchmarks (one place).

A name is an encoder-side part, a decoder-side part, or both joined by "+": `dense`, `sttf`, `anc`,
`sttf+anc`, `sparsevlm`, `fastv`, `random-prune`, `sttf+sparsevlm`, `sttf+anc+sparsevlm`, … The knobs of all
methods live in one frozen `MethodKnobs`; each method reads the ones it has. The encoder-side baselines
(`tome`, `eventful`, `visionzip`, `random`, `pool`; `methods/budget.py`) read `keep` as their budget: keep · N
tokens per frame to the decoder (default 64 of 196).

    >>> from workbench.models.registry import create_model
    >>> m = build_method("sttf+sparsevlm", create_model("tinyvlm-debug"), MethodKnobs(tau=0.1, keep=0.6))
    >>> m.name, m.encoder.cfg.tau, m.decoder.cfg.keep
    ('sttf+sparsevlm', 0.1, 0.6)
    >>> split_name("sttf+anc+fastv")
    ('sttf+anc', 'fastv')
"""
from __future__ import annotations

from dataclasses import dataclass

from workbench.errors import InputError

ENCODER_METHODS = ("dense", "sttf", "anc", "sttf+anc", "tome", "eventful", "visionzip", "random", "pool")
BASELINES = ("tome", "eventful", "visionzip", "random", "pool")  # issue 15: methods/budget.at_budget
DECODER_METHODS = ("sparsevlm", "fastv", "random-prune")


def method_names() -> tuple[str, ...]:
    """Every runnable name: each encoder-side method alone, each decoder-side one alone and on top of each."""
    names = list(ENCODER_METHODS) + list(DECODER_METHODS)
    names += [f"{e}+{d}" for e in ENCODER_METHODS[1:] for d in DECODER_METHODS]
    return tuple(names)


def split_name(name: str) -> tuple[str, str | None]:
    """(encoder-side name, decoder-side name or None)."""
    name = name.strip().lower()
    if name not in method_names():
        raise InputError("--method", f"unknown method {name!r}; choose one of {', '.join(method_names())}")
    for d in DECODER_METHODS:
        if name == d:
            return "dense", d
        if name.endswith("+" + d):
            return name[: -len(d) - 1], d
    return name, None


@dataclass(frozen=True)
class MethodKnobs:
    """tau: STTF threshold. keep: decoder-side target (the paper's count; None = the method's default).
    rule: SparseVLM fixed | rank. points: pruning depths (None = the method's default). budgets / counts:
    per-depth fractions / token counts (replace keep). recycle: SparseVLM token recycling. K, R: FastV's depth
    and pruned fraction (R is replaced by keep when keep is given). seed: the random control's seed. chunk: STTF
    frames per encoder call (STTFConfig.chunk)."""

    tau: float = 0.05
    keep: float | None = None
    rule: str = "fixed"
    points: tuple[float, ...] | None = None
    budgets: tuple[float, ...] | None = None
    counts: tuple[int, ...] | None = None
    recycle: bool = True
    K: float = 0.5
    R: float = 0.5
    seed: int = 0
    chunk: int = 1


def encoder_method(name: str, model, knobs: MethodKnobs):
    from workbench.pipeline import Dense
    if name == "dense":
        return Dense()
    from workbench.methods.sttf import STTF, STTFConfig
    if name == "sttf":
        return STTF(STTFConfig(tau=knobs.tau, chunk=knobs.chunk))
    if name in BASELINES:
        from workbench.methods.budget import at_budget
        n = model.cfg.num_patches
        extra = {"seed": knobs.seed} if name == "random" else {}
        return at_budget(name, 64 if knobs.keep is None else max(1, round(knobs.keep * n)), model, extra)
    from workbench.models.protocol import is_hf
    if is_hf(model):
        raise InputError(f"--method {name}", "ANC's adapters and router are trained against TinyVLM and run on it "
                                             "only; on a Hugging Face model use sttf, the decoder-side methods "
                                             "(sparsevlm, fastv, random-prune) or sttf+<one of them>")
    from workbench.methods.anc import ANC, ANCConfig, shipped_path
    from workbench.methods.anc_modules import load_anc
    anc = ANC(load_anc(shipped_path(model)), ANCConfig())  # CheckpointError when the router is not shipped
    if name == "anc":
        return anc
    from workbench.methods.combined import STTFANC
    return STTFANC(anc, STTFConfig(tau=knobs.tau))


def decoder_method(name: str, knobs: MethodKnobs):
    budget = {"budgets": knobs.budgets, "counts": knobs.counts}
    explicit = knobs.budgets is not None or knobs.counts is not None
    if name == "sparsevlm":
        from workbench.methods.sparsevlm import SparseVLM, SparseVLMConfig
        keep = {} if knobs.keep is None or explicit else {"keep": knobs.keep}
        return SparseVLM(SparseVLMConfig(points=knobs.points, rule=knobs.rule, recycle=knobs.recycle, **keep, **budget))
    if name == "fastv":
        from workbench.methods.fastv import FastV, FastVConfig
        if explicit or knobs.points is not None:
            raise InputError("--method fastv", "FastV prunes once: set its depth with --K and its budget with --keep "
                                               "or --R (not --points / --budgets / --counts)")
        return FastV(FastVConfig(K=knobs.K, R=knobs.R, keep=knobs.keep))
    from workbench.methods.random_prune import RandomPrune, RandomPruneConfig
    keep = {} if knobs.keep is None or explicit else {"keep": knobs.keep}
    return RandomPrune(RandomPruneConfig(points=knobs.points, seed=knobs.seed, **keep, **budget))


def build_method(name: str, model, knobs: MethodKnobs = MethodKnobs()):
    """The method object for `name` with `knobs` (InputError on an unknown name; CheckpointError when ANC's
    router is not shipped). Decoder-side knobs are checked against the model's decoder here, before any work."""
    enc_name, dec_name = split_name(name)
    enc = encoder_method(enc_name, model, knobs)
    if dec_name is None:
        return enc
    dec = decoder_method(dec_name, knobs)
    dec.plan(len(model.decoder.blocks))  # raises InputError on knobs this decoder cannot run
    if enc_name == "dense":
        return dec
    from workbench.pipeline import Stack
    return Stack(enc, dec)
