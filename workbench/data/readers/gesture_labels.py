"""DVS128 Gesture label files (`userXX_<lighting>_labels.csv`) and cutting a recording into labelled samples.

A label file is `class,startTime_usec,endTime_usec` followed by one row per gesture: the class number 1..11
(index 0..10 in `DVS_GESTURE_CLASSES`, tonic's order) and the gesture's time span in the recording's own
microsecond clock (the AEDAT 3.1 timestamps). A segment covers events with start ≤ t < end.

    >>> DVS_GESTURE_CLASSES[0], len(DVS_GESTURE_CLASSES)
    ('Hand clapping', 11)
    >>> GestureSegment(label=7, start_us=10, end_us=20).name
    'Arm roll'
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.data.events import EventStream
from workbench.errors import CorruptFileError, EmptyInputError

from ._common import check_file, read_bytes, source_name

# tonic.datasets.DVSGesture.classes, in index order (class number in the label file = index + 1)
DVS_GESTURE_CLASSES = ("Hand clapping", "Right hand wave", "Left hand wave", "Right arm cw", "Right arm ccw",
                       "Left arm cw", "Left arm ccw", "Arm roll", "Air drums", "Air guitar", "Other gestures")
LABEL_HEADER = ("class", "starttime_usec", "endtime_usec")
MAX_LABEL_BYTES = 1024 * 1024  # a real label file is ~300 bytes
GESTURE_LABELS = "dvs-gesture-labels"  # what `sniff_format` says for a label file (not an event format)
LABEL_FILE_MESSAGE = ("this is a DVS128 Gesture label file (class, start, end), not events; pass it with the "
                      "recording it labels: read the recording (userXX_<lighting>.aedat) with read_events and cut "
                      "it with read_gesture_labels + cut_gesture_segments, or evaluate a dataset folder with "
                      "`workbench eval gesture --root PATH`")


def looks_like_gesture_labels(head: bytes) -> bool:
    """Content test: the first non-empty line of UTF-8 text is `class,startTime_usec,endTime_usec`.

    >>> looks_like_gesture_labels(b"class,startTime_usec,endTime_usec\\n1,10,20\\n")
    True
    """
    first = head.lstrip(b"\xef\xbb\xbf").lstrip().split(b"\n", 1)[0]
    try:
        cells = first.decode("utf-8").split(",")
    except UnicodeDecodeError:
        return False
    return tuple(c.strip().lower() for c in cells) == LABEL_HEADER


@dataclass(frozen=True)
class GestureSegment:
    """One labelled gesture: class index 0..10 and its [start_us, end_us) span."""

    label: int
    start_us: int
    end_us: int

    @property
    def name(self) -> str:
        return DVS_GESTURE_CLASSES[self.label]


def read_gesture_labels(csv_path) -> list[GestureSegment]:
    """Parse a DVS128 Gesture `_labels.csv` into segments (file order). Raises typed InputErrors.

    >>> segs = read_gesture_labels("user01_natural_labels.csv")  # doctest: +SKIP
    >>> segs[0]  # doctest: +SKIP
    GestureSegment(label=0, start_us=53036986, end_us=59508469)
    """
    src = source_name(csv_path)
    size = check_file(csv_path, MAX_LABEL_BYTES)
    try:
        text = read_bytes(csv_path, size).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CorruptFileError(src, "the label file is not UTF-8 text") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines or tuple(c.strip().lower() for c in lines[0].split(",")) != LABEL_HEADER:
        raise CorruptFileError(src, "the first line must be 'class,startTime_usec,endTime_usec'")
    segments = []
    for i, ln in enumerate(lines[1:], start=2):
        cells = [c.strip() for c in ln.split(",")]
        try:
            if len(cells) != 3:
                raise ValueError
            cls, start, end = (int(c) for c in cells)
        except ValueError:
            raise CorruptFileError(src, f"line {i} ({ln[:60]!r}) is not three whole numbers") from None
        if not 1 <= cls <= len(DVS_GESTURE_CLASSES):
            raise CorruptFileError(src, f"line {i}: class {cls} is outside 1..{len(DVS_GESTURE_CLASSES)}")
        if not 0 <= start < end:
            raise CorruptFileError(src, f"line {i}: the span {start}..{end} µs is empty or negative")
        segments.append(GestureSegment(label=cls - 1, start_us=start, end_us=end))
    if not segments:
        raise EmptyInputError(src, "the label file lists no gestures")
    return segments


def cut_gesture_segments(stream: EventStream, segments: list[GestureSegment]) -> list[tuple[EventStream, int]]:
    """One (EventStream, class index) per segment: the events with start ≤ t < end, timestamps unchanged.

    Raises EmptyInputError naming the recording when a segment holds no events (labels of another recording).

    >>> from workbench.data.events import make_events
    >>> s = EventStream(make_events([0, 1, 2], [0, 0, 0], [5, 15, 25], [1, 1, 0]), (4, 4), "rec")
    >>> [(len(e), c) for e, c in cut_gesture_segments(s, [GestureSegment(2, 10, 30)])]
    [(2, 2)]
    """
    t = stream.events["t"]
    out = []
    for i, seg in enumerate(segments):
        a, b = np.searchsorted(t, [seg.start_us, seg.end_us], side="left")
        if b <= a:
            raise EmptyInputError(stream.source, f"gesture segment {i} ({seg.name}, {seg.start_us}..{seg.end_us} µs) "
                                  "holds no events; do the labels belong to this recording?")
        part = EventStream(events=stream.events[a:b].copy(), sensor_size=stream.sensor_size,
                           source=f"{stream.source}#gesture{i}", format=stream.format)
        out.append((part, seg.label))
    return out
