"""Which event format is this file? Decided from content (magic bytes, headers, decoded values); the file
name is only a tie-breaker where content cannot decide.

Rules, in order, on the first 64 KiB:
1. `#!AER-DAT4.0` → aedat4, `#!AER-DAT3.1` → aedat3.1, `#!AER-DAT2.0` → aedat2 (other AEDAT versions: refused);
2. HDF5 signature `\\x89HDF\\r\\n\\x1a\\n` at byte 0 (or 512, 1024, ... after a user block) → hdf5;
3. `\\x93NUMPY` → npy; a zip archive (`PK\\x03\\x04`, `PK\\x05\\x06`) → npz;
4. `%` header lines: `% evt 3.0` / `% format EVT3` → evt3, `% evt 2.0` / `% format EVT2` → evt2; otherwise a DAT
   file when the bytes after the header are a TD/CD event type and size 8 (or the name ends in `.dat`); a DAT
   file with no geometry in its header whose first events all fit 120×100 → ncars;
5. N-MNIST (no magic): ≥ 10 events, all decoded coordinates < 34, timestamps non-decreasing and advancing;
6. a DVS128 Gesture label file (first line `class,startTime_usec,endTime_usec`) → 'dvs-gesture-labels' — not an
   event format: `read_events` refuses it with UnsupportedFormatError saying how to use it;
   text whose first lines are a t/x/y/p header, `width height`, or rows of 4 numbers → csv;
7. tie-breakers by name, so a damaged file is reported as corrupt rather than unknown: `.bin` with a size
   that is a multiple of 5 → nmnist; `.h5` / `.hdf5` → hdf5; `.npy` → npy; `.npz` → npz; `.aedat4` → aedat4;
   `.csv` holding UTF-8 text → csv.
Anything else → UnsupportedFormatError listing the supported formats.

    >>> sniff_bytes(b"#!AER-DAT2.0\\r\\n# rest", 100, "walk.aedat")
    'aedat2'
"""
from __future__ import annotations

import os

import numpy as np

from workbench.errors import CorruptFileError, EmptyInputError, InputError, UnsupportedFormatError

from ._common import HEAD_BYTES, MAX_HEADER_BYTES, header_lines, read_bytes, source_name, suffix
from .binary import looks_like_nmnist
from .gesture_labels import GESTURE_LABELS, looks_like_gesture_labels
from .prophesee import DAT_EVENT_TYPES, dat_xy, encoding_from_header, prophesee_geometry
from .text import looks_like_csv

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
NCARS_SIZE = (120, 100)
_BY_NAME = {"h5": "hdf5", "hdf5": "hdf5", "npy": "npy", "npz": "npz", "aedat4": "aedat4"}
_DAT_HINTS = ("data file", "version", "height", "width", "date", "end")


def _supported_list() -> str:
    from . import SUPPORTED_FORMATS  # noqa: PLC0415 - the table lives in the package's public module

    return ", ".join(SUPPORTED_FORMATS)


def _unsupported(src: str, why: str) -> UnsupportedFormatError:
    return UnsupportedFormatError(src, f"{why}; supported event formats: {_supported_list()}")


def _is_text(head: bytes) -> bool:
    try:
        (head if len(head) < HEAD_BYTES else head[:head.rfind(b"\n") + 1]).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in head


def _is_hdf5(head: bytes) -> bool:
    off = 0
    while off + len(HDF5_MAGIC) <= len(head):
        if head[off:off + len(HDF5_MAGIC)] == HDF5_MAGIC:
            return True
        off = 512 if off == 0 else off * 2
    return False


def _percent_format(head: bytes, name: str, src: str) -> str | None:
    """Format of a file starting with `%` header lines (None when it is not a Prophesee file)."""
    try:
        lines, start = header_lines(head, b"%", src)
        complete = True
    except CorruptFileError:  # unterminated header: classify from what is there; the reader reports it
        lines = [ln.decode("latin-1").strip("% \r") for ln in head.split(b"\n") if ln.startswith(b"%")]
        start, complete = len(head), False
    enc = encoding_from_header(lines)
    if enc and enc.startswith("unsupported:"):
        raise _unsupported(src, f"the header names an encoding we cannot read: '% {enc.split(':', 1)[1]}'")
    if enc:
        return enc
    ext = suffix(name)
    dat_bytes = complete and start + 2 <= len(head) and head[start] in DAT_EVENT_TYPES and head[start + 1] == 8
    dat_hint = any(ln.lower().startswith(_DAT_HINTS) for ln in lines)
    if not (dat_bytes or ext == "dat" or (dat_hint and ext != "raw")):
        if ext == "raw":
            raise _unsupported(src, "the Prophesee RAW header does not name its encoding ('% evt 2.0' / "
                               "'% evt 3.0'); pass format='evt2' or 'evt3'")
        return None
    if prophesee_geometry(lines) is None and complete:
        body = head[start + 2:]
        n = min(len(body) // 8, 8192)
        if n:
            words = np.frombuffer(body[:n * 8], dtype="<u4").reshape(n, 2)  # (n, 2): timestamp, data
            x, y = dat_xy(words[:, 1])
            if (x < NCARS_SIZE[0]).all() and (y < NCARS_SIZE[1]).all():
                return "ncars"
    return "dat"


def sniff_bytes(head: bytes, size: int, name: str = "<memory>") -> str:
    """Format name of a file from its first bytes `head`, its byte `size` and its `name` (tie-breaker)."""
    src = name
    if head.startswith(b"#!AER-DAT"):
        version = head[9:12].decode("latin-1", "replace")
        known = {"4.0": "aedat4", "3.1": "aedat3.1", "2.0": "aedat2"}
        if version in known:
            return known[version]
        raise _unsupported(src, f"AEDAT version {version!r} is not supported (2.0, 3.1 and 4.0 are)")
    if _is_hdf5(head):
        return "hdf5"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "npz"
    if head.startswith(b"%"):
        fmt = _percent_format(head, name, src)
        if fmt:
            return fmt
    if looks_like_nmnist(head, size):
        return "nmnist"
    if looks_like_gesture_labels(head):
        return GESTURE_LABELS
    if looks_like_csv(head):
        return "csv"
    ext = suffix(name)
    if ext == "bin" and size % 5 == 0:
        return "nmnist"
    if ext in _BY_NAME:
        return _BY_NAME[ext]
    if ext == "csv" and _is_text(head):
        return "csv"
    raise _unsupported(src, "the content matches no event format we read")


def sniff_format(path) -> str:
    """Detect a file's event format from its content (see the module docstring); the name only breaks ties.

    Returns a name from SUPPORTED_FORMATS, or 'dvs-gesture-labels' for a DVS128 Gesture label file (which
    `read_events` refuses with a message saying how to use it). Raises UnsupportedFormatError (message lists
    the supported formats), EmptyInputError for 0 bytes.

    >>> sniff_format("../shared/data/real/events/nmnist_sample.bin")  # doctest: +SKIP
    'nmnist'
    """
    src = source_name(path)
    try:
        size = os.stat(path).st_size
    except OSError as e:
        raise InputError(src, f"cannot be opened ({e.strerror or e})") from None
    if os.path.isdir(path):
        raise InputError(src, "is a folder, not an event file")
    if size == 0:
        raise EmptyInputError(src, "the file is empty (0 bytes)")
    head = read_bytes(path, MAX_HEADER_BYTES if read_bytes(path, 1) == b"%" else HEAD_BYTES)
    return sniff_bytes(head, size, src)
