"""The run's recording, read back by the worker for fields the bus did not deliver."""

from __future__ import annotations

import collections
import logging
import time
from pathlib import Path
from typing import Any, BinaryIO

from numpy.typing import NDArray

from livescope.record import FRAMES_FILE, RecordingReader
from livescope.schema import LivescopeError, jsonl_record

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
        self._log_head = b""  # (its first line: a log that starts otherwise is another run's)
        self._forgotten: dict[str, int] = {}
        """Per position, the last time point `forget` was told of: its fields are not kept."""

    def count(self, key: FieldKey) -> int:
        """Return how many frames field ``key`` should have."""
        return self.expected.get(key) or self.default_expected

    def forget(self, position: str, t: int) -> None:
        """Drop the log's entries of ``position``'s fields up to ``t``, and those read later.

        Called (on the worker's main thread, as `logged`) once field ``t`` is
        analysed: its frames are never read back again. Kept, every frame's entry
        (~4 kB parsed) stayed for the whole run once a lost frame had the log
        read: ~1 GB for the 250,000 frames of a 72-hour plate.
        """
        last = self._forgotten.get(position, -1)
        if t <= last:
            return
        self._forgotten[position] = t
        for key in [k for k in self._fields if k[0] == position and k[1] <= t]:
            del self._fields[key]

    def logged(self) -> dict[FieldKey, list[dict[str, Any]]]:
        """Return the frame log's entries by field (none before the recorder starts it).

        The mapping is this reader's own, grows as later reads find more of the
        log and loses the fields `forget` drops (as each is analysed): read it, do
        not change or keep it (what it lacks is to be looked up before fields are
        analysed). A line being written (no
        newline yet) waits for the next read.

        Raises
        ------
        LivescopeError
            if a complete line is not a JSON object, or one without a position,
            an index or numbers for its seq and t (the log was damaged or
            edited), naming the line. The lines before it are kept; each later
            read stops at it again.

        """
        path = self.run_dir / FRAMES_FILE
        try:
            with path.open("rb") as f:
                size = f.seek(0, 2)
                if self._log_bytes and (size < self._log_bytes or not self._same_log(f)):
                    # another run's log now (the folder emptied and used again): its
                    # lines from the start, and its recording's positions looked up anew
                    # (the old ones' group numbers read another position's pixels)
                    self._fields.clear()
                    self._log_bytes = self._log_lines = 0
                    self._log_head = b""
                    self.last_seq = -1
                    self._reader = None
                f.seek(self._log_bytes)
                data = f.read()
        except FileNotFoundError:
            return self._fields
        whole = data[: data.rfind(b"\n") + 1]
        if whole and not self._log_bytes:
            self._log_head = whole[: whole.find(b"\n") + 1]
        for raw in whole.splitlines(keepends=True):
            # the offset passes a line once it is taken: a damaged line stops each read
            # there again, and the lines after it are not skipped unread
            self._take(raw, path, self._log_lines + 1)
            self._log_bytes += len(raw)
            self._log_lines += 1
        return self._fields

    def _same_log(self, f: BinaryIO) -> bool:
        """Return True if the open log ``f`` starts with the first line read before."""
        f.seek(0)
        return f.read(len(self._log_head)) == self._log_head

    def _take(self, raw: bytes, path: Path, line: int) -> None:
        """Parse one complete line of the log (``line``: its number) into the fields."""
        info = jsonl_record(raw, path, line, "frame record")
        if info is None:
            return
        try:
            seq = int(info.get("seq", -1))
            if info.get("added_by") and not self.analyse_added:
                self.last_seq = max(self.last_seq, seq)
                return
            key = (str(info["position"]), int(info["index"].get("t", 0)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise LivescopeError(
                f"{path}, line {line}: not a frame record (it needs a position, an index "
                f"object and numbers for seq and t): {type(exc).__name__} {exc}"
            ) from None
        self.last_seq = max(self.last_seq, seq)
        if key[1] <= self._forgotten.get(key[0], -1):
            return  # (analysed already: `forget`)
        self._fields[key].append(info)

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
        it took is logged: the log is read once more, and not waited for.
        """
        t0 = time.monotonic()
        while True:
            # (ended before the read: the read then holds every frame the run logged)
            ended = (self.run_dir / "summary.json").exists()
            fields = self.logged()
            short = [k for k in want if len(fields.get(k, ())) < self.count(k)]
            if not short:
                return fields
            if ended:  # (what is short now was never taken: its frames will never come)
                return fields
            behind = until_seq is not None and self.last_seq < until_seq
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
            try:
                fz = (str(info["channel"]), int(info["index"].get("z", 0)))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                logger.warning(
                    "frame %s: its record names no channel or z (%r)", info.get("seq"), exc
                )
                continue
            if fz in frames:
                continue
            try:
                # (in the try: a recording not there, or moved away, leaves its frames out
                # as unreadable, and the live fields go on being analysed)
                if self._reader is None:
                    self._reader = RecordingReader(self.run_dir)
                frames[fz] = self._reader.read(info)  # type: ignore[arg-type]
                n += 1
            except LivescopeError as exc:
                logger.warning("frame %s: %s", info.get("seq"), exc)
        return n
