"""The device's persisted uplink queue: payloads that could not be sent yet survive a cloud outage and a
device restart. One file per payload in a directory, written atomically (temp file + fsync + rename), named by
a monotonically increasing sequence number, removed only after the cloud acknowledged it.

    >>> import tempfile
    >>> q = PersistentQueue(tempfile.mkdtemp())
    >>> _ = q.put(b"first", "a"), q.put(b"second", "b")
    >>> len(q), q.peek()[1], q.peek()[2]
    (2, b'first', 'a')
    >>> q.ack(q.peek()[0]); len(PersistentQueue(q.root))  # a new instance sees the same files
    1
"""
from __future__ import annotations

import os
import re
from pathlib import Path

_NAME = re.compile(r"^(\d{8})\.([A-Za-z0-9_.-]{1,100})\.payload$")


class PersistentQueue:
    """FIFO of byte payloads with a label each (the sample id), on disk under `root`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        for tmp in self.root.glob("*.tmp"):  # a write interrupted by a crash: never acknowledged, never sent
            tmp.unlink()

    def _items(self) -> list[tuple[int, Path, str]]:
        items = []
        for p in self.root.iterdir():
            m = _NAME.match(p.name)
            if m:
                items.append((int(m.group(1)), p, m.group(2)))
        return sorted(items)

    def __len__(self) -> int:
        return len(self._items())

    def put(self, data: bytes, label: str) -> Path:
        """Append a payload (durable when this returns)."""
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", label)[:100] or "item"
        items = self._items()
        seq = items[-1][0] + 1 if items else 0
        path = self.root / f"{seq:08d}.{safe}.payload"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    def peek(self) -> tuple[Path, bytes, str] | None:
        """The oldest payload (path, bytes, label), or None when empty."""
        items = self._items()
        if not items:
            return None
        _, path, label = items[0]
        return path, path.read_bytes(), label

    def ack(self, path: Path) -> None:
        """Remove a payload the cloud has stored."""
        Path(path).unlink(missing_ok=True)

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for _, p, _ in self._items())
