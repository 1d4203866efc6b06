"""The workbench's typed errors.

Every problem with something a user handed us (a file, a seed, a setting) is an `InputError` (or a
subclass) whose message names the input and says what is wrong in words a user understands. The app and
the CLI catch `InputError` and show the message; anything else is a bug.

    >>> try:
    ...     raise CorruptFileError("clip.mp4", "the video stream ends after 3 bytes")
    ... except InputError as e:
    ...     print(e)
    clip.mp4: the video stream ends after 3 bytes
"""
from __future__ import annotations

import os


class WorkbenchError(Exception):
    """Base class of the workbench's own errors."""


class InputError(WorkbenchError, ValueError):
    """A user-supplied input cannot be used. `source` names it, `reason` says why."""

    def __init__(self, source: object, reason: str):
        self.source = os.fspath(source) if isinstance(source, os.PathLike) else str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class UnsupportedFormatError(InputError):
    """The input is of a kind the workbench does not read."""


class CorruptFileError(InputError):
    """The file claims a known format but its content is broken (truncated, lying header, bad values)."""


class EmptyInputError(InputError):
    """The input holds nothing usable (no frames, zero events)."""


class InputTooLargeError(InputError):
    """The input exceeds a documented limit (size, duration, resolution, event count)."""


class CheckpointError(WorkbenchError):
    """A model checkpoint is missing, unreadable or does not match its config."""
