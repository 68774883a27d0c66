"""The run's recording, read back by the worker for fields the bus did not deliver."""

from __future__ import annotations

import collections
import logging
import time
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from livescope.record import RecordingReader, read_frames
from livescope.schema import LivescopeError

__all__ = ["RecordedFields"]

logger = logging.getLogger("livescope")

FieldKey = tuple[str, int]
"""(position, t) of a field."""
RECORDER_BEHIND_S = 60.0
"""How long to wait for frames the bus lost while the recorder is still behind them."""


class RecordedFields:
    """Fields of a run as its recorder logged them (``frames.jsonl``) and their pixels.

    Parameters
    ----------
    run_dir
        The run folder.
    expected
        Frames the plan holds per field (empty: an unknown plan).
    default_expected
        Frames of a field the plan does not list.
    analyse_added
        Also list the frames decisions added (``added_by``).

    """

    def __init__(
        self,
        run_dir: Path,
        expected: dict[FieldKey, int],
        default_expected: int,
        *,
        analyse_added: bool = False,
    ) -> None:
        self.run_dir = run_dir
        self.expected = expected
        self.default_expected = default_expected
        self.analyse_added = analyse_added
        self._reader: RecordingReader | None = None
        self.last_seq = -1
        """The newest frame (``seq``) in the log when last read."""

    def count(self, key: FieldKey) -> int:
        """Return how many frames field ``key`` should have."""
        return self.expected.get(key) or self.default_expected

    def logged(self) -> dict[FieldKey, list[dict[str, Any]]]:
        """Return the frame log's entries by field (none before the recorder starts it)."""
        out: dict[FieldKey, list[dict[str, Any]]] = collections.defaultdict(list)
        self.last_seq = -1
        if not (self.run_dir / "frames.jsonl").exists():
            return out
        for info in read_frames(self.run_dir):
            self.last_seq = max(self.last_seq, int(info.get("seq", -1)))
            if info.get("added_by") and not self.analyse_added:
                continue
            key = (str(info["position"]), int(info["index"].get("t", 0)))
            out[key].append(dict(info))
        return out

    def logged_until(
        self,
        want: list[FieldKey],
        wait_s: float,
        *,
        until_seq: int | None = None,
        behind_s: float = RECORDER_BEHIND_S,
    ) -> dict[FieldKey, list[dict[str, Any]]]:
        """Read the frame log, waiting (up to ``wait_s``) until it has every frame of ``want``.

        The recorder and the bus are separate threads: a frame may reach the
        worker before its line reaches the log. With ``until_seq`` (a frame
        acquired after every frame of ``want``), the wait goes on for up to
        ``behind_s`` while the log has not reached that frame: the recorder
        logs frames in the order they were taken, so until then it is behind,
        not missing them (a busy PC), and a field given up on then would never
        be analysed. Once the run has ended (its ``summary.json``), every frame
        it took is logged: no longer wait.
        """
        t0 = time.monotonic()
        while True:
            # (ended before the read: the read then holds every frame the run logged)
            ended = (self.run_dir / "summary.json").exists()
            fields = self.logged()
            short = [k for k in want if len(fields.get(k, ())) < self.count(k)]
            if not short:
                return fields
            behind = until_seq is not None and self.last_seq < until_seq and not ended
            waited = time.monotonic() - t0
            if waited > (max(wait_s, behind_s) if behind else wait_s):
                return fields
            time.sleep(0.02 if waited < wait_s else 0.1)

    def read_into(
        self, infos: list[dict[str, Any]], frames: dict[tuple[str, int], NDArray[Any]]
    ) -> int:
        """Read the recorded frames ``infos`` into ``frames`` (those not there yet); how many.

        A frame that cannot be read is logged as a warning and left out.
        """
        n = 0
        for info in infos:
            fz = (str(info["channel"]), int(info["index"].get("z", 0)))
            if fz in frames:
                continue
            if self._reader is None:
                self._reader = RecordingReader(self.run_dir)
            try:
                frames[fz] = self._reader.read(info)  # type: ignore[arg-type]
                n += 1
            except LivescopeError as exc:
                logger.warning("frame %s: %s", info.get("seq"), exc)
        return n
