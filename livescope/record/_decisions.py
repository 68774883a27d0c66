"""The append-only decision log of a run (``decisions.jsonl``).

Every decision the agent receives and the acknowledgement it sent are appended
as JSON lines, flushed and synced at once: decisions are rare and each must
survive a crash of the agent.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

__all__ = ["DECISIONS_FILE", "DecisionLog", "read_decisions"]

DECISIONS_FILE = "decisions.jsonl"


class DecisionLog:
    """Appends records to ``run_dir/decisions.jsonl`` (thread-safe)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / DECISIONS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and sync it to disk."""
        line = json.dumps(record, default=str, separators=(",", ":")) + "\n"
        with self._lock:
            self._f.write(line)
            self._f.flush()
            os.fsync(self._f.fileno())

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._f.close()


def read_decisions(run_dir: str | Path) -> list[dict[str, Any]]:
    """Read a run's decision log (a truncated last line, from a crash, is skipped)."""
    path = Path(run_dir) / DECISIONS_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
