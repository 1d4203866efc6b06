"""AEDAT 4 (DV / DVXplorer / DAVIS recordings) through the `aedat` package, behind our own byte checks.

`aedat.Decoder` (Rust) yields one dict per packet: `{"stream_id", "events"}` with a structured array
(t uint64 µs, x uint16, y uint16, `on` bool titled `p`), or `frame` / `imus` / `triggers`. We keep the
polarity events of the lowest-numbered event stream and copy them into EVENT_DTYPE (`on` → `p`); frames, IMU
samples, triggers and further event streams are ignored. Sensor size = the event stream's sizeX × sizeY.
Timestamps stay as recorded (absolute µs since the epoch).

Checked here BEFORE the decoder sees the file, because aedat 2.3 reads the IOHeader flatbuffer unchecked and
aborts the whole process (a panic inside a panic) when that header holds invalid UTF-8: the 14-byte magic, the
header length, a bounds-checked walk of the IOHeader flatbuffer (compression, file data position, description
as valid UTF-8 XML), and the packet framing (every stream id + length + payload inside the file).

    >>> read_aedat4("dvxplorer_sample.aedat4").sensor_size  # doctest: +SKIP
    (320, 240)
"""
from __future__ import annotations

import struct
import xml.etree.ElementTree as ET

import numpy as np

from workbench.data.events import EVENT_DTYPE, EventStream
from workbench.errors import CorruptFileError, InputError

from ._common import check_event_count, check_file, finish, read_bytes, source_name

MAGIC = b"#!AER-DAT4.0\r\n"
_COMPRESSIONS = {0: "none", 1: "lz4", 2: "lz4-high", 3: "zstd", 4: "zstd-high"}
_MAX_IOHEADER = 16 * 1024 * 1024


def _u32(buf: bytes, off: int, src: str) -> int:
    if off < 0 or off + 4 > len(buf):
        raise CorruptFileError(src, "the AEDAT 4 IOHeader flatbuffer points outside itself")
    return struct.unpack_from("<I", buf, off)[0]


def parse_ioheader(buf: bytes, src: str) -> tuple[int, int, str]:
    """Bounds-checked read of the IOHeader flatbuffer → (compression, file_data_position, description).

    Table layout (ioheader.fbs): field 0 compression int32 = 0, field 1 file_data_position int64 = -1,
    field 2 description string.
    """
    table = _u32(buf, 0, src)
    soff = struct.unpack_from("<i", buf, table)[0] if table + 4 <= len(buf) else None
    if soff is None:
        raise CorruptFileError(src, "the AEDAT 4 IOHeader flatbuffer points outside itself")
    vtable = table - soff
    if vtable < 0 or vtable + 4 > len(buf):
        raise CorruptFileError(src, "the AEDAT 4 IOHeader vtable lies outside the header")
    vt_size, tbl_size = struct.unpack_from("<HH", buf, vtable)
    if vt_size < 4 or vt_size % 2 or vtable + vt_size > len(buf) or table + tbl_size > len(buf):
        raise CorruptFileError(src, "the AEDAT 4 IOHeader vtable has impossible sizes")
    n_fields = (vt_size - 4) // 2
    fields = [struct.unpack_from("<H", buf, vtable + 4 + 2 * i)[0] for i in range(n_fields)]

    def field(i: int, width: int) -> int | None:
        if i >= n_fields or fields[i] == 0:
            return None
        if fields[i] + width > tbl_size:
            raise CorruptFileError(src, f"the AEDAT 4 IOHeader field {i} lies outside its table")
        return table + fields[i]

    off = field(0, 4)
    compression = struct.unpack_from("<i", buf, off)[0] if off is not None else 0
    off = field(1, 8)
    data_pos = struct.unpack_from("<q", buf, off)[0] if off is not None else -1
    off = field(2, 4)
    if off is None:
        raise CorruptFileError(src, "the AEDAT 4 IOHeader has no description")
    s = off + _u32(buf, off, src)
    n = _u32(buf, s, src)
    if s + 4 + n + 1 > len(buf) or buf[s + 4 + n] != 0:
        raise CorruptFileError(src, "the AEDAT 4 IOHeader description runs past the header")
    try:
        desc = buf[s + 4:s + 4 + n].decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptFileError(src, "the AEDAT 4 IOHeader description is not valid UTF-8") from None
    if compression not in _COMPRESSIONS:
        raise CorruptFileError(src, f"unknown AEDAT 4 compression code {compression}")
    return compression, data_pos, desc


def event_streams(desc: str, src: str) -> dict[int, tuple[int, int]]:
    """Event streams named in the IOHeader XML: stream id → (sizeX, sizeY)."""
    try:
        root = ET.fromstring(desc)
    except ET.ParseError as e:
        raise CorruptFileError(src, f"the AEDAT 4 stream description is not valid XML ({e})") from None
    out_info = next((n for n in root if n.tag == "node" and n.get("name") == "outInfo"), None)
    if root.tag != "dv" or out_info is None:
        raise CorruptFileError(src, "the AEDAT 4 stream description has no <dv><node name='outInfo'>")
    streams = {}
    for node in out_info:
        if node.tag != "node":
            continue
        attrs = {a.get("key"): (a.text or "") for a in node if a.tag == "attr"}
        if attrs.get("typeIdentifier") != "EVTS":
            continue
        info = next((n for n in node if n.tag == "node" and n.get("name") == "info"), None)
        size = {a.get("key"): (a.text or "") for a in info if a.tag == "attr"} if info is not None else {}
        try:
            sid, w, h = int(node.get("name", "")), int(size.get("sizeX", "")), int(size.get("sizeY", ""))
        except ValueError:
            raise CorruptFileError(src, "an AEDAT 4 event stream lacks a numeric id, sizeX or sizeY") from None
        streams[sid] = (w, h)
    return streams


def check_framing(path, src: str, size: int) -> tuple[dict[int, tuple[int, int]], int]:
    """Check everything up to the packet payloads; return (event streams, number of packets)."""
    head = read_bytes(path, 18)
    if head[:14] != MAGIC or len(head) < 18:
        raise CorruptFileError(src, "the AEDAT 4 magic line or header length is missing (truncated)")
    hlen = struct.unpack_from("<I", head, 14)[0]
    if hlen > min(size - 18, _MAX_IOHEADER):
        raise CorruptFileError(src, f"the AEDAT 4 header claims {hlen:,} bytes but the file has {size:,}")
    _, data_pos, desc = parse_ioheader(read_bytes(path, hlen, 18), src)
    streams = event_streams(desc, src)
    if not streams:
        raise CorruptFileError(src, "the AEDAT 4 file declares no event stream (frames/IMU only?)")
    end = size if data_pos < 0 else data_pos
    pos = 18 + hlen
    if end > size or end < pos:
        raise CorruptFileError(src, f"the AEDAT 4 file-data position {data_pos:,} lies outside the file")
    n = 0
    with open(path, "rb") as f:
        while pos < end:
            f.seek(pos)
            b = f.read(8)
            if len(b) < 8 or pos + 8 > end:
                raise CorruptFileError(src, f"packet {n} at byte {pos:,} is cut short (truncated file)")
            length = struct.unpack_from("<I", b, 4)[0]
            if pos + 8 + length > end:
                raise CorruptFileError(src, f"packet {n} at byte {pos:,} claims {length:,} bytes; only "
                                       f"{end - pos - 8:,} remain (lying size or truncated file)")
            pos += 8 + length
            n += 1
    return streams, n


def read_aedat4(path) -> EventStream:
    """Read the polarity events of an AEDAT 4 file (see the module docstring for what is ignored)."""
    src = source_name(path)
    size = check_file(path)
    streams, _ = check_framing(path, src, size)
    import aedat

    parts: dict[int, list[np.ndarray]] = {}
    total = 0
    try:
        decoder = aedat.Decoder(src)
        for packet in decoder:
            if "events" not in packet or packet["stream_id"] not in streams:
                continue
            arr = packet["events"]
            total += len(arr)
            check_event_count(max(total, 1), src)
            parts.setdefault(int(packet["stream_id"]), []).append(arr)
    except InputError:
        raise
    except BaseException as e:  # noqa: BLE001 - the decoder's errors, including pyo3's PanicException
        if isinstance(e, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        raise CorruptFileError(src, f"the AEDAT 4 decoder failed: {str(e)[:200]}") from None
    if not parts:
        check_event_count(0, src, "the file (polarity events)")
    sid = min(parts)
    raw = np.concatenate(parts[sid])
    check_event_count(len(raw), src, "the event stream")
    if raw["t"].size and int(raw["t"].max()) > np.iinfo(np.int64).max:
        raise CorruptFileError(src, "timestamps exceed the int64 microsecond range")
    ev = np.empty(len(raw), dtype=EVENT_DTYPE)
    ev["x"], ev["y"] = raw["x"], raw["y"]  # uint16 → int16: values ≥ 32768 turn negative and are refused below
    ev["t"] = raw["t"]
    ev["p"] = raw["on"]  # the polarity field is named `on` (titled `p`)
    return finish(ev, streams[sid], src, "aedat4")
