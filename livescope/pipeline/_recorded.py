"""The run's recording, read back by the worker for fields the bus did not deliver."""

from __future__ import annotations

import collections
import json
import logging
import time
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from livescope.record import FRAMES_FILE, RecordingReader
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
        # the log read so far (whole lines): each read parses only what was appended since
        # (it was parsed whole every 20 ms while a field waited: 1.3 s a time at 50,000 frames
        # of 644 bytes, measured here beside a test run)
        self._fields: dict[FieldKey, list[dict[str, Any]]] = collections.defaultdict(list)
        self._log_bytes = 0
        self._log_lines = 0

    def count(self, key: FieldKey) -> int:
        """Return how many frames field ``key`` should have."""
        return self.expected.get(key) or self.default_expected

    def logged(self) -> dict[FieldKey, list[dict[str, Any]]]:
        """Return the frame log's entries by field (none before the recorder starts it).

        The mapping is this reader's own, and grows as later reads find more of
        the log: read it, do not change or keep it. A line being written (no
        newline yet) waits for the next read.

        Raises
        ------
        LivescopeError
            if a complete line is not a JSON object (the log was damaged or edited).

        """
        path = self.run_dir / FRAMES_FILE
        try:
            with path.open("rb") as f:
                if f.seek(0, 2) < self._log_bytes:  # (shorter: another run's log now)
                    self._fields.clear()
                    self._log_bytes = self._log_lines = 0
                    self.last_seq = -1
                f.seek(self._log_bytes)
                data = f.read()
        except FileNotFoundError:
            return self._fields
        whole = data[: data.rfind(b"\n") + 1]
        self._log_bytes += len(whole)
        for raw in whole.splitlines():
            self._log_lines += 1
            if not raw.strip():
                continue
            try:
                info = json.loads(raw)
            except ValueError as exc:
                raise LivescopeError(
                    f"{path}, line {self._log_lines}: not a JSON frame record ({exc})"
                ) from None
            if not isinstance(info, dict):
                raise LivescopeError(
                    f"{path}, line {self._log_lines}: a frame record is a JSON object, not "
                    f"{type(info).__name__}"
                )
            self.last_seq = max(self.last_seq, int(info.get("seq", -1)))
            if info.get("added_by") and not self.analyse_added:
                continue
            self._fields[(str(info["position"]), int(info["index"].get("t", 0)))].append(info)
        return self._fields

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
