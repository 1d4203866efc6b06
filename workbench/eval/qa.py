"""`workbench eval qa`: exact-match accuracy on ShapesWorld's question–answer pairs, overall and per question
type, for any method (encoder side, decoder side or both), beside the dense baseline of the same run.

Each clip is encoded once per method (the encoder side does not depend on the question), then every question
of the clip is answered greedily with the decoder-side method (if any) pruning at prefill. Answers match when
their normalised words are equal (`models.tokenizer.normalise_text`). Prefill FLOPs are counted with
FlopCounterMode on every question, for the method and for dense (count_flops=False: the analytic count, equal
within 2 % — tests/test_decoder_prune.py); `prefill_flops_ratio` = Σ method / Σ dense.

    >>> from workbench.models.registry import create_model
    >>> r = qa_eval(create_model("tinyvlm-debug"), range(0, 2), progress=False)
    >>> r.n, sorted(r.by_type) == sorted(set(r.per_question["type"]))
    (13, True)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import polars as pl
import torch
from tqdm.auto import tqdm

from workbench.data import shapesworld
from workbench.models.tokenizer import normalise_text
from workbench.pipeline import Dense, model_frames, split_method

QUESTION_TYPES = ("count", "background", "color", "shape", "motion", "moving")
MAX_ANSWER_TOKENS = 12


def question_type(question: str) -> str:
    """One of QUESTION_TYPES for a ShapesWorld question (anything else: 'other').

        >>> question_type("what color is the star"), question_type("how does the red circle move")
        ('color', 'motion')
    """
    q = normalise_text(question)
    if q.startswith("how many"):
        return "count"
    if q == "what color is the background":
        return "background"
    if q.startswith("what color is the"):
        return "color"
    if q.startswith("what shape"):
        return "shape"
    if q.startswith("how does"):
        return "motion"
    if q == "what is moving":
        return "moving"
    return "other"


def answers_match(prediction: str, truth: str) -> bool:
    return normalise_text(prediction) == normalise_text(truth)


@dataclass
class QAEval:
    accuracy: float
    by_type: dict[str, float]
    n: int
    dense_accuracy: float | None
    dense_by_type: dict[str, float] | None
    prefill_flops_ratio: float | None  # Σ method prefill FLOPs / Σ dense (FlopCounterMode)
    decoder_keep: float  # mean over questions of the paper's count (1 without a decoder-side method)
    tokens_per_frame: float  # visual tokens entering the decoder, per frame
    last_layer_tokens_per_frame: float
    per_question: pl.DataFrame

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "by_type": self.by_type, "n": self.n, "dense_accuracy": self.dense_accuracy,
                "dense_by_type": self.dense_by_type, "prefill_flops_ratio": self.prefill_flops_ratio,
                "decoder_keep": self.decoder_keep, "tokens_per_frame": self.tokens_per_frame,
                "last_layer_tokens_per_frame": self.last_layer_tokens_per_frame}


def _answer_all(model, clip, method, count: bool) -> list[dict]:
    enc, dec = split_method(method)
    frames = model_frames(model, clip)  # (1, T, C, H, W); a Hugging Face tower's own size and grouping
    with torch.no_grad():
        vt, _ = enc.visual_tokens(model, frames, clip.modality, clip)
    rows = []
    for q, a in clip.qa:
        g = model.generate(vt, q, max_new_tokens=MAX_ANSWER_TOKENS, pruner=dec, count=count, gesture=False)
        st = g.decoder
        rows.append({"sample_id": clip.sample_id, "question": q, "type": question_type(q), "truth": a,
                     "answer": g.texts[0], "correct": answers_match(g.texts[0], a),
                     "prefill_flops": st.flops if count else st.analytic_flops,
                     "prefill_ms": st.ms, "keep": float(st.keep_fraction[0]), "tokens": float(st.n_input[0]),
                     "last_layer": float(st.last_layer[0]), "frames": clip.num_frames,
                     "visual_in": st.visual_in[0].tolist()})
    return rows


def _accuracy(df: pl.DataFrame) -> tuple[float, dict[str, float]]:
    by = {t: float(g["correct"].mean()) for (t,), g in df.group_by("type")}
    return float(df["correct"].mean()), {t: by[t] for t in QUESTION_TYPES + ("other",) if t in by}


def qa_eval(model, seeds: Iterable[int], method=None, with_dense: bool = True, count_flops: bool = True,
            progress: bool = True, dense_rows: pl.DataFrame | None = None, num_frames: int = 16) -> QAEval:
    """Answer every question of the ShapesWorld clips `seeds` (`num_frames` frames each) under `method` (default
    dense) and, unless `with_dense` is False (or `dense_rows` from an earlier `qa_eval(...).per_question` of
    dense is given), under dense too."""
    method = method or Dense()
    seeds = list(seeds)
    rows, dense = [], []
    model.eval()
    for seed in tqdm(seeds, desc=f"qa {method.name}", disable=not progress, unit="clip"):
        clip = shapesworld.make_clip(seed, num_frames)
        rows += _answer_all(model, clip, method, count_flops)
        if with_dense and dense_rows is None and method.name != "dense":
            dense += _answer_all(model, clip, Dense(), count_flops)
    df = pl.DataFrame(rows)
    acc, by = _accuracy(df)
    ddf = dense_rows if dense_rows is not None else (pl.DataFrame(dense) if dense else (df if method.name == "dense" else None))
    d_acc = d_by = ratio = None
    if ddf is not None:
        ddf = ddf.filter(pl.col("sample_id").is_in(df["sample_id"].unique().implode()))
        d_acc, d_by = _accuracy(ddf)
        if ddf["prefill_flops"].sum() > 0:
            ratio = float(df["prefill_flops"].sum() / ddf["prefill_flops"].sum())
    per_frame = lambda col: float((df[col] / df["frames"]).mean())  # noqa: E731
    return QAEval(acc, by, df.height, d_acc, d_by, ratio, float(df["keep"].mean()), per_frame("tokens"),
                  per_frame("last_layer"), df)
