"""Window captions as subtitles: SubRip (.srt) and WebVTT (.vtt).

One cue per window, from the window's start to its end; with overlapping windows (stride < window) a cue ends
where the next window starts, so cues never overlap and a player shows one caption at a time. Cue text is
one line (newlines folded); an empty caption becomes "…" (a cue must have text). A gesture window's cue
names the gesture head's label in brackets.

    >>> print(srt([Cue(0.0, 0.64, "a red circle"), Cue(0.64, 1.28, "it moves")]), end="")
    1
    00:00:00,000 --> 00:00:00,640
    a red circle
    <BLANKLINE>
    2
    00:00:00,640 --> 00:00:01,280
    it moves
    <BLANKLINE>
    >>> vtt([Cue(3661.5, 3662.0, "late")]).splitlines()[2]
    '01:01:01.500 --> 01:01:02.000'
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


def timestamp(seconds: float, sep: str = ",") -> str:
    """HH:MM:SS,mmm (SRT; sep="." for WebVTT), rounded to the millisecond.

    >>> timestamp(59.9996), timestamp(0.25, ".")
    ('00:01:00,000', '00:00:00.250')
    """
    ms = max(0, int(round(seconds * 1000)))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def cues(windows) -> list[Cue]:
    """Cues from `Window`s (or dicts with start_s, end_s, caption[, gesture]) in stream order."""
    rows = [w if isinstance(w, dict) else w.record() for w in windows]
    out = []
    for i, w in enumerate(rows):
        end = w["end_s"] if i + 1 == len(rows) else min(w["end_s"], rows[i + 1]["start_s"])
        text = " ".join(str(w["caption"]).split()) or "…"
        if w.get("gesture"):
            text += f" [{w['gesture']}]"
        out.append(Cue(float(w["start_s"]), float(max(end, w["start_s"] + 0.001)), text))
    return out


def srt(items: list[Cue]) -> str:
    """SubRip text: numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, a blank line after each."""
    return "".join(f"{i}\n{timestamp(c.start_s)} --> {timestamp(c.end_s)}\n{c.text}\n\n"
                   for i, c in enumerate(items, 1))


def vtt(items: list[Cue]) -> str:
    """WebVTT text: the `WEBVTT` header, then cues with `HH:MM:SS.mmm` times (`-->` is escaped in text)."""
    body = "".join(f"{timestamp(c.start_s, '.')} --> {timestamp(c.end_s, '.')}\n{c.text.replace('-->', '->')}\n\n"
                   for c in items)
    return "WEBVTT\n\n" + body


def write_subtitles(path: str | os.PathLike, windows, kind: str | None = None) -> Path:
    """Write the windows' captions to `path` as SRT or WebVTT (`kind`, default from the suffix)."""
    p = Path(path)
    kind = kind or ("vtt" if p.suffix.lower() == ".vtt" else "srt")
    items = cues(windows)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(vtt(items) if kind == "vtt" else srt(items), encoding="utf-8")
    return p
