"""CSV / TXT event lists — parsed with numpy's `loadtxt` after our own header handling.

Rows are `t, x, y, p`, separated by commas and/or whitespace. Blank lines and lines starting with `#` are
skipped. Optional first line: a header naming the columns (t/ts/timestamp/time, x, y, p/pol/polarity/on, in
any order — the header then sets the column order). Optional next line: `width height` (two integers), the
sensor size, as some datasets write it above the events; otherwise the size is inferred as
(max x + 1, max y + 1).

Time units: timestamps are integer microseconds, EXCEPT when they look like seconds — at least one value has
a fractional part and all values are below 10,000 — then they are multiplied by 10^6 and rounded to whole µs.
Fractional values of 10,000 or more are refused (ambiguous units). Files over 1 GiB are refused (parsed in
memory).

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "ev.txt")
    >>> _ = open(path, "w").write("128 128\\n0.000010 5 6 1\\n0.000020 7 8 0\\n")
    >>> s = read_csv(path); s.sensor_size, s.events["t"].tolist()
    ((128, 128), [10, 20])
"""
from __future__ import annotations

import io
import re

import numpy as np

from workbench.data.events import _ALIASES, EventStream
from workbench.errors import CorruptFileError, EmptyInputError

from ._common import MAX_TEXT_BYTES, check_event_count, check_file, columns_to_events, finish, inferred_sensor, \
    read_bytes, source_name

SECONDS_BELOW = 1e4  # fractional timestamps below this are seconds
_SPLIT = re.compile(r"\s*,\s*|\s+")
_NAMES = {**{a: k for k, v in _ALIASES.items() for a in v}, "pol": "p", "polarity": "p"}


def _tokens(line: str) -> list[str]:
    return [tok for tok in _SPLIT.split(line.strip().strip(",")) if tok]


def _is_number(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


def _header_order(tokens: list[str]) -> list[str] | None:
    """Column order from a header line, or None when the line is not a t/x/y/p header."""
    names = [_NAMES.get(tok.lower().strip("\"'")) for tok in tokens]
    return names if len(names) == 4 and sorted(n or "" for n in names) == ["p", "t", "x", "y"] else None


def looks_like_csv(head: bytes) -> bool:
    """Content test on a file's first bytes: text whose first lines are a t/x/y/p header, `W H`, or 4 numbers."""
    if b"\x00" in head:
        return False
    cut = head if len(head) < 64 * 1024 else head[:head.rfind(b"\n") + 1]
    try:
        text = cut.decode("utf-8-sig")
    except UnicodeDecodeError:
        return False
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")][:8]
    if not lines:
        return False
    first = _tokens(lines[0])
    rest = lines[1:]
    if _header_order(first) is None:
        if not all(_is_number(t) for t in first) or len(first) not in (2, 4):
            return False
        rest = lines[1:] if len(first) == 2 else lines
    elif rest and len(_tokens(rest[0])) == 2:
        rest = rest[1:]  # header, then `width height`
    rows = [_tokens(ln) for ln in rest[:5]]
    return bool(rows) and all(len(r) == 4 and all(_is_number(t) for t in r) for r in rows)


def read_csv(path) -> EventStream:
    """Read a CSV/TXT event list (see the module docstring for the accepted layout and the seconds rule)."""
    src = source_name(path)
    size = check_file(path, MAX_TEXT_BYTES)
    raw = read_bytes(path, size)
    if b"\x00" in raw:
        raise CorruptFileError(src, "the text file holds NUL bytes (binary data)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CorruptFileError(src, f"the file is not UTF-8 text (bad byte at offset {e.start:,})") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise EmptyInputError(src, "the text file holds no event rows")
    order, sensor = ["t", "x", "y", "p"], None
    first = _tokens(lines[0])
    if not all(_is_number(t) for t in first):
        order = _header_order(first)
        if order is None:
            raise CorruptFileError(src, f"the first line {lines[0][:80]!r} is neither a t, x, y, p header nor numbers")
        lines = lines[1:]
    if lines and len(_tokens(lines[0])) == 2:
        w, h = _tokens(lines[0])
        if not (w.isdigit() and h.isdigit()):
            raise CorruptFileError(src, f"the size line {lines[0][:80]!r} is not two whole numbers (width height)")
        sensor = (int(w), int(h))
        lines = lines[1:]
    check_event_count(len(lines), src, "the text file")
    body = "\n".join(lines).replace(",", " ")
    try:
        table = np.loadtxt(io.StringIO(body), dtype=np.float64, ndmin=2, comments=None)
    except ValueError as e:
        raise CorruptFileError(src, f"the rows are not 4 numbers each ({str(e)[:150]})") from None
    if table.shape[1] != 4:
        raise CorruptFileError(src, f"rows have {table.shape[1]} columns; expected 4 (t, x, y, p)")
    cols = {name: table[:, i] for i, name in enumerate(order)}  # (N,) each
    t = cols["t"]
    if not np.isfinite(t).all():
        raise CorruptFileError(src, "timestamps hold NaN or infinite values")
    if (t != np.floor(t)).any():
        if np.abs(t).max() >= SECONDS_BELOW:
            raise CorruptFileError(src, f"fractional timestamps up to {np.abs(t).max():g}: neither whole "
                                   f"microseconds nor seconds (< {SECONDS_BELOW:g})")
        t = np.round(t * 1e6)
    ev = columns_to_events(cols["x"], cols["y"], t, cols["p"], src)
    return finish(ev, sensor or inferred_sensor(ev), src, "csv")
