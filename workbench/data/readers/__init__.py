"""Event-camera file readers: one entry point, content sniffing, strict validation.

`read_events(path)` detects the format from the file's content (`sniff_format`; the name only breaks ties),
decodes it with the library or parser listed in `docs/event_formats.md`, and returns an `EventStream` that
has passed `validate_events`: EVENT_DTYPE (x, y int16; t int64 µs; p bool), coordinates inside
`sensor_size` = (width, height), timestamps ≥ 0 and non-decreasing. No reader shifts timestamps: every format
we read stores unsigned times (AEDAT 2.0 / DAT 32-bit counters are unwrapped, never shifted).

Sensor size: from the file when it states one (AEDAT 3.1 `#Source` camera, AEDAT 4 stream info, Prophesee
header geometry or camera, HDF5 / npz `sensor_size`, CSV `width height` line); else the format's documented
default (AEDAT 2.0 DVS128 128×128, N-MNIST 34×34, N-CARS 120×100, DAT Gen1 ATIS 304×240); else inferred as
(max x + 1, max y + 1) (npy, npz/HDF5/CSV without a size, EVT files naming no geometry or known camera).

Limits: files over `MAX_FILE_BYTES` (4 GiB; CSV/TXT 1 GiB) and recordings over `events.MAX_EVENTS` events raise
InputTooLargeError before the data is read; a 0-byte or 0-event file raises EmptyInputError; unknown content
UnsupportedFormatError; truncated files, lying headers, bad values, backwards time or out-of-sensor
coordinates CorruptFileError. Every message names the file.

    >>> sorted(SUPPORTED_FORMATS)[:3]
    ['aedat2', 'aedat3.1', 'aedat4']
    >>> read_events("../shared/data/real/events/nmnist_sample.bin").sensor_size  # doctest: +SKIP
    (34, 34)
"""
from __future__ import annotations

from workbench.data.events import EventStream
from workbench.errors import UnsupportedFormatError

from ._common import MAX_FILE_BYTES, MAX_TEXT_BYTES, check_file, source_name
from .aedat import read_aedat2, read_aedat31
from .aedat4 import read_aedat4
from .arrays import read_hdf5, read_npy, read_npz
from .binary import read_nmnist
from .gesture_labels import (DVS_GESTURE_CLASSES, GESTURE_LABELS, LABEL_FILE_MESSAGE, GestureSegment,
                             cut_gesture_segments, read_gesture_labels)
from .prophesee import read_prophesee
from .sniff import sniff_format
from .text import read_csv

SUPPORTED_FORMATS: dict[str, str] = {
    "aedat2": "AEDAT 2.0 (jAER), DVS128 recordings — own parser",
    "aedat3.1": "AEDAT 3.1 (cAER), e.g. DVS128 Gesture; polarity packets — own parser",
    "aedat4": "AEDAT 4 (DV: DVXplorer, DAVIS); polarity events — aedat package",
    "dat": "Prophesee DAT (8-byte TD/CD events, '%' header) — expelliarmus",
    "ncars": "N-CARS sample (ATIS DAT, 120×100) — expelliarmus",
    "evt2": "Prophesee RAW EVT 2.0 — expelliarmus",
    "evt3": "Prophesee RAW EVT 3.0 (external triggers ignored) — own numpy decoder",
    "nmnist": "N-MNIST binary (40-bit events, 34×34) — own parser",
    "npy": "numpy .npy structured array with x, y, t, p — numpy",
    "npz": "numpy .npz: one structured array or x/y/t/p members (+ sensor_size) — numpy",
    "hdf5": "HDF5: events/{x,y,t,p}, events/{xs,ys,ts,ps}, top-level x,y,t,p or compound 'events' — h5py",
    "csv": "CSV/TXT rows t, x, y, p (comma or whitespace; optional header and 'width height' line) — numpy",
}

_READERS = {
    "aedat2": read_aedat2,
    "aedat3.1": read_aedat31,
    "aedat4": read_aedat4,
    "dat": lambda p: read_prophesee(p, "dat"),
    "ncars": lambda p: read_prophesee(p, "ncars"),
    "evt2": lambda p: read_prophesee(p, "evt2"),
    "evt3": lambda p: read_prophesee(p, "evt3"),
    "nmnist": read_nmnist,
    "npy": read_npy,
    "npz": read_npz,
    "hdf5": read_hdf5,
    "csv": read_csv,
}


def read_events(path, format: str | None = None) -> EventStream:  # noqa: A002 - the public name the app uses
    """Read any supported event file into a validated `EventStream` (see the module docstring).

    format: force a format name from SUPPORTED_FORMATS instead of sniffing the content.
    A DVS128 Gesture label file raises UnsupportedFormatError saying it labels a recording and how to use it.

    >>> s = read_events("../shared/data/real/events/dvs128_walking.aedat")  # doctest: +SKIP
    >>> s.format, s.sensor_size  # doctest: +SKIP
    ('aedat2', (128, 128))
    """
    src = source_name(path)
    if format is None:
        fmt = sniff_format(path)
        if fmt == GESTURE_LABELS:
            raise UnsupportedFormatError(src, LABEL_FILE_MESSAGE)
    else:
        fmt = str(format).lower()
        if fmt not in _READERS:
            raise UnsupportedFormatError(src, f"unknown format {format!r}; supported event formats: "
                                         f"{', '.join(SUPPORTED_FORMATS)}")
    check_file(path, MAX_TEXT_BYTES if fmt == "csv" else MAX_FILE_BYTES)
    return _READERS[fmt](path)


__all__ = ["DVS_GESTURE_CLASSES", "GESTURE_LABELS", "MAX_FILE_BYTES", "SUPPORTED_FORMATS", "GestureSegment",
           "cut_gesture_segments", "read_events", "read_gesture_labels", "sniff_format"]
