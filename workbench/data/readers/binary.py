"""N-MNIST binaries (40-bit ATIS events) — own vectorised numpy decoder, identical to tonic's `read_mnist_file`.

Each event is 5 bytes: x (byte 0), y (byte 1), polarity (bit 7 of byte 2) and a 23-bit timestamp in µs
(bits 0..6 of byte 2, bytes 3 and 4, big-endian). Rows with y == 240 are timestamp-overflow markers: every
following timestamp gains 2^13 µs (the rule of the original eventvision code that tonic copies), and the
markers themselves are dropped. Sensor: 34×34 (N-MNIST's documented size); coordinates outside are refused.
We decode ourselves because tonic's version walks the overflow markers in a Python loop and does not check
that the file is a whole number of events.

The format has no magic bytes, so `looks_like_nmnist` sniffs it from content: every decoded coordinate < 34 and
timestamps non-decreasing (and advancing) over the whole events of the first 64 KiB.

    >>> import numpy as np
    >>> raw = np.array([3, 4, 0x80, 0, 10, 5, 6, 0, 0, 20], np.uint8).tobytes()
    >>> decode_nmnist(raw)[["x", "y", "t"]].tolist(), decode_nmnist(raw)["p"].tolist()
    ([(3, 4, 10), (5, 6, 20)], [True, False])
"""
from __future__ import annotations

import numpy as np

from workbench.data.events import EVENT_DTYPE, EventStream
from workbench.errors import CorruptFileError

from ._common import DEFAULT_SENSORS, check_event_count, check_file, finish, source_name

OVERFLOW_Y = 240
OVERFLOW_STEP = 2**13
NMNIST_SIDE = 34


def decode_nmnist(raw: bytes | np.ndarray) -> np.ndarray:
    """40-bit N-MNIST events → EVENT_DTYPE (overflow markers applied and dropped). `raw` length % 5 == 0."""
    b = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, (bytes, bytearray, memoryview)) else raw
    rows = b.reshape(-1, 5).astype(np.int64)  # (N, 5): x, y, p|t_hi, t_mid, t_lo
    is_overflow = rows[:, 1] == OVERFLOW_Y
    t = ((rows[:, 2] & 0x7F) << 16) | (rows[:, 3] << 8) | rows[:, 4]
    t = t + np.cumsum(is_overflow) * OVERFLOW_STEP  # a marker shifts itself and everything after it
    keep = ~is_overflow
    ev = np.empty(int(keep.sum()), dtype=EVENT_DTYPE)
    ev["x"], ev["y"] = rows[keep, 0], rows[keep, 1]
    ev["p"] = (rows[keep, 2] & 0x80) != 0
    ev["t"] = t[keep]
    return ev


def looks_like_nmnist(head: bytes, size: int) -> bool:
    """Content test for the magic-less N-MNIST format on the first bytes of a file of `size` bytes.

    At least 10 whole events in `head`; all coordinates < 34 (not all zero); time non-decreasing and advancing.
    `size` need not be a multiple of 5, so a truncated N-MNIST file is still recognised (and reported corrupt).
    """
    n = min(len(head), 64 * 1024, size) // 5 * 5
    if n < 50:
        return False
    ev = decode_nmnist(head[:n])
    if len(ev) < 10:
        return False
    x, y, t = ev["x"], ev["y"], ev["t"]
    ok_xy = bool((x < NMNIST_SIDE).all() and (y < NMNIST_SIDE).all() and (x.any() or y.any()))
    return ok_xy and bool((np.diff(t) >= 0).all()) and int(t[-1]) > int(t[0])


def read_nmnist(path) -> EventStream:
    """Read an N-MNIST `.bin` file; sensor 34×34.

    >>> read_nmnist("nmnist_sample.bin").sensor_size  # doctest: +SKIP
    (34, 34)
    """
    src = source_name(path)
    size = check_file(path)
    if size % 5:
        raise CorruptFileError(src, f"the file has {size:,} bytes, not a whole number of 5-byte N-MNIST events "
                               "(truncated?)")
    check_event_count(size // 5, src)
    raw = np.fromfile(path, dtype=np.uint8)
    if len(raw) != size:
        raise CorruptFileError(src, "the file changed or ended while it was read")
    ev = decode_nmnist(raw)
    check_event_count(len(ev), src, "the file (after dropping overflow markers)")
    return finish(ev, DEFAULT_SENSORS["nmnist"], src, "nmnist")
