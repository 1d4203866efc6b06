"""The one event dtype of the workbench and the functions every event path shares.

All readers, the simulator and the transforms speak `EVENT_DTYPE` — tonic's structured dtype:
x, y (int16 pixel coordinates), t (int64 microseconds), p (bool polarity, True = brightening / ON).

    >>> ev = make_events(x=[1, 2], y=[0, 3], t=[10, 20], p=[1, 0])
    >>> ev.dtype == EVENT_DTYPE, int(ev["t"][-1])
    (True, 20)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.errors import CorruptFileError, EmptyInputError, InputTooLargeError

# identical to tonic.io.events_struct (checked in tests), so tonic transforms accept our arrays directly
EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", bool)])

MAX_EVENTS = 200_000_000  # ~3 GB in EVENT_DTYPE; anything above is refused with a clear error
MAX_SENSOR_SIDE = 4096

# field-name aliases found in the wild (dv-processing, aedat4, h5 layouts) → our names
_ALIASES = {
    "x": ("x", "xs", "x_pos"),
    "y": ("y", "ys", "y_pos"),
    "t": ("t", "ts", "timestamp", "timestamps", "time", "t_us"),
    "p": ("p", "ps", "polarity", "pol", "on"),
}


@dataclass(frozen=True)
class EventStream:
    """Events plus the sensor they came from. `sensor_size` is (width, height)."""

    events: np.ndarray
    sensor_size: tuple[int, int]
    source: str = "<memory>"
    format: str = "numpy"

    @property
    def duration_us(self) -> int:
        return int(self.events["t"][-1] - self.events["t"][0]) if len(self.events) else 0

    def __len__(self) -> int:
        return len(self.events)


def make_events(x, y, t, p) -> np.ndarray:
    """Build an `EVENT_DTYPE` array from four equal-length sequences."""
    x = np.asarray(x)
    ev = np.empty(len(x), dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"] = x, np.asarray(y), np.asarray(t)
    ev["p"] = np.asarray(p) > 0
    return ev


def as_event_dtype(arr: np.ndarray, source: str = "<memory>") -> np.ndarray:
    """Copy a structured array with any common field naming into `EVENT_DTYPE` (never a view)."""
    names = arr.dtype.names
    if names is None:
        raise CorruptFileError(source, "expected a structured array with fields x, y, t, p; got a plain "
                               f"{arr.dtype} array of shape {arr.shape}")
    cols = {}
    for ours, aliases in _ALIASES.items():
        found = next((a for a in aliases if a in names), None)
        if found is None:
            raise CorruptFileError(source, f"no field for '{ours}' (looked for {', '.join(aliases)}); "
                                   f"the array has fields {', '.join(names)}")
        cols[ours] = arr[found]
    return make_events(cols["x"], cols["y"], cols["t"], cols["p"])


def validate_events(events: np.ndarray, sensor_size: tuple[int, int], source: str = "<memory>") -> np.ndarray:
    """Check an event array for the problems real files have; raise one typed `InputError` naming `source`.

    Checks: dtype, non-empty, size limit, sensor size sane, coordinates inside the sensor, timestamps
    non-negative and non-decreasing. Returns the array unchanged when it is fine.
    """
    if events.dtype != EVENT_DTYPE:
        events = as_event_dtype(events, source)
    w, h = int(sensor_size[0]), int(sensor_size[1])
    if not (0 < w <= MAX_SENSOR_SIDE and 0 < h <= MAX_SENSOR_SIDE):
        raise CorruptFileError(source, f"sensor size {w}×{h} is not plausible (each side must be 1..{MAX_SENSOR_SIDE})")
    if len(events) == 0:
        raise EmptyInputError(source, "the recording holds zero events")
    if len(events) > MAX_EVENTS:
        raise InputTooLargeError(source, f"{len(events):,} events exceed the limit of {MAX_EVENTS:,}; "
                                 "cut the recording into shorter pieces")
    x, y, t = events["x"], events["y"], events["t"]
    bad_x = (x < 0) | (x >= w)
    bad_y = (y < 0) | (y >= h)
    if bad_x.any() or bad_y.any():
        i = int(np.flatnonzero(bad_x | bad_y)[0])
        raise CorruptFileError(source, f"{int((bad_x | bad_y).sum()):,} events lie outside the {w}×{h} sensor "
                               f"(first at index {i}: x={int(x[i])}, y={int(y[i])})")
    if t[0] < 0:
        raise CorruptFileError(source, f"negative timestamp {int(t[0])} µs at the first event")
    dec = np.flatnonzero(np.diff(t) < 0)
    if len(dec):
        i = int(dec[0])
        raise CorruptFileError(source, f"timestamps go backwards {len(dec):,} times (first at index {i + 1}: "
                               f"{int(t[i])} µs → {int(t[i + 1])} µs)")
    return events
