"""Property tests: mutated real files never crash a reader.

Seeds are the real files (cut to ≤ 64 KiB at a format boundary: AEDAT 2.0 at an event, AEDAT 4 at a packet with
the file-data table dropped, EVT3 at a word) plus files written from real events in every other format (AEDAT
3.1, DAT, N-CARS, EVT2, npy, npz, HDF5, CSV, a DVS128 Gesture label file). Each example applies one mutation —
byte flips, truncation, inserted or deleted byte runs, header line edits, extreme int32 values — and asserts
that reading either returns a valid EventStream or raises an `InputError` subclass; any other exception, a
hang or a segfault is a bug. Deterministic by default (derandomize); set WORKBENCH_FUZZ_RANDOM=1 to explore.
"""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

try:  # the writers live in the reader tests (tests/ is on sys.path in pytest's default import mode)
    from test_event_readers import write_aedat31, write_csv, write_dat, write_evt2, write_hdf5, write_labels
except ImportError:  # tests/ became a package
    from tests.test_event_readers import write_aedat31, write_csv, write_dat, write_evt2, write_hdf5, write_labels
from workbench.data.events import EVENT_DTYPE, validate_events
from workbench.data.readers import read_events, read_gesture_labels
from workbench.errors import InputError

pytestmark = pytest.mark.realdata

SETTINGS = settings(max_examples=800, deadline=None, database=None,
                    derandomize=os.environ.get("WORKBENCH_FUZZ_RANDOM") != "1",
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
CAP = 64 * 1024
EXTS = ["", ".bin", ".raw", ".dat", ".csv", ".npy", ".h5", ".aedat4"]


def _aedat4_prefix(data: bytes) -> bytes:
    """Whole packets of an AEDAT 4 file up to CAP bytes; file-data position set to -1 (no table)."""
    b = bytearray(data)
    hlen = struct.unpack_from("<I", b, 14)[0]
    pos = 18 + hlen
    fdp = struct.unpack_from("<q", b, 54)[0]  # the IOHeader's file_data_position field in this file
    while pos + 8 <= len(b):
        size = struct.unpack_from("<I", b, pos + 4)[0]
        if pos + 8 + size > CAP:
            break
        pos += 8 + size
    assert fdp > pos, "unexpected IOHeader layout"
    struct.pack_into("<q", b, 54, -1)
    return bytes(b[:pos])


@pytest.fixture(scope="module")
def seeds(real_data, tmp_path_factory) -> dict[str, tuple[bytes, str]]:
    """name → (bytes, canonical extension); each seed reads cleanly before mutation."""
    ev_dir = real_data / "events"
    tmp = tmp_path_factory.mktemp("fuzz_seeds")
    walk = open(ev_dir / "dvs128_walking.aedat", "rb").read()
    start = walk.index(b"\n#End Of ASCII Header") if b"#End Of ASCII" in walk else None
    lines_end = 4612 if start is None else start
    out = {"aedat2": (walk[:lines_end + (CAP - lines_end) // 8 * 8], ".aedat"),
           "aedat4": (_aedat4_prefix(open(ev_dir / "dvxplorer_sample.aedat4", "rb").read()), ".aedat4"),
           "nmnist": (open(ev_dir / "nmnist_sample.bin", "rb").read(), ".bin"),
           "evt3": (open(ev_dir / "prophesee_evt3_sample.raw", "rb").read()[:CAP], ".raw")}
    events = read_events(ev_dir / "dvs128_walking.aedat").events[:2500]  # real events for the other writers
    ref = np.load(ev_dir / "prophesee_evt3_sample_decoded.npy", allow_pickle=False)[:3500]
    np.save(tmp / "ref.npy", ref)
    write_aedat31(tmp / "g.aedat", events, packet=300)
    write_dat(tmp / "d.dat", events, geometry=(128, 128))
    write_dat(tmp / "n.dat", events[(events["x"] < 120) & (events["y"] < 100)], geometry=None, ev_type=0)
    write_evt2(tmp / "e.raw", events, geometry=(128, 128))
    np.savez(tmp / "c.npz", x=events["x"], y=events["y"], t=events["t"], p=events["p"], sensor_size=[128, 128])
    np.savez_compressed(tmp / "s.npz", events=events)
    write_hdf5(tmp / "g.h5", events, "group", sensor=(128, 128))
    write_hdf5(tmp / "c.h5", events[:1500], "compound")
    write_csv(tmp / "e.csv", events[:1200])
    write_labels(tmp / "l_labels.csv", [(1, 53036986, 59508469), (5, 87200306, 97835393), (11, 171367247, 177991967)])
    for name, file, ext in [("npy", "ref.npy", ".npy"), ("aedat3.1", "g.aedat", ".aedat"), ("dat", "d.dat", ".dat"),
                            ("ncars", "n.dat", ".dat"), ("evt2", "e.raw", ".raw"), ("npz", "c.npz", ".npz"),
                            ("npz_structured", "s.npz", ".npz"), ("hdf5", "g.h5", ".h5"),
                            ("hdf5_compound", "c.h5", ".h5"), ("csv", "e.csv", ".csv"),
                            ("labels", "l_labels.csv", ".csv")]:
        out[name] = (open(tmp / file, "rb").read(), ext)
    for name, (blob, ext) in out.items():  # every seed must be valid before we break it
        assert len(blob) <= CAP + 1024, name
        (tmp / f"check{ext}").write_bytes(blob)
        if name == "labels":
            assert len(read_gesture_labels(tmp / f"check{ext}")) == 3
        else:
            assert len(read_events(tmp / f"check{ext}")) > 0, name
    return out


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz_cases")


def check_bytes(blob: bytes, ext: str, labels: bool, case_dir) -> None:
    """The property: valid EventStream (or labels) or an InputError subclass, nothing else."""
    path = case_dir / f"case{ext}"
    path.write_bytes(blob)
    try:
        if labels:
            segs = read_gesture_labels(path)
            assert segs and all(0 <= s.label <= 10 and 0 <= s.start_us < s.end_us for s in segs)
            return
        s = read_events(path)
    except InputError as e:
        assert str(path) in str(e)
        return
    assert s.events.dtype == EVENT_DTYPE and len(s) > 0
    validate_events(s.events, s.sensor_size, str(path))  # raises if anything slipped through


# ------------------------------------------------------------------------------------------------- mutations
@st.composite
def flips(draw, blob: bytes) -> bytes:
    if not blob:
        return blob
    b = bytearray(blob)
    head = draw(st.booleans())  # half the flips land in the first 512 bytes, where the headers are
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, min(len(b), 512) - 1 if head else len(b) - 1))
        b[i] = draw(st.integers(0, 255))
    return bytes(b)


@st.composite
def truncations(draw, blob: bytes) -> bytes:
    if not blob:
        return blob
    return blob[:draw(st.integers(0, len(blob) - 1))]


@st.composite
def runs(draw, blob: bytes) -> bytes:
    i = draw(st.integers(0, len(blob)))
    if draw(st.booleans()):
        return blob[:i] + draw(st.binary(min_size=1, max_size=40)) + blob[i:]
    return blob[:i] + blob[i + draw(st.integers(1, 200)):]


@st.composite
def header_edits(draw, blob: bytes) -> bytes:
    """Edit one of the first text lines: replace, delete, duplicate or cut it, or change a number in it."""
    head, tail = blob[:4096], blob[4096:]
    lines = head.split(b"\n")
    i = draw(st.integers(0, max(min(len(lines) - 2, 40), 0)))
    op = draw(st.sampled_from(["replace", "delete", "duplicate", "cut", "number"]))
    if op == "replace":
        lines[i] = lines[i][:1] + draw(st.binary(max_size=40))
    elif op == "delete":
        del lines[i]
    elif op == "duplicate":
        lines.insert(i, lines[i])
    elif op == "cut":
        lines[i] = lines[i][:draw(st.integers(0, len(lines[i])))]
    else:
        lines[i] = lines[i] + str(draw(st.sampled_from([0, -1, 2**31, 10**12, 99999]))).encode()
    return b"\n".join(lines) + tail


@st.composite
def int_overwrites(draw, blob: bytes) -> bytes:
    """Lying sizes and counts: put an extreme int32 at an aligned offset (packet headers, lengths, shapes)."""
    if len(blob) < 4:
        return blob
    b = bytearray(blob)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, (len(b) - 4) // 4)) * 4
        v = draw(st.sampled_from([0, 1, -1, 7, 2**31 - 1, -(2**31), 2**16, 2**24]) | st.integers(-(2**31), 2**31 - 1))
        struct.pack_into("<i", b, i, v)
    return bytes(b)


def _run(seeds, case_dir, data, mutation) -> None:
    name = data.draw(st.sampled_from(sorted(seeds)), label="seed")
    blob, ext = seeds[name]
    if data.draw(st.integers(0, 9), label="rename") == 0:
        ext = data.draw(st.sampled_from(EXTS), label="ext")
    check_bytes(data.draw(mutation(blob), label="mutated"), ext, name == "labels", case_dir)


@SETTINGS
@given(data=st.data())
def test_byte_flips(seeds, case_dir, data):
    _run(seeds, case_dir, data, flips)


@SETTINGS
@given(data=st.data())
def test_truncation(seeds, case_dir, data):
    _run(seeds, case_dir, data, truncations)


@SETTINGS
@given(data=st.data())
def test_inserted_and_deleted_runs(seeds, case_dir, data):
    _run(seeds, case_dir, data, runs)


@SETTINGS
@given(data=st.data())
def test_header_line_edits(seeds, case_dir, data):
    _run(seeds, case_dir, data, header_edits)


@SETTINGS
@given(data=st.data())
def test_lying_sizes_and_counts(seeds, case_dir, data):
    _run(seeds, case_dir, data, int_overwrites)


@settings(SETTINGS, max_examples=600)
@given(data=st.data())
def test_stacked_mutations(seeds, case_dir, data):
    """Two mutations of different kinds on top of each other."""
    name = data.draw(st.sampled_from(sorted(seeds)), label="seed")
    blob, ext = seeds[name]
    kinds = [flips, truncations, runs, header_edits, int_overwrites]
    for kind in data.draw(st.lists(st.sampled_from(kinds), min_size=2, max_size=2), label="kinds"):
        blob = data.draw(kind(blob))
    check_bytes(blob, ext, name == "labels", case_dir)
