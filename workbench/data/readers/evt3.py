"""Prophesee EVT 3.0 — our own vectorised numpy decoder, following the Prophesee EVT 3.0 specification.

Why not expelliarmus (1.1): it adds 4096 µs every time the 12-bit TIME_LOW value decreases, although EVT 3.0
emits a TIME_HIGH word carrying the incremented high bits at every wrap — so it counts each wrap twice, and it
also counts the stray "ahead" TIME_LOW words the Gen4.1 sensor writes after a TIME_HIGH keep-alive. On the
real sample this inserts 11 empty gaps of 4097 µs into a stream that otherwise runs at ~20k events/ms
(53.9 ms instead of 8.8 ms; see docs/event_formats.md). It also aborts on external-trigger words.

EVT 3.0 is a stream of little-endian 16-bit words, type in bits 12..15, 12-bit payload:

| type | word | payload |
|---|---|---|
| 0x0 | EVT_ADDR_Y | y (bits 0..10) of the following events |
| 0x2 | EVT_ADDR_X | one event: x (bits 0..10), polarity bit 11 |
| 0x3 | VECT_BASE_X | x base (bits 0..10) and polarity (bit 11) of the following vectors |
| 0x4 | VECT_12 | 12-bit mask: an event at base + i per set bit i; the base then advances by 12 |
| 0x5 | VECT_8 | 8-bit mask, the same; the base advances by 8 |
| 0x6 | EVT_TIME_LOW | low 12 bits of the time (µs) |
| 0x8 | EVT_TIME_HIGH | high 12 bits of the time (bits 12..23) |
| 0xA | EXT_TRIGGER | external trigger edge — skipped (triggers are ignored) |
| 0xE | OTHERS | system / monitoring event — skipped |
| 0x7, 0xF | CONTINUED_4 / CONTINUED_12 | payload of the preceding OTHERS word — skipped |

Any other type (0x1, 0x9, 0xB, 0xC, 0xD) is a CorruptFileError.

Time = (wraps << 24) | (TIME_HIGH << 12) | TIME_LOW, from the last TIME_HIGH / TIME_LOW before the event. As in
Prophesee's OpenEB decoder: a TIME_HIGH that changes the high bits resets TIME_LOW to 0 until the next TIME_LOW
word, and a TIME_HIGH that drops by at least 2048 (half the 12-bit range) is a 24-bit wrap (+2^24 µs); a
smaller drop is disorder, which `validate_events` then reports as time going backwards. Events before the
first TIME_HIGH (no time yet), before the first EVT_ADDR_Y (no row) and vectors before the first VECT_BASE_X
(no column) are dropped, as a stream cut in the middle starts with such words; OpenEB also waits for the
first TIME_HIGH. A vector whose events run past x = 2047 (the 11-bit address range) is corrupt.

Vectorised: no Python loop over words. Per chunk of words, every state (row, time, vector base, polarity) is
forward-filled with `np.maximum.accumulate` over the indices of the words that set it; the vector base adds
12 per VECT_12 and 8 per VECT_8 since the last VECT_BASE_X (a cumulative sum); the state at the end of a chunk
is carried into the next. The caller counts the events first (`evt3_event_count`) and refuses more than
MAX_EVENTS before the output is allocated.

    >>> w = np.array([0x8001, 0x6005, 0x0007, 0x2803, 0x300A, 0x4005], "<u2")
    >>> ev = decode_evt3_words(w, evt3_event_count(w))
    >>> ev[["x", "y", "t"]].tolist(), ev["p"].tolist()
    ([(3, 7, 4101), (10, 7, 4101), (12, 7, 4101)], [True, False, False])
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.data.events import EVENT_DTYPE
from workbench.errors import CorruptFileError

EVT3_TYPES = (0x0, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0xA, 0xE, 0xF)  # every word type of the EVT 3.0 spec
ADDR_Y, ADDR_X, VECT_BASE_X, VECT_12, VECT_8, TIME_LOW, TIME_HIGH = 0x0, 0x2, 0x3, 0x4, 0x5, 0x6, 0x8
MAX_X = 2047  # 11-bit addresses
HALF_RANGE = 2048  # a TIME_HIGH drop of at least this much is a 24-bit wrap
CHUNK_WORDS = 1 << 19  # words decoded at once: temporaries of ~90 MB per chunk

_ALLOWED = np.zeros(16, bool)
_ALLOWED[list(EVT3_TYPES)] = True
_BITS = np.arange(12, dtype=np.uint16)


def check_evt3_types(words: np.ndarray, source: str = "<memory>", offset: int = 0) -> None:
    """Raise CorruptFileError for the first word whose type the EVT 3.0 spec does not define.

    offset: byte position of words[0] in the file, for the message.
    """
    ty = (words >> 12).astype(np.intp)
    bad = ~_ALLOWED[ty]
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise CorruptFileError(source, f"unknown EVT3 word type {int(ty[j]):#x} at byte {offset + 2 * j:,}")


def evt3_event_count(words: np.ndarray) -> int:
    """Upper bound of the events in EVT3 words: one per EVT_ADDR_X, one per set mask bit of VECT_12 / VECT_8.

    Exact unless events are dropped for missing time / row / column state (see the module docstring).
    """
    ty = words >> 12
    return int((ty == ADDR_X).sum() + np.bitwise_count(words[ty == VECT_12] & 0xFFF).sum()
               + np.bitwise_count(words[ty == VECT_8] & 0xFF).sum())


@dataclass
class _State:
    """Decoder state carried from one chunk to the next (-1 = not seen yet)."""

    y: int = -1
    base: int = -1  # x of the next vector's bit 0 (VECT_BASE_X + 12 / 8 per vector since)
    base_pol: int = 0
    high: int = -1  # last TIME_HIGH payload
    high_full: int = 0  # (wraps << 24) | (high << 12)
    wraps: int = 0
    low: int = 0


def _last_index(mask: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(n,) index of the last word at or before each word where `mask` is set; -1 where there is none."""
    return np.maximum.accumulate(np.where(mask, idx, -1))


def _filled(mask: np.ndarray, values: np.ndarray, carried: int, idx: np.ndarray) -> np.ndarray:
    """(n,) value of the last word with `mask` set at or before each word; `carried` before the first one."""
    last = _last_index(mask, idx)
    return np.where(last >= 0, values[np.maximum(last, 0)], carried)


def _decode_chunk(w: np.ndarray, st: _State, source: str) -> np.ndarray:
    """Decode one chunk of words (uint16) with the carried state `st` (updated in place) → EVENT_DTYPE."""
    n = len(w)
    idx = np.arange(n)  # (n,)
    ty = (w >> 12).astype(np.int8)
    v = (w & 0xFFF).astype(np.int64)

    # row: the last EVT_ADDR_Y
    is_y = ty == ADDR_Y
    y = _filled(is_y, v & 0x7FF, st.y, idx)

    # time: TIME_HIGH with 24-bit wraps, TIME_LOW reset to 0 by a TIME_HIGH that changes the high bits
    is_high = ty == TIME_HIGH
    hv = v[is_high]  # (n_high,)
    prev = np.concatenate([[st.high], hv[:-1]])  # (n_high,) the TIME_HIGH before each one
    seen = prev >= 0
    wraps = st.wraps + np.cumsum(seen & (prev - hv >= HALF_RANGE))  # (n_high,)
    high_full = np.zeros(n, np.int64)
    high_full[is_high] = (wraps << 24) | (hv << 12)
    time_high = _filled(is_high, high_full, st.high_full, idx)
    has_time = (_last_index(is_high, idx) >= 0) | (st.high >= 0)
    changed = np.zeros(n, bool)
    changed[is_high] = hv != prev
    is_low = ty == TIME_LOW
    low = _filled(is_low | changed, np.where(is_low, v, 0), st.low, idx)
    t = time_high + low  # (n,) time of an event emitted at each word

    # vectors: base = VECT_BASE_X + 12 per VECT_12 and 8 per VECT_8 since it; polarity from the base word
    is_base = ty == VECT_BASE_X
    step = np.where(ty == VECT_12, 12, np.where(ty == VECT_8, 8, 0))  # (n,)
    before = np.cumsum(step) - step  # (n,) steps of the earlier words of this chunk
    last_base = _last_index(is_base, idx)
    lb = np.maximum(last_base, 0)
    base = np.where(last_base >= 0, (v[lb] & 0x7FF) + before - before[lb],
                    np.where(st.base >= 0, st.base + before, -1))
    base_pol = np.where(last_base >= 0, (v[lb] >> 11) & 1, st.base_pol)

    # events: one per EVT_ADDR_X word, one per set mask bit of a vector word
    is_x = ty == ADDR_X
    is_vec = (ty == VECT_12) | (ty == VECT_8)
    emit = (is_x | (is_vec & (base >= 0))) & (y >= 0) & has_time
    e = np.flatnonzero(emit)  # (n_emit,) word indices
    mask = np.where(is_x[e], 1, np.where(ty[e] == VECT_12, v[e], v[e] & 0xFF)).astype(np.uint16)
    x0 = np.where(is_x[e], v[e] & 0x7FF, base[e])
    pol = np.where(is_x[e], (v[e] >> 11) & 1, base_pol[e])
    word, bit = np.nonzero((mask[:, None] >> _BITS) & 1)  # (n_events,) each: word order, then bit order
    x = x0[word] + bit
    if len(x) and int(x.max()) > MAX_X:
        raise CorruptFileError(source, f"EVT3 vector events run past x = {MAX_X} (x up to {int(x.max()):,}); "
                               "VECT_12 / VECT_8 words without a fitting VECT_BASE_X")
    out = np.empty(len(word), EVENT_DTYPE)
    out["x"] = x
    out["y"] = y[e][word]
    out["t"] = t[e][word]
    out["p"] = pol[word] == 1

    # carry the state into the next chunk
    st.y = int(y[-1])
    st.base = int(base[-1] + step[-1]) if base[-1] >= 0 else -1
    st.base_pol = int(base_pol[-1])
    if len(hv):
        st.high, st.wraps, st.high_full = int(hv[-1]), int(wraps[-1]), int(high_full[is_high][-1])
    st.low = int(low[-1])
    return out


def decode_evt3_words(words: np.ndarray, max_events: int, source: str = "<memory>",
                      chunk: int = CHUNK_WORDS) -> np.ndarray:
    """Decode EVT 3.0 words (uint16 array or memmap) into EVENT_DTYPE, in stream order.

    max_events: the count from `evt3_event_count` (checked against the limits by the caller): the output is
    allocated once at this size. Word types must have been checked (`check_evt3_types`). Triggers and
    OTHERS / CONTINUED words are ignored.

    >>> decode_evt3_words(np.array([0x8000, 0x6010, 0x0002, 0x2001], "<u2"), 1)[["x", "y", "t"]].tolist()
    [(1, 2, 16)]
    """
    out = np.empty(max_events, EVENT_DTYPE)
    st, k = _State(), 0
    for i in range(0, len(words), chunk):
        part = _decode_chunk(np.asarray(words[i:i + chunk]), st, source)
        if k + len(part) > max_events:  # cannot happen when max_events came from evt3_event_count
            raise CorruptFileError(source, "the EVT3 data changed while it was read")
        out[k:k + len(part)] = part
        k += len(part)
    return out[:k]
