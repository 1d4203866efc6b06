"""Shared benchmark helpers: machine/date header, interleaved median timing, ratio tables saved as markdown + JSON.

Accounting convention (METHODS.md §7): time is wall-clock in the same process with the dense baseline and the
method interleaved (A B, then B A, ...) and the median of several runs reported; ratios are always against the
dense baseline of the same run.

    >>> med = interleaved_median({"a": lambda: sum(range(100)), "b": lambda: sum(range(10))}, repeats=3)
    >>> sorted(med)
    ['a', 'b']
    >>> print(markdown_table([{"x": 1.23456, "y": None}], [("x", "X", "{:.2f}"), ("y", "Y", "{:.1f}")]))
    | X | Y |
    |---|---|
    | 1.23 | – |
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # scripts run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(REPO))

Column = tuple[str, str, str]  # (row key, header, format spec such as "{:.3f}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict:
    """Date, machine and software versions for the results header.

        >>> {"date", "cpu", "cores", "torch"} <= set(machine_info())
        True
    """
    import torch
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": _cpu_model(), "cores": os.cpu_count(),
            "machine": f"{platform.system()} {platform.machine()}", "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "git": _git_revision(),
            "load_avg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def interleaved_median(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median wall time in ms of each function, run interleaved (the order reversed every round, so slow drift
    of the machine hits every function alike), after `warmup` untimed rounds."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            fns[n]()
            if r >= warmup:
                times[n].append((time.perf_counter() - start) * 1e3)
    return {n: statistics.median(v) for n, v in times.items()}


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is 0."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def _cell(v, fmt: str) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def markdown_table(rows: Iterable[dict], columns: Sequence[Column]) -> str:
    """A markdown table of `rows` (dicts) with the given (key, header, format) columns; missing → "–"."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(k), f) for k, _, f in columns) + " |" for r in rows]
    return "\n".join(lines)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def save_results(name: str, rows: list[dict], columns: Sequence[Column], meta: dict | None = None,
                 out_dir: str | Path | None = None, title: str | None = None,
                 notes: Sequence[str] = ()) -> tuple[Path, Path]:
    """Write `<out_dir>/<name>.md` (header with date and machine, the table, notes) and `<name>.json`
    ({"meta", "machine", "rows"}); returns both paths. Default folder: benchmarks/results/."""
    out = Path(out_dir) if out_dir else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    load = "" if info["load_avg"] is None else f", load average {info['load_avg']:.2f}"
    md = [f"# {title or name}", "",
          f"{info['date']} · {info['cpu']} ({info['cores']} cores, torch {info['torch']}, "
          f"{info['torch_threads']} threads{load})", ""]
    if meta:
        md += [f"- {k}: {json.dumps(v, default=str, ensure_ascii=False)}" for k, v in meta.items()] + [""]
    md += [markdown_table(rows, columns), ""]
    md += [f"- {n}" for n in notes]
    md_path, json_path = out / f"{name}.md", out / f"{name}.json"
    _atomic_write(md_path, "\n".join(md).rstrip() + "\n")
    _atomic_write(json_path, json.dumps({"meta": meta or {}, "machine": info, "rows": rows}, indent=2, default=str))
    return md_path, json_path


def print_table(rows: Iterable[dict], columns: Sequence[Column], title: str | None = None) -> None:
    if title:
        print(f"\n{title}")
    print(markdown_table(list(rows), columns))
