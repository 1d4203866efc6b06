"""The notebooks: committed without outputs, and every one executes top to bottom on the shipped model.

Execution uses nbclient with the `python3` kernel, which jupyter_client starts with this interpreter (the venv's
ipykernel; checked through the kernel's sys.prefix), in `notebooks/` as working directory; any cell error fails
the test. Each cell gets WORKBENCH_NB_CELL_TIMEOUT seconds (default 180), each notebook WORKBENCH_NB_TIMEOUT
(default 900, pytest-timeout). On an idle 2-core machine all five together take well under 4 minutes.
Notebooks find the real files through WORKBENCH_REAL_DATA (default ../shared/data/real) and skip those sections
with a printed note when the folder is missing.

Strip outputs before committing (any of):
    jupyter nbconvert --clear-output --inplace notebooks/*.ipynb
    python tests/test_notebooks.py --strip          # also drops widget state and execution timings
"""
from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from queue import Empty

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NB_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
EXPECTED = ["00_quickstart", "10_sttf", "20_anc", "30_events", "40_sparsevlm", "50_cloud_device", "60_compare",
            "90_paper_figures"]
CELL_TIMEOUT = int(os.environ.get("WORKBENCH_NB_CELL_TIMEOUT", "180"))
NOTEBOOK_TIMEOUT = int(os.environ.get("WORKBENCH_NB_TIMEOUT", "900"))  # pytest-timeout backstop per notebook
PLOTLY_MIME = "application/vnd.plotly.v1+json"


def stripped_problems(nb) -> list[str]:
    """What keeps a notebook from counting as stripped: outputs, execution counts, widget state, timings."""
    problems = []
    if "widgets" in nb.metadata:
        problems.append("notebook metadata holds widget state ('widgets')")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {i} has {len(cell.outputs)} output(s)")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i} has execution_count {cell.execution_count}")
        if "execution" in cell.get("metadata", {}):
            problems.append(f"cell {i} has execution timings in its metadata")
    return problems


def strip(nb):
    """Remove outputs, execution counts, widget state and execution timings (in place); returns nb."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
    return nb


def make_client(nb, cell_timeout: int = CELL_TIMEOUT):
    """An nbclient NotebookClient for `nb` (run in notebooks/), robust to a known widget stall.

    nbclient waits for a cell's reply with one long `shell_channel.get_msg(timeout=cell timeout)`; with cells
    that create ipywidgets that wait has been seen to miss the reply and sleep the whole timeout
    (ENVIRONMENT.md: ~2 runs in 10; jupyter/nbclient#312). Polling in half-second slices re-checks the socket,
    so a missed wake-up costs at most half a second; the overall deadline is unchanged.
    """
    from nbclient import NotebookClient

    def short_polls(notebook=None, **_):
        channel = client.kc.shell_channel
        original = channel.get_msg

        async def get_msg(timeout=None):
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                step = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
                try:
                    return await original(timeout=step)
                except (Empty, asyncio.TimeoutError):
                    if deadline is not None and time.monotonic() >= deadline:
                        raise Empty from None

        channel.get_msg = get_msg

    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3", startup_timeout=120,
                            resources={"metadata": {"path": str(NB_DIR)}}, on_notebook_start=short_polls,
                            record_timing=False)
    return client


def execute(path: Path, cell_timeout: int = CELL_TIMEOUT):
    """Execute a notebook (a copy in memory) with a first cell reporting the kernel's environment (sys.prefix)."""
    nb = nbformat.read(path, as_version=4)
    probe = nbformat.v4.new_code_cell("import sys; print(sys.prefix)")
    probe.id = "test-probe"
    nb.cells.insert(0, probe)
    make_client(nb, cell_timeout).execute()
    return nb


def test_every_expected_notebook_is_there():
    assert set(EXPECTED) <= {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    assert stripped_problems(nb) == [], f"{path.name}: strip outputs before committing (see this file's docstring)"


def test_stripped_check_catches_outputs():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    assert stripped_problems(nb) == []
    nb.cells[0].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)]
    nb.cells[0].execution_count = 1
    nb.metadata["widgets"] = {}
    assert len(stripped_problems(nb)) == 3
    assert stripped_problems(strip(nb)) == []


@pytest.mark.slow
@pytest.mark.timeout(NOTEBOOK_TIMEOUT)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path):
    start = time.perf_counter()
    nb = execute(path)  # raises CellExecutionError (with the traceback) on any cell error
    elapsed = time.perf_counter() - start
    kernel_prefix = "".join(o.get("text", "") for o in nb.cells[0].outputs).strip()
    assert kernel_prefix == sys.prefix, f"the kernel ran in {kernel_prefix}, not in this environment {sys.prefix}"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    figures = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if o.output_type in ("display_data", "execute_result") and PLOTLY_MIME in o.get("data", {})]
    assert figures, f"{path.name} displayed no plotly figure"
    print(f"{path.name}: executed in {elapsed:.1f} s")


@pytest.mark.slow
@pytest.mark.timeout(NOTEBOOK_TIMEOUT)
def test_events_notebook_without_real_data_skips_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_REAL_DATA", str(tmp_path / "nowhere"))  # the kernel inherits the environment
    nb = execute(NB_DIR / "30_events.ipynb")
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "No real event files at" in printed and str(tmp_path / "nowhere" / "events") in printed
    assert "synthetic gesture" in printed


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_execution_fails_on_a_cell_error(tmp_path):
    from nbclient.exceptions import CellExecutionError
    bad = tmp_path / "bad.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("raise ValueError('boom')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, bad)
    with pytest.raises(CellExecutionError, match="boom"):
        execute(bad)


if __name__ == "__main__":  # python tests/test_notebooks.py --strip [notebook ...]
    if len(sys.argv) < 2 or sys.argv[1] != "--strip":
        sys.exit("usage: python tests/test_notebooks.py --strip [notebooks/XX.ipynb ...]")
    for p in [Path(a) for a in sys.argv[2:]] or NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        if stripped_problems(nb):
            nbformat.write(strip(nb), p)
            print(f"stripped {p}")
