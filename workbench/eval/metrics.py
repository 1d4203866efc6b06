"""COCO caption metrics — BLEU-1…4, METEOR, ROUGE-L, CIDEr (and SPICE where it can run) — via pycocoevalcap.

The computation is the official coco-caption one: both sides go through pycocoevalcap's Stanford
PTBTokenizer (Java; lower-cases and drops punctuation), then each scorer gets {id: [hypothesis]} and
{id: [references]}. Scores are on pycocoevalcap's scales: BLEU / METEOR / ROUGE-L in [0, 1], CIDEr (the
CIDEr-D variant, ×10) roughly in [0, 10].

Caveats:
- CIDEr weights n-grams by IDF computed from the *references of the scored set itself*, so it is unstable
  on tiny sets (a handful of images) and not comparable between sets of different size or content;
  compare CIDEr only on the same, reasonably large (≥ a few hundred images) set.
- BLEU is a corpus-level score (n-gram counts pooled over all images), not the mean of `per_image`.
- METEOR runs one Java process per Python process (started lazily, ~10–20 s for the first call, ~1 GB RAM,
  closed at exit). pycocoevalcap's METEOR wrapper keeps its lock after any exception and then hangs on the
  next call, so inputs are validated first and an instance that fails anyway is discarded.
- SPICE needs the Stanford CoreNLP jars, which pycocoevalcap downloads on first use. They are looked for
  without triggering the download; when absent, `spice` is None and `spice_status` says why.

    >>> s = score_captions({"1": "a dog runs on the grass"},
    ...                    {"1": ["a dog running on grass", "a brown dog runs across a lawn"]})  # doctest: +SKIP
    >>> round(s.bleu1, 3), s.spice, s.spice_status.split(":")[0]  # doctest: +SKIP
    (0.833, None, 'unavailable')
"""
from __future__ import annotations

import atexit
import contextlib
import importlib.util
import io
import math
import shutil
import subprocess
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider")
_CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


@dataclass
class CaptionScores:
    """Corpus scores of a caption set, per-image scores and what happened to SPICE."""

    bleu1: float
    bleu2: float
    bleu3: float
    bleu4: float
    meteor: float
    rouge_l: float
    cider: float
    spice: float | None
    spice_status: str
    n_images: int
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self, per_image: bool = True) -> dict:
        """Plain, JSON-serialisable dict (per-image scores included unless per_image=False).

            >>> CaptionScores(*[0.5] * 7, None, "unavailable", 1).to_dict()["spice"] is None
            True
        """
        d = asdict(self)
        if not per_image:
            d.pop("per_image")
        return d


def normalize_caption(text: str) -> str:
    """One line, single spaces, no control characters (what the Java tools need).

        >>> normalize_caption("  A dog\\n on\\tthe  grass. ")
        'A dog on the grass.'
    """
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    return " ".join(text.split())


def spice_available() -> tuple[bool, str]:
    """Whether SPICE can run here, decided from the installed files only (never triggers a download).

        >>> spice_available()[1].split(":")[0] in ("ok", "unavailable")
        True
    """
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return False, "unavailable: pycocoevalcap is not installed"
    spice_dir = Path(list(spec.submodule_search_locations)[0]) / "spice"
    missing = [n for n in _CORENLP_JARS if not (spice_dir / "lib" / n).is_file()]
    if missing:
        return False, (f"unavailable: SPICE needs the Stanford CoreNLP jars ({', '.join(missing)}) in "
                       f"{spice_dir / 'lib'}, which pycocoevalcap downloads at first use; the workbench runs "
                       f"offline and does not attempt the download")
    if not (spice_dir / "spice-1.0.jar").is_file():
        return False, f"unavailable: {spice_dir / 'spice-1.0.jar'} is missing"
    if shutil.which("java") is None:
        return False, "unavailable: SPICE needs Java, and `java` is not on PATH"
    return True, "ok"


def score_captions(hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]], *,
                   spice: bool = True) -> CaptionScores:
    """Score one hypothesis per id against that id's references with the COCO caption metrics.

    hypotheses: id → one caption; references: id → list of captions (≥ 1 non-empty). Both must have exactly
    the same ids. Whitespace (incl. newlines) is normalised; empty references are dropped. Raises ValueError
    on malformed input (a programming error, not a user file) before any Java tool is involved.
    spice=False skips SPICE even where it could run (it is slow and needs ~8 GB of Java heap).

        >>> refs = {"a": ["a man rides a horse", "a person riding a horse"], "b": ["two cats sleep on a bed"]}
        >>> s = score_captions({"a": "a man riding a horse", "b": "cats on a bed"}, refs)  # doctest: +SKIP
        >>> s.n_images, sorted(s.per_image["a"])[:2]  # doctest: +SKIP
        (2, ['bleu1', 'bleu2'])
    """
    ids, hyps, refs = _validate(hypotheses, references)
    if shutil.which("java") is None:
        raise RuntimeError("pycocoevalcap's tokenizer and METEOR need Java, and `java` is not on PATH")
    gts, res = _tokenize(ids, hyps, refs)

    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its internals
        bleu, bleu_per = Bleu(4).compute_score(gts, res, verbose=0)
    meteor, meteor_per = _meteor_score(gts, res)
    rouge, rouge_per = Rouge().compute_score(gts, res)
    cider, cider_per = Cider().compute_score(gts, res)
    per_image = {
        i: {"bleu1": float(bleu_per[0][k]), "bleu2": float(bleu_per[1][k]), "bleu3": float(bleu_per[2][k]),
            "bleu4": float(bleu_per[3][k]), "meteor": float(meteor_per[k]), "rouge_l": float(rouge_per[k]),
            "cider": float(cider_per[k])}
        for k, i in enumerate(ids)}
    spice_score, status = None, "skipped: spice=False"
    if spice:
        spice_score, status = _spice_score(gts, res, ids, per_image)
    return CaptionScores(bleu1=float(bleu[0]), bleu2=float(bleu[1]), bleu3=float(bleu[2]), bleu4=float(bleu[3]),
                         meteor=float(meteor), rouge_l=float(rouge), cider=float(cider), spice=spice_score,
                         spice_status=status, n_images=len(ids), per_image=per_image)


def _validate(hypotheses, references) -> tuple[list, dict, dict]:
    """Check and normalise the inputs; returns (ids in hypothesis order, {id: hyp}, {id: [refs]})."""
    if not isinstance(hypotheses, Mapping) or not isinstance(references, Mapping):
        raise ValueError("hypotheses and references must be dicts keyed by image/clip id")
    if not hypotheses:
        raise ValueError("no hypotheses to score")
    hyp_ids, ref_ids = set(hypotheses), set(references)
    if hyp_ids != ref_ids:
        only_h, only_r = sorted(map(str, hyp_ids - ref_ids)), sorted(map(str, ref_ids - hyp_ids))
        raise ValueError("hypotheses and references must have the same ids: "
                         + "; ".join(f"{len(x)} only in {name} (e.g. {', '.join(x[:5])})"
                                     for x, name in ((only_h, "hypotheses"), (only_r, "references")) if x))
    ids = list(hypotheses)
    hyps, refs = {}, {}
    for i in ids:
        h = hypotheses[i]
        if not isinstance(h, str):
            raise ValueError(f"id {i!r}: the hypothesis must be one string, not {type(h).__name__} "
                             f"(exactly one hypothesis per id)")
        hyps[i] = normalize_caption(h).replace("|||", " ")  # '|||' is METEOR's field separator
        if not hyps[i]:
            raise ValueError(f"id {i!r}: the hypothesis is empty")
        r = references[i]
        if isinstance(r, str) or not isinstance(r, Sequence):
            raise ValueError(f"id {i!r}: references must be a list of strings, not {type(r).__name__}")
        if not all(isinstance(x, str) for x in r):
            raise ValueError(f"id {i!r}: every reference must be a string")
        refs[i] = [n for n in (normalize_caption(x).replace("|||", " ") for x in r) if n]
        if not refs[i]:
            raise ValueError(f"id {i!r}: needs at least one non-empty reference")
    return ids, hyps, refs


def _tokenize(ids: list, hyps: dict, refs: dict) -> tuple[dict, dict]:
    """PTB-tokenise both sides in one Java call (line by line, so identical to two separate calls)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    both = {("r", i): [{"caption": c} for c in refs[i]] for i in ids}
    both.update({("h", i): [{"caption": hyps[i]}] for i in ids})
    tok = PTBTokenizer().tokenize(both)
    if len(tok) != len(both) or any(len(tok[k]) != len(v) for k, v in both.items()):
        raise RuntimeError("the PTB tokenizer returned a different number of lines than it was given")
    gts = {i: [c.replace("|||", " ") for c in tok[("r", i)]] for i in ids}  # same key order on both sides
    res = {i: [tok[("h", i)][0].replace("|||", " ")] for i in ids}
    return gts, res


# --- METEOR: one Java process per Python process ---------------------------------------------------------

_meteor = None
_meteor_lock = threading.Lock()
_atexit_registered = False


def _meteor_score(gts: dict, res: dict) -> tuple[float, list[float]]:
    """METEOR through the shared instance; an instance that raised is discarded (its lock stays held)."""
    global _meteor, _atexit_registered
    from pycocoevalcap.meteor.meteor import Meteor

    with _meteor_lock:
        if _meteor is None:
            _meteor = Meteor()
            if not _atexit_registered:
                atexit.register(close_meteor)
                _atexit_registered = True
        m = _meteor
        try:
            score, scores = m.compute_score(gts, res)
        except Exception as e:
            _meteor = None
            _discard(m)
            raise RuntimeError(f"METEOR failed ({type(e).__name__}: {e}); its Java process was stopped and the "
                               f"next call starts a new one") from e
        except BaseException:  # e.g. KeyboardInterrupt mid-call: same cleanup
            _meteor = None
            _discard(m)
            raise
        return float(score), [float(s) for s in scores]


def _discard(m) -> None:
    """Stop a METEOR instance's Java process without waiting on its (possibly stuck) lock."""
    m.lock = threading.Lock()  # a fresh lock, so pycocoevalcap's __del__ cannot block forever
    p = m.meteor_p
    for pipe in (p.stdin, p.stdout, p.stderr):
        with contextlib.suppress(OSError, ValueError):
            if pipe is not None:
                pipe.close()
    with contextlib.suppress(OSError):
        p.kill()
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        p.wait(timeout=10)


def close_meteor() -> None:
    """Stop the shared METEOR Java process (runs at interpreter exit; the next score starts a new one).

        >>> close_meteor()  # safe at any time, also when none is running
    """
    global _meteor
    got = _meteor_lock.acquire(timeout=5)
    try:
        m, _meteor = _meteor, None
        if m is not None:
            _discard(m)
    finally:
        if got:
            _meteor_lock.release()


def _meteor_instance():
    """The shared METEOR instance, or None when none is running (for tests and diagnostics)."""
    return _meteor


# --- SPICE -----------------------------------------------------------------------------------------------

def _spice_score(gts: dict, res: dict, ids: list, per_image: dict) -> tuple[float | None, str]:
    ok, status = spice_available()
    if not ok:
        return None, status
    from pycocoevalcap.spice.spice import Spice

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            score, scores = Spice().compute_score(gts, res)
    except (subprocess.CalledProcessError, OSError, ValueError, KeyError) as e:
        return None, f"failed: SPICE could not run ({type(e).__name__}: {e})"
    if not math.isfinite(float(score)):
        return None, "failed: SPICE returned no valid score"
    # pycocoevalcap's SPICE sorts the ids; map its per-image scores back by that order
    for i, s in zip(sorted(ids), scores):
        per_image[i]["spice"] = float(s["All"]["f"])
    return float(score), "ok"
