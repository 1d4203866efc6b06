"""Prophesee DAT (incl. N-CARS), EVT 2.0 and EVT 3.0: one header parser, strict byte checks, then a decoder.

All three start with `% ` text header lines. EVT 3.0 is decoded by our own vectorised numpy decoder
(`readers/evt3.py`, spec-correct time; expelliarmus 1.1 double-counts TIME_LOW wraps, see
docs/event_formats.md). DAT and EVT 2.0 are decoded by expelliarmus (C, via ctypes), which trusts its input:
a header line without a newline makes it loop forever, and it only knows a fixed set of word types. So before
any decoder runs we
(1) parse the header exactly as expelliarmus does (lines starting with '%') and require every line to end with
'\n',
(2) scan the data words with numpy — every word type must be one the decoder knows, the length must be a whole
number of words/events — and count the events, refusing more than MAX_EVENTS before anything is allocated, and
(3) for expelliarmus, check its output length against our count. It also insists on a `.raw` / `.dat` file
name, so a file with another name is hard-linked (or copied) into a temporary folder first.

Sensor size: `% geometry WxH`, `% format EVT3;height=H;width=W`, or `% Width` / `% Height` lines; else from
the camera named in the header (Gen4.x / IMX636 → 1280×720, Gen3.x → 640×480, GenX320 → 320×320); else for
EVT files max+1 of the coordinates; DAT without geometry → Gen1 ATIS 304×240, N-CARS → 120×100.

Time: EVT 2.0 = (TIME_HIGH << 6) | 6-bit low; DAT = uint32 µs with wrap-around (drops smaller than 2^31 µs
are refused here as disorder); EVT 3.0 = (wraps << 24) | (TIME_HIGH << 12) | TIME_LOW per the Prophesee spec
(`readers/evt3.py`). EVT 3.0 external triggers are ignored.

    >>> prophesee_geometry(["format EVT3;height=720;width=1280"])
    (1280, 720)
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile

import numpy as np

from workbench.data.events import EVENT_DTYPE, EventStream
from workbench.errors import CorruptFileError, UnsupportedFormatError

from ._common import DEFAULT_SENSORS, check_event_count, check_file, finish, inferred_sensor, read_header_lines, \
    source_name
from .evt3 import check_evt3_types, decode_evt3_words, evt3_event_count

EVT2_LIB_TYPES = (0x0, 0x1, 0x8, 0xA, 0xE, 0xF)
DAT_EVENT_TYPES = (0x00, 0x0C)  # TD (ATIS / N-CARS) and CD events
_CHUNK = 1 << 22  # words per numpy chunk of the pre-scan

_CAMERAS = ((r"gen4|imx636|imx646", (1280, 720)), (r"gen3|vga", (640, 480)), (r"genx320", (320, 320)))


def prophesee_geometry(lines: list[str]) -> tuple[int, int] | None:
    """(width, height) stated by a Prophesee header, or None."""
    text = "\n".join(lines)
    m = re.search(r"geometry\s+(\d+)\s*x\s*(\d+)", text, re.IGNORECASE)
    if m:
        return int(m.group(1)), int(m.group(2))
    w = re.search(r"width\s*[=\s]\s*(\d+)", text, re.IGNORECASE)
    h = re.search(r"height\s*[=\s]\s*(\d+)", text, re.IGNORECASE)
    if w and h:
        return int(w.group(1)), int(h.group(1))
    return None


def camera_geometry(lines: list[str]) -> tuple[int, int] | None:
    """Sensor size of the camera a header names (plugin / generation lines), or None."""
    text = "\n".join(ln for ln in lines if re.match(r"(plugin_name|sensor_generation|camera|sensor)", ln, re.I))
    for pattern, size in _CAMERAS:
        if re.search(pattern, text, re.IGNORECASE):
            return size
    return None


def encoding_from_header(lines: list[str]) -> str | None:
    """'evt2' / 'evt3' from `% evt 2.0|3.0` or `% format EVT2|EVT3;...`; 'unsupported:<line>' for other EVT
    versions (e.g. EVT 2.1); None when the header names no encoding (DAT files)."""
    for ln in lines:
        low = ln.lower()
        m = re.match(r"evt\s+(\S+)", low) or re.match(r"format\s+(evt\S*)", low)
        if not m:
            continue
        version = m.group(1).split(";")[0]
        if version in ("3.0", "3", "evt3", "evt3.0"):
            return "evt3"
        if version in ("2.0", "2", "evt2", "evt2.0"):
            return "evt2"
        return f"unsupported:{ln}"
    return None


def dat_xy(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x, y of DAT event words (uint32): x bits 0..13, y bits 14..27."""
    return data & 0x3FFF, (data >> 14) & 0x3FFF


def _words(path, offset: int, nbytes: int, dtype: str) -> np.ndarray:
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(nbytes // np.dtype(dtype).itemsize,))


def _scan_evt(path, src: str, start: int, nbytes: int, enc: str) -> int:
    """Check every word type of an EVT2/EVT3 payload and count its events (no allocation beyond a chunk).

    For EVT3 the count is an upper bound (events without time / row / column state are dropped later)."""
    width = 2 if enc == "evt3" else 4
    if nbytes % width:
        raise CorruptFileError(src, f"the {enc.upper()} data ({nbytes:,} bytes) is not a whole number of "
                               f"{width}-byte words; the file is truncated")
    if nbytes == 0:
        check_event_count(0, src)
    words = _words(path, start, nbytes, "<u2" if enc == "evt3" else "<u4")
    allowed = np.zeros(16, bool)
    allowed[list(EVT2_LIB_TYPES)] = True
    count = 0
    for i in range(0, len(words), _CHUNK):
        w = np.asarray(words[i:i + _CHUNK])
        if enc == "evt3":
            check_evt3_types(w, src, start + i * width)
            count += evt3_event_count(w)
        else:
            ty = (w >> 28).astype(np.intp)
            bad = ~allowed[ty]
            if bad.any():
                j = int(np.flatnonzero(bad)[0])
                raise CorruptFileError(src, f"unknown EVT2 word type {int(ty[j]):#x} at byte "
                                       f"{start + (i + j) * width:,}")
            count += int((ty <= 1).sum())
        check_event_count(max(count, 1), src)
    return check_event_count(count, src)


def _scan_dat(path, src: str, start: int, size: int) -> int:
    """Check a DAT payload (type/size bytes, whole 8-byte events, ordered time) and return its event count."""
    if size - start < 2:
        raise CorruptFileError(src, "the DAT file ends right after its header (no event type/size bytes)")
    with open(path, "rb") as f:
        f.seek(start)
        ev_type, ev_size = f.read(2)
    if ev_size != 8 or ev_type not in DAT_EVENT_TYPES:
        raise CorruptFileError(src, f"DAT event type {ev_type:#x} / size {ev_size} is not a TD/CD event of 8 bytes")
    nbytes = size - start - 2
    if nbytes % 8:
        raise CorruptFileError(src, f"the DAT data ({nbytes:,} bytes) is not a whole number of 8-byte events; "
                               "the file is truncated")
    n = check_event_count(nbytes // 8, src)
    ts = _words(path, start + 2, nbytes, "<u4")[0::2]  # (n,) strided view of the timestamps
    for i in range(0, n, _CHUNK):
        lo = max(i - 1, 0)
        d = np.diff(np.asarray(ts[lo:i + _CHUNK]).astype(np.int64))
        back = np.flatnonzero((d < 0) & (d > -(2**31)))  # bigger drops are 32-bit wraps
        if len(back):
            raise CorruptFileError(src, f"timestamps go backwards {len(back):,} times in the DAT data "
                                   f"(first at event {lo + int(back[0]) + 1:,})")
    return n


def _expelliarmus_read(path, src: str, enc: str) -> np.ndarray:
    """Wizard(encoding).read on a path with the file name expelliarmus wants (linked or copied if needed)."""
    from expelliarmus import Wizard

    ext = ".dat" if enc == "dat" else ".raw"
    name = os.path.realpath(path)  # expelliarmus resolves links before it checks the extension
    with tempfile.TemporaryDirectory(prefix="wb-events-") as tmp:
        if not name.lower().endswith(ext) or not name.isascii():
            link = os.path.join(tmp, "events" + ext)
            try:
                os.link(name, link)
            except OSError:
                shutil.copyfile(name, link)
            name = link
        try:
            arr = Wizard(encoding=enc).read(name)
        except Exception as e:  # noqa: BLE001 - expelliarmus raises RuntimeError/ValueError on bad data
            raise CorruptFileError(src, f"expelliarmus could not decode the {enc.upper()} data ({e})") from None
    if arr is None:
        raise CorruptFileError(src, f"expelliarmus found no events in the {enc.upper()} data")
    return arr


def read_prophesee(path, fmt: str) -> EventStream:
    """Read a Prophesee `dat` / `ncars` / `evt2` / `evt3` file (fmt as sniffed or forced).

    >>> read_prophesee("prophesee_evt3_sample.raw", "evt3").sensor_size  # doctest: +SKIP
    (1280, 720)
    """
    src = source_name(path)
    size = check_file(path)
    lines, start = read_header_lines(path, b"%", src)
    enc = "dat" if fmt in ("dat", "ncars") else fmt
    named = encoding_from_header(lines)
    if named and named.startswith("unsupported:"):
        raise UnsupportedFormatError(src, f"the header names an encoding we cannot read: "
                                     f"'% {named.split(':', 1)[1]}' (supported: EVT 2.0, EVT 3.0, DAT)")
    if enc == "dat":
        expected = _scan_dat(path, src, start, size)
    else:
        expected = _scan_evt(path, src, start, size - start, enc)
    if enc == "evt3":
        ev = decode_evt3_words(_words(path, start, size - start, "<u2"), expected, src)
        check_event_count(len(ev), src, "the file (events with a known time, row and column)")
    else:
        raw = _expelliarmus_read(path, src, enc)
        if len(raw) != expected:
            raise CorruptFileError(src, f"expelliarmus decoded {len(raw):,} events where the data holds {expected:,}")
        if enc == "dat" and (raw["p"] > 1).any():
            raise CorruptFileError(src, f"{int((raw['p'] > 1).sum()):,} DAT events have a polarity other than 0/1")
        ev = np.empty(len(raw), dtype=EVENT_DTYPE)
        ev["x"], ev["y"], ev["t"] = raw["x"], raw["y"], raw["t"]
        ev["p"] = raw["p"] > 0
    sensor = prophesee_geometry(lines) or camera_geometry(lines)
    if sensor is None:
        sensor = DEFAULT_SENSORS[fmt] if fmt in DEFAULT_SENSORS else inferred_sensor(ev)
    return finish(ev, sensor, src, fmt)
