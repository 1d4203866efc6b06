"""Limits and small helpers every event reader shares: size checks, header lines, column → EVENT_DTYPE.

Every reader follows the same order: check the file's byte size, parse and check the header, work out how
many events the file can hold and refuse too many BEFORE allocating, decode, then hand the array to
`finish`, which runs `validate_events` and wraps the result in an `EventStream`.

    >>> ev = columns_to_events([1, 2], [0, 3], [10, 20], [1, 0], "demo.csv")
    >>> finish(ev, (4, 4), "demo.csv", "csv").sensor_size
    (4, 4)
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from workbench.data import events as _events
from workbench.data.events import EVENT_DTYPE, EventStream, validate_events
from workbench.errors import CorruptFileError, EmptyInputError, InputError, InputTooLargeError

MAX_FILE_BYTES = 4 * 1024**3  # 4 GiB: larger event files are refused before anything is read
MAX_TEXT_BYTES = 1024**3  # 1 GiB: CSV/TXT files are parsed in memory, so their limit is lower
MAX_HEADER_BYTES = 1024**2  # text headers (AEDAT '#', Prophesee '%') longer than 1 MiB are treated as corrupt
HEAD_BYTES = 64 * 1024  # how much of a file `sniff_format` looks at

# documented default sensors (width, height) for formats whose files carry no geometry
DEFAULT_SENSORS = {
    "aedat2": (128, 128),  # jAER DVS128
    "nmnist": (34, 34),  # N-MNIST (ATIS, saccade-cropped)
    "ncars": (120, 100),  # N-CARS samples (ATIS crops)
    "dat": (304, 240),  # Prophesee Gen1 ATIS, the sensor of the DAT-era datasets
}


def source_name(path) -> str:
    """The name errors use for a file: the path exactly as the caller gave it."""
    return os.fspath(path) if isinstance(path, os.PathLike) else str(path)


def check_file(path, limit: int = MAX_FILE_BYTES) -> int:
    """Return the file's byte size; raise a typed `InputError` for missing, folder, empty or too-large files."""
    src = source_name(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(src, "no such file") from None
    except OSError as e:
        raise InputError(src, f"cannot be opened ({e.strerror or e})") from None
    if os.path.isdir(path):
        raise InputError(src, "is a folder, not an event file")
    if st.st_size == 0:
        raise EmptyInputError(src, "the file is empty (0 bytes)")
    if st.st_size > limit:
        raise InputTooLargeError(src, f"the file has {st.st_size:,} bytes, more than the limit of {limit:,} "
                                 "bytes; cut the recording into shorter pieces")
    return int(st.st_size)


def read_bytes(path, n: int, offset: int = 0) -> bytes:
    """Up to `n` bytes of a file from `offset` (fewer at the end of the file)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(n)
    except OSError as e:
        raise InputError(source_name(path), f"cannot be read ({e.strerror or e})") from None


def check_event_count(n: int, source: str, what: str = "the file") -> int:
    """Refuse zero events (EmptyInputError) or more than `events.MAX_EVENTS` (InputTooLargeError)."""
    if n <= 0:
        raise EmptyInputError(source, f"{what} holds zero events")
    limit = _events.MAX_EVENTS  # read at call time so tests can lower it
    if n > limit:
        raise InputTooLargeError(source, f"{what} holds {n:,} events, more than the limit of {limit:,}; "
                                 "cut the recording into shorter pieces")
    return n


def header_lines(data: bytes, marker: bytes, source: str) -> tuple[list[str], int]:
    """Split the leading lines that start with `marker` off `data`: (lines without the marker, data offset).

    A header line must end with a newline before the end of the file; the binary part starts at the first
    line start that is not `marker` (the rule jAER and expelliarmus use).
    """
    lines: list[str] = []
    pos = 0
    while data[pos:pos + 1] == marker:
        end = data.find(b"\n", pos)
        if end < 0:
            if len(data) >= MAX_HEADER_BYTES:
                raise CorruptFileError(source, f"the text header is longer than {MAX_HEADER_BYTES:,} bytes")
            raise CorruptFileError(source, "the text header ends in the middle of a line (the file is truncated)")
        lines.append(data[pos + 1:end].decode("latin-1").strip())
        pos = end + 1
    return lines, pos


def read_header_lines(path, marker: bytes, source: str) -> tuple[list[str], int]:
    """`header_lines` on the first MAX_HEADER_BYTES of a file."""
    return header_lines(read_bytes(path, MAX_HEADER_BYTES), marker, source)


def columns_to_events(x, y, t, p, source: str) -> np.ndarray:
    """Four numeric columns → EVENT_DTYPE, refusing values that would not survive the cast.

    x, y must be integers in 0..32767; t integer microseconds (floats only if they hold whole numbers); p any
    number (> 0 means ON). Raises CorruptFileError naming `source` otherwise.
    """
    cols = {"x": np.asarray(x), "y": np.asarray(y), "t": np.asarray(t), "p": np.asarray(p)}
    n = len(cols["x"])
    for name, c in cols.items():
        if c.ndim != 1 or len(c) != n:
            raise CorruptFileError(source, f"column '{name}' has shape {c.shape}, expected ({n},) like 'x'")
        if not (np.issubdtype(c.dtype, np.number) or c.dtype == bool):
            raise CorruptFileError(source, f"column '{name}' holds {c.dtype} values, not numbers")
        if np.issubdtype(c.dtype, np.complexfloating):
            raise CorruptFileError(source, f"column '{name}' holds complex numbers")
        if np.issubdtype(c.dtype, np.floating):
            if not np.isfinite(c).all():
                raise CorruptFileError(source, f"column '{name}' holds NaN or infinite values")
            if name != "p" and (c != np.floor(c)).any():
                raise CorruptFileError(source, f"column '{name}' holds fractional values; "
                                       "coordinates must be whole pixels and timestamps whole microseconds")
    for name in ("x", "y"):
        c = cols[name]
        if n and c.dtype != bool and (c.min() < 0 or c.max() > np.iinfo(np.int16).max):
            raise CorruptFileError(source, f"column '{name}' holds values outside 0..32767 "
                                   f"(min {c.min()}, max {c.max()})")
    t = cols["t"]
    if n and t.dtype != bool:
        if np.issubdtype(t.dtype, np.unsignedinteger) and t.max() > np.iinfo(np.int64).max:
            raise CorruptFileError(source, "timestamps exceed the int64 microsecond range")
        if np.issubdtype(t.dtype, np.floating) and (np.abs(t).max() >= 2.0**62):
            raise CorruptFileError(source, "timestamps exceed the int64 microsecond range")
    ev = np.empty(n, dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"] = cols["x"], cols["y"], t
    ev["p"] = cols["p"] > 0
    return ev


def inferred_sensor(events: np.ndarray) -> tuple[int, int]:
    """(max x + 1, max y + 1): the sensor size used when a file states none and its format has no default."""
    if len(events) == 0:
        return (1, 1)
    return (max(int(events["x"].max()) + 1, 1), max(int(events["y"].max()) + 1, 1))


def sensor_from_values(values, source: str, what: str) -> tuple[int, int]:
    """(width, height) from a stored `sensor_size`-like value (2 or 3 numbers: W, H[, polarities])."""
    try:
        arr = np.asarray(values).ravel()
        if arr.dtype.kind not in "iuf" or len(arr) not in (2, 3) or not np.isfinite(arr).all():
            raise ValueError
        w, h = int(arr[0]), int(arr[1])
        if w != arr[0] or h != arr[1]:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise CorruptFileError(source, f"{what} should be (width, height), got {values!r}"[:300]) from None
    return w, h


def finish(events: np.ndarray, sensor_size: tuple[int, int], source: str, fmt: str) -> EventStream:
    """Validate (coordinates inside the sensor, t ≥ 0 and non-decreasing, count limits) and wrap."""
    events = validate_events(events, sensor_size, source)
    return EventStream(events=events, sensor_size=(int(sensor_size[0]), int(sensor_size[1])),
                       source=source, format=fmt)


def suffix(path) -> str:
    """Lower-case file extension without the dot ('' when none)."""
    return Path(source_name(path)).suffix.lower().lstrip(".")
