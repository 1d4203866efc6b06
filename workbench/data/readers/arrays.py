"""Events stored as arrays: numpy `.npy` / `.npz` and HDF5 — numpy and h5py, with every shape checked first.

Accepted layouts (field / dataset names may use the aliases of `workbench.data.events`: xs, ys, ts,
timestamp, polarity, on, ...):
- `.npy`: one 1-D structured array with fields x, y, t, p.
- `.npz`: one structured array member, or separate 1-D members x / y / t / p; optional `sensor_size` member.
- HDF5: group `events` with datasets x, y, t, p (or xs, ys, ts, ps); a compound dataset `events`; or top-level
  x, y, t, p datasets. Sensor size from a `sensor_size` attribute or `width` / `height` attributes on the root,
  the `events` group or dataset.
Without a stored sensor size the size is inferred as (max x + 1, max y + 1).

Never unpickles: `np.load(..., allow_pickle=False)` always, and object dtypes are refused from the header
before any data is read. Shapes, dtypes and byte counts come from the headers and are checked against the file
and MAX_EVENTS before numpy or h5py allocate anything.

    >>> import numpy as np, tempfile, os
    >>> from workbench.data.events import make_events
    >>> path = os.path.join(tempfile.mkdtemp(), "ev.npy")
    >>> np.save(path, make_events([1, 2], [0, 3], [10, 20], [1, 0]))
    >>> read_npy(path).sensor_size
    (3, 4)
"""
from __future__ import annotations

import zipfile

import numpy as np

from workbench.data.events import _ALIASES, EventStream
from workbench.errors import CorruptFileError, InputError, UnsupportedFormatError

from ._common import check_event_count, check_file, columns_to_events, finish, inferred_sensor, \
    sensor_from_values, source_name

_MAX_NPY_HEADER = 64 * 1024
_DEFLATE_MAX_RATIO = 1100  # deflate cannot expand more than ~1032:1


def _npy_header(fobj, src: str, what: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header bytes) of an .npy stream, refusing object dtypes; raises CorruptFileError."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fobj)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fobj, max_header_size=_MAX_NPY_HEADER)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(fobj, max_header_size=_MAX_NPY_HEADER)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
        offset = fobj.tell()
    except Exception as e:  # noqa: BLE001 - numpy raises ValueError/SyntaxError/... on a bad header
        raise CorruptFileError(src, f"{what} has no valid .npy header ({str(e)[:150]})") from None
    if dtype.hasobject:
        raise CorruptFileError(src, f"{what} holds Python objects (a pickled array); the workbench never "
                               "unpickles files — save plain numeric fields x, y, t, p")
    return tuple(int(s) for s in shape), dtype, offset


def _field(names, ours: str) -> str | None:
    return next((a for a in _ALIASES[ours] if a in names), None)


def _structured_to_events(arr: np.ndarray, src: str) -> np.ndarray:
    names = arr.dtype.names or ()
    found = {k: _field(names, k) for k in "xytp"}
    missing = [k for k, v in found.items() if v is None]
    if missing:
        raise UnsupportedFormatError(src, f"the array has fields {', '.join(names) or '(none)'}; no field for "
                                     f"{', '.join(missing)} (expected x, y, t, p or their aliases)")
    return columns_to_events(*(arr[found[k]] for k in "xytp"), src)


def _check_shape(shape, dtype: np.dtype, available: int, src: str, what: str) -> int:
    if len(shape) != 1:
        raise UnsupportedFormatError(src, f"{what} has shape {shape}; expected a 1-D array of events")
    n = shape[0]
    if n * dtype.itemsize > available:
        raise CorruptFileError(src, f"{what} claims {n:,} items of {dtype.itemsize} bytes but only {available:,} "
                               "bytes are stored (lying header or truncated file)")
    return check_event_count(n, src, what)


def read_npy(path) -> EventStream:
    """Read a `.npy` structured event array (sensor size inferred as max+1)."""
    src = source_name(path)
    size = check_file(path)
    with open(path, "rb") as f:
        shape, dtype, offset = _npy_header(f, src, "the file")
    if dtype.names is None:
        raise UnsupportedFormatError(src, f"the array is a plain {dtype} array of shape {shape}; expected a "
                                     "structured array with fields x, y, t, p")
    _check_shape(shape, dtype, size - offset, src, "the array")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - ValueError (pickles, bad data), OSError, EOFError
        raise CorruptFileError(src, f"numpy cannot load the array ({str(e)[:150]})") from None
    ev = _structured_to_events(arr, src)
    return finish(ev, inferred_sensor(ev), src, "npy")


def read_npz(path) -> EventStream:
    """Read a `.npz`: one structured member or x/y/t/p members, optional `sensor_size` (W, H)."""
    src = source_name(path)
    check_file(path)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename[:-4] if i.filename.endswith(".npy") else i.filename: i for i in zf.infolist()}
            headers = {}
            for key, info in infos.items():
                limit = info.compress_size * (_DEFLATE_MAX_RATIO if info.compress_type else 1) + 1024
                if info.file_size > limit:
                    raise CorruptFileError(src, f"member '{key}' claims {info.file_size:,} bytes from "
                                           f"{info.compress_size:,} compressed bytes")
                with zf.open(info) as f:
                    shape, dtype, offset = _npy_header(f, src, f"member '{key}'")
                headers[key] = (shape, dtype, info.file_size - offset)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - BadZipFile, zlib.error, EOFError, OSError, ...
        raise CorruptFileError(src, f"the .npz archive cannot be read ({str(e)[:150]})") from None
    names = [k for k in headers if k != "sensor_size"]
    cols = {k: _field(names, k) for k in "xytp"}
    if all(cols.values()):
        wanted = [cols[k] for k in "xytp"]
    else:
        structured = [k for k in names if headers[k][1].names]
        if len(structured) != 1:
            raise UnsupportedFormatError(src, f"the .npz holds {', '.join(headers) or 'nothing'}; expected one "
                                         "structured event array or members x, y, t, p")
        wanted = structured
    lengths = {_check_shape(*headers[k], src, f"member '{k}'") for k in wanted}
    if len(lengths) != 1:
        raise CorruptFileError(src, f"members {', '.join(wanted)} have different lengths {sorted(lengths)}")
    if "sensor_size" in headers:
        s_shape, s_dtype, s_avail = headers["sensor_size"]
        if int(np.prod(s_shape)) > 3 or int(np.prod(s_shape)) * s_dtype.itemsize > s_avail:
            raise CorruptFileError(src, f"member 'sensor_size' has shape {s_shape}; expected (width, height)")
        wanted = wanted + ["sensor_size"]
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in wanted}
    except Exception as e:  # noqa: BLE001
        raise CorruptFileError(src, f"numpy cannot load the .npz members ({str(e)[:150]})") from None
    if all(cols.values()):
        ev = columns_to_events(*(arrays[cols[k]] for k in "xytp"), src)
    else:
        ev = _structured_to_events(arrays[wanted[0]], src)
    sensor = (sensor_from_values(arrays["sensor_size"], src, "member 'sensor_size'") if "sensor_size" in arrays
              else inferred_sensor(ev))
    return finish(ev, sensor, src, "npz")


def _h5_sensor(objs, src: str) -> tuple[int, int] | None:
    for obj in objs:
        attrs = obj.attrs
        if "sensor_size" in attrs:
            return sensor_from_values(attrs["sensor_size"], src, "HDF5 attribute 'sensor_size'")
        if "width" in attrs and "height" in attrs:
            return sensor_from_values([np.asarray(attrs["width"]).ravel()[0], np.asarray(attrs["height"]).ravel()[0]],
                                      src, "HDF5 attributes 'width'/'height'")
    return None


def _h5_dataset_ok(ds, src: str, name: str) -> int:
    if ds.dtype.kind not in "iufb" or ds.ndim != 1:
        raise UnsupportedFormatError(src, f"HDF5 dataset '{name}' is {ds.dtype} with shape {ds.shape}; expected a "
                                     "1-D numeric column")
    return check_event_count(int(ds.shape[0]), src, f"HDF5 dataset '{name}'")


def read_hdf5(path) -> EventStream:
    """Read events from an HDF5 file in one of the layouts of the module docstring."""
    import h5py

    src = source_name(path)
    check_file(path)
    try:
        with h5py.File(path, "r") as f:
            group, ev = None, None
            events = f.get("events")
            if isinstance(events, h5py.Dataset) and events.dtype.names:
                if events.ndim != 1 or events.dtype.hasobject:
                    raise UnsupportedFormatError(src, f"HDF5 dataset 'events' has shape {events.shape}; expected 1-D")
                check_event_count(int(events.shape[0]), src, "HDF5 dataset 'events'")
                ev = _structured_to_events(events[()], src)
            else:
                group = events if isinstance(events, h5py.Group) else f
                names = [k for k in group.keys() if isinstance(group.get(k), h5py.Dataset)]
                cols = {k: _field(names, k) for k in "xytp"}
                if not all(cols.values()):
                    raise UnsupportedFormatError(src, "no events found: expected a group 'events' with datasets x, "
                                                 "y, t, p (or xs, ys, ts, ps), a compound dataset 'events' or "
                                                 f"top-level x, y, t, p; found {', '.join(list(f.keys())[:10])}")
                lengths = {_h5_dataset_ok(group[cols[k]], src, cols[k]) for k in "xytp"}
                if len(lengths) != 1:
                    raise CorruptFileError(src, f"HDF5 datasets x, y, t, p have different lengths {sorted(lengths)}")
                ev = columns_to_events(*(group[cols[k]][()] for k in "xytp"), src)
            objs = [f] + ([events] if events is not None else [])
            sensor = _h5_sensor(objs, src)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - h5py raises OSError/RuntimeError/KeyError/... on damaged files
        raise CorruptFileError(src, f"the HDF5 file cannot be read ({str(e)[:150]})") from None
    return finish(ev, sensor or inferred_sensor(ev), src, "hdf5")
