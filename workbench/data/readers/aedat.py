"""AEDAT 2.0 (jAER DVS128) and AEDAT 3.1 (cAER, e.g. DVS128 Gesture) — our own vectorised numpy parsers.

Why our own: tonic 1.7's `read_dvs_128` unpacks the 3-tuple of `read_aedat_header_from_file` into two names
(it raises), and its AEDAT 3 path reads `eventCapacity` events per packet without looking at the event type,
size, validity bit or timestamp overflow. Both formats are simple enough to parse strictly here.

AEDAT 2.0: `#`-comment header lines (the first is `#!AER-DAT2.0`), then big-endian (uint32 address, uint32
timestamp µs) pairs. Only DVS128 recordings (AEChip `...DVS128` / `Tmpdiff128`, or no AEChip line) are read.
Coordinates follow jAER's DVS128 extractor turned into image coordinates (origin top-left, y down):
    x = 127 - ((addr >> 1) & 0x7F),  y = 127 - ((addr >> 8) & 0x7F),  ON = (addr & 1) == 0
jAER itself shows y upwards, so it only flips x; we flip both so the recording is upright in our frames.
Note tonic's `read_dvs_128` swaps the axes (x from bits 8..14) and flips neither. Events with the sync /
special bits (0x8000 or 0x80000000) are external-input events and are dropped. Timestamps are read as
unsigned 32-bit and their wrap-around (every 71.6 min) is unwrapped, so t is never negative.

AEDAT 3.1: `#`-header lines up to `#!END-HEADER\r\n`, then packets: a 28-byte little-endian header
(eventType, eventSource int16; eventSize, eventTSOffset, eventTSOverflow, eventCapacity, eventNumber,
eventValid int32) followed by eventNumber events of eventSize bytes. Polarity events (type 1, 8 bytes):
uint32 data (bit 0 valid, bit 1 polarity, y bits 2..16, x bits 17..31) + int32 timestamp; full time =
(eventTSOverflow << 31) | timestamp. Other event types (special, frames, IMU, ...) are skipped; only the
first source that sends polarity events is read. Sensor size from the `#Source N: <camera>` line.

    >>> import numpy as np
    >>> dvs128_coordinates(np.array([0x0102], np.uint32))
    (array([126], dtype=int16), array([126], dtype=int16), array([ True]))
"""
from __future__ import annotations

import re
import struct

import numpy as np

from workbench.data.events import EVENT_DTYPE, EventStream
from workbench.errors import CorruptFileError, UnsupportedFormatError

from ._common import (DEFAULT_SENSORS, MAX_HEADER_BYTES, check_event_count, check_file, finish, inferred_sensor,
                      read_bytes, read_header_lines, source_name)

_SPECIAL_BITS = np.uint32(0x80008000)  # jAER: sync/external event bit 15, special event bit 31
_AEDAT3_END = b"#!END-HEADER\r\n"
_PACKET = struct.Struct("<hhiiiiii")  # 28 bytes
_MAX_EVENT_SIZE = 64 * 1024 * 1024  # one event of a packet (frames are the biggest: < 64 MiB)

# camera name in an AEDAT 3.1 `#Source N: <name>` line → (width, height)
AEDAT3_SENSORS = {"DVS128": (128, 128), "DAVIS128": (128, 128), "DAVIS208": (208, 192), "DAVIS240A": (240, 180),
                  "DAVIS240B": (240, 180), "DAVIS240C": (240, 180), "DAVIS240": (240, 180), "DAVIS346": (346, 260),
                  "DAVIS346B": (346, 260), "DAVIS640": (640, 480), "DVXPLORER": (640, 480),
                  "DVXPLORER_LITE": (320, 240), "DVXPLORERLITE": (320, 240)}


def dvs128_coordinates(addr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """jAER DVS128 addresses (uint32) → image x, y (int16, origin top-left) and polarity (bool, True = ON)."""
    x = (127 - ((addr >> 1) & 0x7F)).astype(np.int16)
    y = (127 - ((addr >> 8) & 0x7F)).astype(np.int16)
    return x, y, (addr & 1) == 0


def read_aedat2(path) -> EventStream:
    """Read a jAER AEDAT 2.0 DVS128 recording; sensor 128×128 (see the module docstring for the convention).

    >>> read_aedat2("dvs128_walking.aedat").sensor_size  # doctest: +SKIP
    (128, 128)
    """
    src = source_name(path)
    size = check_file(path)
    lines, start = read_header_lines(path, b"#", src)
    if not lines or not lines[0].startswith("!AER-DAT2"):
        raise CorruptFileError(src, "the first line is not '#!AER-DAT2.0'")
    chip = next((m.group(1).strip() for ln in lines if (m := re.match(r"\s*AEChip\s*:(.*)", ln, re.I))), "")
    if chip and not re.search(r"dvs128|tmpdiff128", chip, re.IGNORECASE):
        raise UnsupportedFormatError(src, f"AEDAT 2.0 from AEChip '{chip}': only DVS128 recordings are supported "
                                     "(convert others to AEDAT 4 with DV)")
    n_bytes = size - start
    if n_bytes % 8:
        raise CorruptFileError(src, f"the event data ({n_bytes:,} bytes) is not a whole number of 8-byte events; "
                               "the file is truncated")
    check_event_count(n_bytes // 8, src)
    raw = np.fromfile(path, dtype=np.dtype([("a", ">u4"), ("t", ">u4")]), count=n_bytes // 8, offset=start)
    if len(raw) != n_bytes // 8:
        raise CorruptFileError(src, "the file changed or ended while it was read")
    addr = raw["a"].astype(np.uint32)
    keep = (addr & _SPECIAL_BITS) == 0
    bad = keep & (addr > 0x7FFF)
    if bad.any():
        raise CorruptFileError(src, f"{int(bad.sum()):,} addresses are not DVS128 addresses (first: "
                               f"{int(addr[np.flatnonzero(bad)[0]]):#x})")
    t = raw["t"].astype(np.int64)
    # unwrap the 32-bit counter: a drop of more than 2^31 µs is a wrap, anything smaller is real disorder
    wraps = np.concatenate([[0], np.cumsum(np.diff(t) < -(2**31))])
    t = t + wraps * (2**32)
    addr, t = addr[keep], t[keep]
    check_event_count(len(addr), src, "the file (after dropping special events)")
    ev = np.empty(len(addr), dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["p"] = dvs128_coordinates(addr)
    ev["t"] = t
    return finish(ev, DEFAULT_SENSORS["aedat2"], src, "aedat2")


def aedat3_header(path, src: str) -> tuple[list[str], int]:
    """(header lines, offset of the first packet) of an AEDAT 3.x file."""
    head = read_bytes(path, MAX_HEADER_BYTES)
    end = head.find(_AEDAT3_END)
    if end < 0:
        raise CorruptFileError(src, "the header has no '#!END-HEADER' line (truncated or not AEDAT 3.1)")
    text = head[:end].decode("latin-1")
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    if not lines or not lines[0].startswith("#!AER-DAT3.1"):
        raise CorruptFileError(src, "the first line is not '#!AER-DAT3.1'")
    return lines, end + len(_AEDAT3_END)


def _aedat3_sensor(lines: list[str]) -> tuple[int, int] | None:
    for ln in lines:
        m = re.match(r"#\s*Source\s+\d+\s*:\s*(\S+)", ln)
        if m:
            name = m.group(1).upper().replace("-", "_")
            return AEDAT3_SENSORS.get(name, AEDAT3_SENSORS.get(name.split("_")[0]))
    return None


def read_aedat31(path) -> EventStream:
    """Read an AEDAT 3.1 file (polarity events of the first polarity source); see the module docstring.

    Sensor size comes from the `#Source` line's camera name (DVS128 → 128×128, DAVIS346 → 346×260, ...);
    an unknown camera falls back to max+1 of the coordinates.

    >>> read_aedat31("user01_fluorescent.aedat").sensor_size  # doctest: +SKIP
    (128, 128)
    """
    src = source_name(path)
    size = check_file(path)
    lines, pos = aedat3_header(path, src)
    mm = np.memmap(path, dtype=np.uint8, mode="r")  # read-only view; slices below are copied per packet
    parts: list[np.ndarray] = []
    total, source_id, n_packets = 0, None, 0
    while pos < size:
        if size - pos < _PACKET.size:
            raise CorruptFileError(src, f"the file ends inside a packet header at byte {pos:,} (truncated)")
        etype, esrc, esize, tsoff, tsovf, cap, num, valid = _PACKET.unpack(bytes(mm[pos:pos + _PACKET.size]))
        where = f"packet {n_packets} at byte {pos:,}"
        if not (0 < esize <= _MAX_EVENT_SIZE and 0 <= tsoff <= esize - 4):
            raise CorruptFileError(src, f"{where} has an impossible event size {esize} / timestamp offset {tsoff}")
        if not (0 <= valid <= num <= cap) or tsovf < 0:
            raise CorruptFileError(src, f"{where} has inconsistent counts (valid {valid}, number {num}, capacity "
                                   f"{cap}, overflow {tsovf})")
        payload = num * esize
        if payload > size - pos - _PACKET.size:
            raise CorruptFileError(src, f"{where} claims {num:,} events of {esize} bytes but only "
                                   f"{size - pos - _PACKET.size:,} bytes follow (lying header or truncated file)")
        body = pos + _PACKET.size
        pos = body + payload
        n_packets += 1
        if etype != 1 or num == 0:
            continue  # not polarity events: skipped
        if esize != 8 or tsoff != 4:
            raise CorruptFileError(src, f"{where}: polarity events must be 8 bytes with the timestamp at offset 4, "
                                   f"got size {esize}, offset {tsoff}")
        if source_id is None:
            source_id = esrc
        elif esrc != source_id:
            continue  # a second polarity source: ignored (documented)
        words = np.frombuffer(mm[body:pos], dtype="<u4").reshape(num, 2)  # (num, 2): data, timestamp
        data, ts = words[:, 0], words[:, 1]
        ok = (data & 1) == 1
        if int(ok.sum()) != valid:
            raise CorruptFileError(src, f"{where} says {valid} valid events but {int(ok.sum())} have the valid bit")
        if (ts[ok] >= 2**31).any():
            raise CorruptFileError(src, f"{where} holds negative 32-bit timestamps")
        total += valid
        check_event_count(max(total, 1), src)  # refuse before the pieces grow past the limit
        ev = np.empty(valid, dtype=EVENT_DTYPE)
        d = data[ok]
        ev["x"] = ((d >> 17) & 0x7FFF).astype(np.int16)
        ev["y"] = ((d >> 2) & 0x7FFF).astype(np.int16)
        ev["p"] = (d >> 1) & 1
        ev["t"] = (np.int64(tsovf) << 31) | ts[ok].astype(np.int64)
        parts.append(ev)
    check_event_count(total, src, "the file (polarity events)")
    events = np.concatenate(parts)
    sensor = _aedat3_sensor(lines) or inferred_sensor(events)
    return finish(events, sensor, src, "aedat3.1")
