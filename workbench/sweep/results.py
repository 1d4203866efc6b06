"""The results table of a sweep: one Parquet file per finished cell, then the whole table with caption metrics,
and one summary record per (method, budget, knobs) against the dense cells of the same clips.

Layout of a sweep folder:

    cells/<cell id>.parquet    one row per cell (`worker.ROW_SCHEMA`): written as each cell finishes — a
                               sweep resumes by skipping the ids found here
    traces/<cell id>.parquet   the cell's trace (`trace.schema`, run metadata inside), when asked for
    results.parquet            every cell's row + `cider` (per clip, from the corpus scoring below)
    summary.parquet/.json      one record per (method, budget, knobs)

CIDEr (CIDEr-D, pycocoevalcap) is a corpus metric whose n-gram weights come from the scored set's own
references, so each (method, budget, knobs) group is scored over its captioned clips as one corpus (the same
clips, hence the same references and weights, for every group of the sweep) and the per-clip values come from
that scoring. QA accuracy = exact matches over all questions; gesture accuracy over the gesture clips.
Ratios are sums over the group's clips ÷ sums over dense on the same clips: `encoder_flops_ratio`,
`prefill_flops_ratio` (caption prompt), `flops_ratio` (encoder + prefill), `latency_ratio` (medians of the
interleaved end-to-end runs).

    >>> import polars as pl
    >>> summarise(pl.DataFrame(schema=ROW_SCHEMA | {"cider": pl.Float64})).height
    0
"""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from workbench.sweep.cells import Cell
from workbench.sweep.worker import ROW_SCHEMA, TIMING, row_frame

GROUP = ["method", "budget", "knobs"]


def cell_path(out: Path, cell_id: str) -> Path:
    return Path(out) / "cells" / f"{cell_id}.parquet"


def finished(out: Path) -> set[str]:
    """Ids of the cells already written (a file that does not read back is treated as unfinished)."""
    done = set()
    for p in sorted((Path(out) / "cells").glob("*.parquet")):
        try:
            if pl.read_parquet(p).height == 1:
                done.add(p.stem)
        except Exception:  # noqa: BLE001 - a torn write from a killed run: run the cell again
            p.unlink(missing_ok=True)
    return done


def write_cell(out: Path, cell: Cell, row: dict, trace: tuple | None) -> None:
    """Write one cell's row (atomically: a temporary file renamed) and its trace."""
    path = cell_path(out, cell.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    if trace is not None:
        from workbench.trace.schema import write_trace
        tdir = Path(out) / "traces"
        tdir.mkdir(exist_ok=True)
        write_trace(trace[0], tdir / f"{cell.id}.parquet", trace[1])
    tmp = path.with_suffix(".tmp")
    row_frame([row]).write_parquet(tmp)
    tmp.replace(path)


def read_rows(out: Path, ids: set[str] | None = None) -> pl.DataFrame:
    """Every written cell row (or those of `ids`), sorted by cell id."""
    files = sorted((Path(out) / "cells").glob("*.parquet"))
    frames = [pl.read_parquet(p) for p in files if ids is None or p.stem in ids]
    if not frames:
        return pl.DataFrame(schema=ROW_SCHEMA)
    return pl.concat(frames).sort("cell_id")


def with_cider(rows: pl.DataFrame) -> pl.DataFrame:
    """rows + `cider` per captioned clip, each (method, budget, knobs) group scored as one corpus.

    The coco-caption way (`eval/metrics.py`): every caption through pycocoevalcap's PTB tokenizer (one Java call
    for the whole sweep), then CIDEr-D per group; METEOR and BLEU are not needed here and not run."""
    if rows.height == 0:
        return rows.with_columns(pl.lit(None, pl.Float64).alias("cider"))
    import contextlib
    import io

    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from workbench.eval.metrics import normalize_caption
    cap = rows.filter(pl.col("task") == "captions")
    per: dict[str, float] = {}
    if cap.height:
        both = {}
        for r in cap.iter_rows(named=True):
            both[("h", r["cell_id"])] = [{"caption": normalize_caption(r["caption"]) or "<empty>"}]
            both[("r", r["cell_id"])] = [{"caption": normalize_caption(c)} for c in json.loads(r["references"])]
        with contextlib.redirect_stdout(io.StringIO()):
            tok = PTBTokenizer().tokenize(both)
        for _, g in cap.group_by(GROUP, maintain_order=True):
            ids = g["cell_id"].to_list()
            gts = {i: tok[("r", i)] for i in ids}
            res = {i: [tok[("h", i)][0] or "<empty>"] for i in ids}
            _, scores = Cider().compute_score(gts, res)
            per.update({i: float(v) for i, v in zip(ids, scores)})
    return rows.with_columns(pl.Series("cider", [per.get(i) for i in rows["cell_id"]], dtype=pl.Float64))


def _ratio(g: pl.DataFrame, dense: pl.DataFrame, col: str) -> float | None:
    d = dense.filter(pl.col("clip").is_in(g["clip"].implode()))
    num, den = g[col].sum(), d[col].sum()
    if g[col].null_count() or not den:
        return None
    return float(num / den)


def summarise(results: pl.DataFrame) -> pl.DataFrame:
    """One record per (method, budget, knobs): tokens, ratios to dense, CIDEr, QA and gesture accuracy."""
    dense = results.filter(pl.col("method") == "dense")
    dense = dense.with_columns((pl.col("encoder_flops") + pl.col("prefill_flops")).alias("total_flops"))
    recs = []
    for key, g in results.group_by(GROUP, maintain_order=True):
        g = g.with_columns((pl.col("encoder_flops") + pl.col("prefill_flops")).alias("total_flops"))
        cap, ges = g.filter(pl.col("task") == "captions"), g.filter(pl.col("task") == "gesture")
        cider = cap["cider"].mean() if cap.height else None
        d_cap = dense.filter(pl.col("clip").is_in(cap["clip"].implode())) if "cider" in dense.columns else dense
        qa_n = int(g["qa_n"].sum())
        rec = {"method": key[0], "budget": key[1], "knobs": key[2], "n_clips": g.height,
               "tokens_per_frame": float(g["tokens_per_frame"].mean()),
               "decoder_input_per_frame": float(g["decoder_input_per_frame"].mean()),
               "last_layer_per_frame": float(g["last_layer_per_frame"].mean()),
               "encoder_tokens_per_frame": float(g["encoder_tokens_per_frame"].mean()),
               "flops_ratio": _ratio(g, dense, "total_flops"),
               "encoder_flops_ratio": _ratio(g, dense, "encoder_flops"),
               "prefill_flops_ratio": _ratio(g, dense, "prefill_flops"),
               "latency_ratio": _ratio(g, dense, "latency_ms"),
               "cider": None if cider is None else float(cider),
               "dense_cider": float(d_cap["cider"].mean()) if cap.height and d_cap.height else None,
               "qa_accuracy": g["qa_correct"].sum() / qa_n if qa_n else None,
               "gesture_accuracy": float(ges["gesture_correct"].mean()) if ges.height else None,
               "encoder_flops": float(g["encoder_flops"].sum()),
               "encoder_flops_analytic": None if g["encoder_flops_analytic"].null_count()
               else float(g["encoder_flops_analytic"].sum())}
        recs.append(rec)
    schema = {"method": pl.String, "budget": pl.Float64, "knobs": pl.String, "n_clips": pl.Int64,
              **{k: pl.Float64 for k in ("tokens_per_frame", "decoder_input_per_frame", "last_layer_per_frame",
                                         "encoder_tokens_per_frame", "flops_ratio", "encoder_flops_ratio",
                                         "prefill_flops_ratio", "latency_ratio", "cider", "dense_cider",
                                         "qa_accuracy", "gesture_accuracy", "encoder_flops",
                                         "encoder_flops_analytic")}}
    return pl.DataFrame(recs, schema=schema)


def without_timings(df: pl.DataFrame) -> pl.DataFrame:
    """The table minus wall-clock columns (what must be equal between executors and reruns)."""
    return df.drop([c for c in TIMING + ("latency_ratio",) if c in df.columns])
