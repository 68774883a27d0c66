"""Replay a recorded dataset through the unchanged acquisition path.

The replay microscope is a ``UniMMCore`` whose camera (`ReplayCamera`) serves
recorded frames: the `ReplayEngine` tells the source which frame each event asks
for before the snap, so the agent, the recorder, the bus, the engines and the
policies run exactly as in a live run. Pacing follows the recorded sample
times (``speed`` times faster; ``None`` as fast as the pipeline goes).

At full speed a `ReplayGate` holds each plan time point until the pipeline
worker has finished every field of the earlier ones (it follows the worker's
``results/latency.jsonl``), so the worker sees the fields in the same order as
any other replay: no frame is dropped on the bus and the decisions are
reproducible. `ReplayAgent` logs decisions as "what-if" (``decisions.jsonl``,
``"what_if": true``): they never change which planned frames are served; an
added event is served only where the recording holds its frame, taken where the
event asks (`WHAT_IF_PLACE_TOLERANCE_UM`).

The dataset source, the camera and the microscope are in
`livescope.scope._replay_source`; this module holds the engine, the gate, the
agent and the run.

See docs/design/replay.md.
"""

from __future__ import annotations

import bisect
import collections
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import useq
from pymmcore_plus.experimental.unicore import UniMMCore
from pymmcore_plus.metadata import FrameMetaV1, Position

from livescope.record import Dataset, RecordedFrame, field_key
from livescope.schema import (
    AddEvents,
    Decision,
    HardwareProfile,
    LivescopeError,
    Move,
    StopPosition,
    write_atomic,
)

from ._agent import ScopeAgent, interrupted_summary, ready_or_close
from ._engine import META_ROI_OFFSET, SAMPLE_TIME_KEY, LivescopeEngine
from ._fanout import position_name
from ._replay_plan import frames_in_plan
from ._replay_source import ReplayCamera, ReplayMicroscope, ReplaySource

__all__ = [
    "WORKER_FAILED",
    "ReplayAgent",
    "ReplayCamera",
    "ReplayEngine",
    "ReplayGate",
    "ReplayMicroscope",
    "ReplaySource",
    "check_gate_timeout",
    "check_speed",
    "run_replay_scope",
]

WORKER_FAILED = "worker.failed"
"""Written in the results folder, with the worker's error, once its supervisor gives up."""

WHAT_IF_PLACE_TOLERANCE_UM = 5.0
"""How far (stage x/y, µm) from where an added event asks its recorded frame may have been
taken and still be served as its frame in a replay."""
# A nucleus is ~10 µm across: the same cell, found by another engine or threshold, is
# centred within a few µm of where the recording imaged it (and a stage reads back its
# place to well under 1 µm); another cell, even a neighbour, lies a nucleus or more away.
# A close-up is named by its rule's firing count, not its cell: a replay whose rule fires
# otherwise gives cell B's close-up the name (and t) of the recording's close-up of cell A.

_ROI_KEY = "livescope.recorded_roi_offset_px"
"""Event metadata: the served frame's recorded ``roi_offset_px`` (None: not recorded)."""

_PLACE_KEY = "livescope.recorded_place_um"
"""Event metadata: the served frame's recorded stage (x, y, z), µm (each None: not recorded)."""

logger = logging.getLogger("livescope")


class ReplayGate:
    """Keeps the replay at most ``window`` plan time points ahead of the worker.

    Time point *t* is served once the worker has analysed every field of the
    time points before *t − window* (the frames of the next time point wait on
    the bus while the worker analyses the current one, so it never waits for
    the replay, and the bus never has to drop a frame). It follows
    ``results/latency.jsonl``, which the worker appends once per field after
    the field's decisions were answered. A wait longer than ``timeout_s`` logs a
    warning, lets the replay go on and counts a timeout (the replay is then not
    guaranteed to be reproducible). The worker has then stalled: until it
    analyses a field it had not before, later waits are not made (counted in
    ``skipped``; a hung worker cost ``timeout_s`` at every time point), then the
    gate holds the replay again.
    """

    def __init__(self, run_dir: str | Path, *, timeout_s: float = 60.0, window: int = 1) -> None:
        self.path = Path(run_dir) / "results" / "latency.jsonl"
        self.timeout_s = timeout_s
        self.window = max(0, int(window))
        self.poll_s = 0.01 if self.window else 0.002
        """How often the worker's log is read while waiting: a window ahead hides the delay."""
        self.done: set[tuple[str, int]] = set()
        self.timeouts = 0
        """Waits that ran ``timeout_s`` without the worker analysing the fields waited for."""
        self.skipped = 0
        """Waits not made: the worker had analysed no new field since a timeout."""
        self.gave_up = False
        self.waited_s = 0.0
        self._offset = 0
        self._rest = b""
        self._file_id: tuple[int, int] | None = None
        self._stalled_at: int | None = None
        """How many fields the worker had analysed at the last timeout (None: no stall)."""
        self._damage_said = False

    def _read(self) -> None:
        try:
            with self.path.open("rb") as fh:
                st = os.fstat(fh.fileno())
                # a restarted worker rewrites the log without a half-stored field
                # (`trim_results`): read the new file from its start, not from an offset
                # into it (a record there was read from its middle, or skipped)
                file_id = (st.st_dev, st.st_ino)
                if file_id != self._file_id or st.st_size < self._offset:
                    self._file_id, self._offset, self._rest = file_id, 0, b""
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        *lines, self._rest = (self._rest + data).split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            field = _field_of(line)
            if field is not None:
                self.done.add(field)
            elif not self._damage_said:
                # (a damaged line raised out of the gate and ended the replay)
                self._damage_said = True
                logger.warning(
                    "replay: %s has a line that is not a field's record (%r); passed over, as "
                    "are any more (the gate may wait for that field until its timeout)",
                    self.path, line[:80].decode("utf-8", "replace"),
                )  # fmt: skip

    def worker_gone(self) -> bool:
        """Return True once the worker's supervisor gave up (``results/worker.failed``)."""
        if not self.gave_up and (self.path.parent / WORKER_FAILED).exists():
            self.gave_up = True
            logger.error("replay: the pipeline worker failed; the rest is replayed unanalysed")
        return self.gave_up

    def wait_for(self, fields: Iterable[tuple[str, int]]) -> bool:
        """Block until every field in ``fields`` is analysed; False on a timeout."""
        want = set(fields)
        if not want:
            return True
        t0 = time.perf_counter()
        deadline = t0 + self.timeout_s
        if self._stalled_at is not None:
            self._read()
            if len(self.done) > self._stalled_at:
                self._stalled_at = None
                logger.info("replay: the worker analyses fields again; the replay is gated again")
            elif not want <= self.done and not self.worker_gone():
                self.skipped += 1  # (the worker made no progress since it last timed out)
                self.waited_s += time.perf_counter() - t0
                return False
        while True:
            self._read()
            if want <= self.done:
                self.waited_s += time.perf_counter() - t0
                return True
            if self.worker_gone():
                self.waited_s += time.perf_counter() - t0
                return False  # nothing will come: the supervisor gave up on the worker
            if time.perf_counter() > deadline:
                self.timeouts += 1
                self.waited_s += time.perf_counter() - t0
                self._stalled_at = len(self.done)
                logger.warning(
                    "replay: the worker has not analysed %s after %g s; going on (the replay "
                    "may not be reproducible), ungated until the worker analyses a field again",
                    sorted(want - self.done)[:5],
                    self.timeout_s,
                )
                return False
            time.sleep(self.poll_s)


def _field_of(line: bytes) -> tuple[str, int] | None:
    """Return the (position, t) a ``latency.jsonl`` line is the record of (None: damaged).

    (the rule is `livescope.record.field_key`'s, which the run report keeps too)
    """
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):  # (UnicodeDecodeError; a line of thousands of "[")
        return None
    return field_key(rec)


class ReplayEngine(LivescopeEngine):
    """The acquisition engine of a replay: selects each event's recorded frame.

    Events whose frame the dataset lacks (a position stopped in the live run,
    a run cut short) are skipped and listed in ``source.not_recorded``; those
    whose frame it cannot read (a damaged file), in ``source.unreadable``. Each
    frame's sample time, stage place (x, y, z, where recorded) and ROI offset are
    the recorded ones; the stage itself follows the plan. ``speed``: recorded
    seconds per wall-clock second (None: no waiting at all). Hardware sequencing
    is off, so every frame is one snap of one event.
    """

    def __init__(
        self,
        core: UniMMCore,
        profile: HardwareProfile,
        source: ReplaySource,
        *,
        speed: float | None = None,
        gate: ReplayGate | None = None,
        expected: Mapping[tuple[str, int], int] | None = None,
    ) -> None:
        super().__init__(core, profile)
        self.use_hardware_sequencing = False
        self.source = source
        self.speed = speed
        self.gate = gate
        self.expected = dict(expected or {})
        self.clock_s = 0.0
        """Recorded seconds since the first frame, of the last event handed out."""
        self._gate_t = -1
        """The plan time point the gate last held the replay for."""
        self._seen_t = -1
        """The latest plan time point whose events were handed to the engine (served or not)."""
        self._plan_ts = sorted({t for _, t in self.expected})
        """The plan's time points (its time indices), each held before the feed takes it."""
        self._drained = -1
        # planned frames the recording lacks, per field, and the fields another field's
        # frame was served after (the worker has those whole even when a frame is missing)
        self._lacking: collections.Counter[tuple[str, int]] = collections.Counter()
        self._followed: set[tuple[str, int]] = set()
        self._last_field: tuple[str, int] | None = None
        self.added_unreadable = 0
        """Added events a decision was told are served whose frames could not be read."""

    def event_iterator(self, events: Iterable[useq.MDAEvent]) -> Iterator[useq.MDAEvent]:
        """Time and place each event by its recorded frame; skip those not recorded or unreadable.

        Each frame is read here, before its event is handed out: one that cannot
        be read is skipped as one the recording lacks (and the gate does not wait
        for the worker to have it), not a failed snap that ends the replay.

        ``events`` is what the feed took off its queue together (a time point,
        or added events due at once). Once they are served, the gate holds the
        next time point here, before the feed takes its next events: the events
        the worker's decisions add meanwhile, due before that time point, go
        first (held in `setup_event`, with the time point already taken, they
        went after it, and were timed by its clock).
        """
        for event in events:
            if not event.metadata.get("added_by"):
                self._seen_t = max(self._seen_t, int(event.index.get("t", 0)))
            frame = self.source.recorded(event)
            if frame is None:
                self.source.not_recorded.append(str(self.source.key_of(event)))
            if frame is None or not self.source.read_ahead(event):
                if not event.metadata.get("added_by"):
                    self._lacking[(position_name(event), int(event.index.get("t", 0)))] += 1
                elif frame is not None:
                    self.added_unreadable += 1
                continue
            sample = frame.sample_time_s
            if sample is None:
                sample = float(event.metadata.get(SAMPLE_TIME_KEY, event.min_start_time or 0.0))
            rel = sample - self.source.t0_s
            self.clock_s = max(self.clock_s, rel)
            meta = {**event.metadata, SAMPLE_TIME_KEY: float(sample),
                    _ROI_KEY: frame.roi_offset_px,
                    _PLACE_KEY: (frame.x_um, frame.y_um, frame.z_um)}  # fmt: skip
            due = None if self.speed is None else max(0.0, rel) / self.speed
            yield event.model_copy(update={"metadata": meta, "min_start_time": due})
        following = bisect.bisect_right(self._plan_ts, self._seen_t)
        if following < len(self._plan_ts):  # (after the last, `drain` waits for the rest)
            self._hold(self._plan_ts[following])

    def setup_event(self, event: useq.MDAEvent) -> None:
        """Wait for the worker (gate), select the recorded frame, then set up as usual.

        The gate has held a plan time point already where it follows the one
        handed out last (`event_iterator`); here it holds one that comes otherwise
        (a replay built without the plan's ``expected`` frames).
        """
        t = int(event.index.get("t", 0))
        if not event.metadata.get("added_by"):
            self._hold(t)
        self.source.select(event)
        if not event.metadata.get("added_by"):
            key = (position_name(event), t)
            self.source.served_fields[key] += 1
            if self._last_field is not None and self._last_field != key:
                self._followed.add(self._last_field)
            self._last_field = key
        super().setup_event(event)

    def _hold(self, t: int) -> None:
        """Hold plan time point ``t`` until the worker has the fields it waits for (gate).

        Those of the time points ``gate.window`` or more before it; a time point
        is held once. Runner thread.
        """
        if self.gate is not None and t > self._gate_t:
            self.gate.wait_for(self._full_fields(before_t=t - self.gate.window))
            self._gate_t = t

    def _full_fields(self, before_t: int | None = None) -> list[tuple[str, int]]:
        """Fields served in full (before time index ``before_t``).

        A field the recording lacks a frame of is served in full once its other
        frames are, and waited for once a frame of another field was served after
        them: the worker, which expects the plan's frames, analyses it when that
        frame arrives (waited for sooner, the gate would hold that very frame
        back until its timeout; never waited for, the replay ran ahead of the
        worker there and the field's decisions came in wherever the host's
        timing put them: not reproducible).
        """
        served, lacking, expected = self.source.served_fields, self._lacking, self.expected
        return [
            k for k, n in served.items()
            if (before_t is None or k[1] < before_t)
            and n + lacking[k] >= expected.get(k, n)
            and (n >= expected.get(k, n) or k in self._followed)
        ]  # fmt: skip

    def drain(self) -> bool:
        """Wait for the worker's last fields before the run ends (runner thread).

        Their decisions may still add events. Returns True if it waited (the
        agent then looks for new events once more).
        """
        if self.gate is None:
            return False
        fields = self._full_fields()
        if self._drained == len(fields):
            return False
        self._drained = len(fields)
        self.gate.wait_for(fields)
        return True

    def _roi_offset_px(self) -> tuple[float, float] | None:
        """Return None: the replay camera's "sensor" is the recorded frame.

        Its offset is neither worked out nor logged: `get_frame_metadata` gives the
        recorded frame's own.
        """
        return None

    def get_frame_metadata(
        self,
        event: useq.MDAEvent,
        prop_values: Any = None,
        runner_time_ms: float = 0.0,
        include_position: bool = True,
        camera_device: str | None = None,
    ) -> FrameMetaV1:
        """Stock metadata plus the recorded sample time, stage place and ROI offset."""
        meta = super().get_frame_metadata(
            event, prop_values, runner_time_ms, include_position, camera_device
        )
        sample = event.metadata.get(SAMPLE_TIME_KEY)
        meta["livescope.sample_time_s"] = sample  # type: ignore[typeddict-unknown-key]
        # where the recording took the frame, not where the replay's stage is: the stage
        # follows the plan (a replay applies no moves), and a frame the live run took after
        # a recentre, or at a position that moved between time points, was not taken there.
        # The worker aims close-ups and recentrings from the frame's place (from the stage's,
        # they were off by the live move, and the recorded close-up "taken N µm away" was
        # not served). An axis the recording lacks: the stage's
        x, y, z = event.metadata.get(_PLACE_KEY) or (None, None, None)
        if (x, y, z) != (None, None, None):
            position: Position = {**meta.get("position", {})}
            if x is not None:
                position["x"] = float(x)
            if y is not None:
                position["y"] = float(y)
            if z is not None:
                position["z"] = float(z)
            meta["position"] = position
        # the recorded frame's own place on its camera's sensor (None: not recorded, taken
        # as centred), not the replay camera's, whose "sensor" is the recorded frame
        meta[META_ROI_OFFSET] = event.metadata.get(_ROI_KEY)  # type: ignore[literal-required]
        return meta


class ReplayAgent(ScopeAgent):
    """The scope agent of a replay: decisions are checked and logged as what-if.

    `Move`, `ChangeInterval`, `StopPosition` and `StopRun` are accepted after the
    live agent's checks and not applied; `AddEvents` is served for the events
    whose frames the recording holds, taken within `WHAT_IF_PLACE_TOLERANCE_UM`
    of where they ask (x/y, where the event gives its own and the recording has it).
    """

    what_if = True
    ages_decisions = False  # (its clock is the recording's, handed out ahead of the frames)

    def __init__(self, *args: Any, source: ReplaySource, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.source = source
        self.what_if_served = 0

    def _apply(self, d: Decision) -> tuple[int, str]:
        feed = self.feed
        if isinstance(d, AddEvents):
            events = self._prepare_added(d)
            held: list[useq.MDAEvent] = []
            elsewhere: list[float] = []  # how far away the recording took the others, µm
            for e in events:
                if (frame := self.source.recorded(e)) is None:
                    continue
                off = _offset_um(e, frame)
                if off is not None and off > WHAT_IF_PLACE_TOLERANCE_UM:
                    elsewhere.append(off)
                else:
                    held.append(e)
            if held:
                feed.add(held)
            feed.note_added(events)  # (served or not, a later decision may name their places)
            self.what_if_served += len(held)
            return len(held), (
                f"what-if: the recording holds {len(held)} of {len(events)} requested "
                f"frame(s){_elsewhere_note(elsewhere)}; {len(held)} served"
            )
        if isinstance(d, Move) and d.position not in feed.positions:
            raise LivescopeError(f"unknown position {d.position!r}; have {sorted(feed.positions)}")
        if isinstance(d, StopPosition) and not feed.has_position(d.position):
            raise LivescopeError(f"unknown position {d.position!r}; have {sorted(feed.positions)}")
        if isinstance(d, Move):
            for xyz in feed.moved_coordinates(d.position, d.x_um, d.y_um, d.z_um):
                self.profile.check_stage_travel(*xyz, f"move {d.position}")
        return 0, f"what-if: {d.type} accepted, not applied (the replay serves the recording)"


def _offset_um(event: useq.MDAEvent, frame: RecordedFrame) -> float | None:
    """Return how far (stage x/y, µm) from ``event``'s place ``frame`` was taken (None: unknown).

    Unknown where the recording has no x/y, or the event gives none of its own: one
    that names a position of the plan asks for that position, wherever the recording
    (moves and all) imaged it, and its recorded frame is found by the name.
    """
    if not event.metadata.get("explicit_xy"):
        return None
    ex, ey, fx, fy = event.x_pos, event.y_pos, frame.x_um, frame.y_um
    if ex is None or ey is None or fx is None or fy is None:
        return None
    return math.hypot(ex - fx, ey - fy)


def _elsewhere_note(offsets_um: Sequence[float]) -> str:
    """Return the reason's note on recorded frames not served, taken at another place ('': none)."""
    if not offsets_um:
        return ""
    lo, hi = round(min(offsets_um)), round(max(offsets_um))
    far = f"{lo} µm" if lo == hi else f"{lo} to {hi} µm"
    return f" ({len(offsets_um)} more taken {far} away: not served)"


def check_speed(speed: float | None) -> None:
    """Refuse a replay speed that is not a finite number above 0 (None: as fast as it goes)."""
    if speed is not None and not (math.isfinite(speed) and speed > 0):
        raise LivescopeError(
            f"replay speed must be a number > 0 (recorded seconds per second; None: as fast "
            f"as the pipeline goes), got {speed}"
        )


def check_gate_timeout(gate_timeout_s: float) -> None:
    """Refuse a gate timeout that is no finite number of seconds above 0.

    (nan: ``now > t0 + nan`` is never true, and a hung worker hung the replay for good)
    """
    if not (math.isfinite(gate_timeout_s) and gate_timeout_s > 0):
        raise LivescopeError(
            f"gate_timeout_s must be a number of seconds > 0, got {gate_timeout_s}"
        )


def run_replay_scope(
    dataset: Dataset,
    profile: HardwareProfile,
    sequence: useq.MDASequence,
    out_dir: str | Path,
    *,
    channels: Mapping[str, str],
    speed: float | None = None,
    gate: bool = False,
    gate_timeout_s: float = 60.0,
    progress: Callable[[int, int], None] | None = None,
    bus: Literal["inline", "shm", "off"] = "off",
    run_id: str | None = None,
    on_ready: Callable[[ScopeAgent], None] | None = None,
) -> dict[str, Any]:
    """Replay ``dataset`` through a `ReplayAgent` into ``out_dir``; return the run summary.

    As `run_simulated`, with the recorded frames served by a `ReplayCamera`.
    ``gate``: hold each time point until the worker has analysed the earlier ones.
    ``progress(frames_written, frames_to_write)`` is called after each frame
    (writer thread): the frames to write are the recorded frames the plan asks
    for, and those of decisions' added events queued so far (the total grows as
    decisions add them), less those found unreadable.
    A frame that cannot be read is skipped (``frames_unreadable``, warned); the
    summary's ``ok`` is false, with the ``error`` why, when the plan asks for
    recorded frames and none could be served (nothing was replayed).

    Raises
    ------
    LivescopeError
        if ``speed`` is not a finite number above 0 (before anything is written).

    """
    check_speed(speed)
    check_gate_timeout(gate_timeout_s)
    source = ReplaySource(dataset, channels)
    expected = frames_in_plan(sequence)
    out = Path(out_dir)
    started = time.time()
    with ReplayMicroscope(profile, source) as scope:
        engine = ReplayEngine(
            scope.core,
            profile,
            source,
            speed=speed,
            gate=ReplayGate(out, timeout_s=gate_timeout_s) if gate else None,
            expected=expected,
        )
        agent = ReplayAgent(
            scope.core,
            profile,
            sequence,
            out,
            run_id=run_id,
            bus=bus,
            engine=engine,
            clock=lambda: engine.clock_s,
            source=source,
        )
        if on_ready is not None:
            ready_or_close(agent, on_ready)
        planned = sum(1 for e in sequence if source.recorded(e) is not None)

        def frames_to_write() -> int:
            # (decisions' frames queued so far, less those found unreadable, planned or added)
            return planned + agent.what_if_served - len(source.unreadable)

        t0 = time.perf_counter()
        stopped: KeyboardInterrupt | None = None
        try:
            summary = agent.run(
                None if progress is None else (lambda n: progress(n, frames_to_write()))
            )
        except KeyboardInterrupt as exc:  # (Ctrl+C: completed as below, then raised again)
            summary, stopped = interrupted_summary(out, since=started), exc
        wall = time.perf_counter() - t0
    summary.update(
        {
            "replay_of": str(dataset.path),
            "format": dataset.format,
            "speed": "max" if speed is None else speed,
            "frames_served": source.served,
            "frames_not_recorded": len(source.not_recorded),
            "frames_unreadable": list(source.unreadable),
            # (a decision's added frame that could not be read was not served after all)
            "what_if_served": agent.what_if_served - engine.added_unreadable,
            "gate_timeouts": engine.gate.timeouts if engine.gate else 0,
            "gate_waits_skipped": engine.gate.skipped if engine.gate else 0,
            "gate_wait_s": round(engine.gate.waited_s, 3) if engine.gate else 0.0,
            "source_wall_s": round(wall, 3),
            "warnings": list(dataset.warnings),
        }
    )
    if source.not_recorded:
        summary["warnings"].append(
            f"{dataset.path}: {len(source.not_recorded)} planned frame(s) are not in the "
            f"recording and were skipped (first: {source.not_recorded[0]})"
        )
    unreadable = len(source.unreadable)
    if planned and not source.served and summary.get("ok"):
        # (it said "replayed 0 frame(s)", ok, and exited 0: a script went on as if it had
        # worked; a replay that served some frames goes on past those it cannot read)
        summary["ok"] = False
        summary["error"] = (
            f"{dataset.path}: no frame could be served; {unreadable} recorded frame(s) cannot "
            f"be read (the first, {source.unreadable[0]['error']})"
            if unreadable
            else f"{dataset.path}: none of the {planned} recorded frame(s) the plan asks for "
            "was served"
        )
    elif unreadable:  # (the first few were warned of one by one, with their errors)
        summary["warnings"].append(
            f"{dataset.path}: {unreadable} recorded frame(s) cannot be read and were skipped "
            "(each is listed in frames_unreadable, with its error)"
        )
    write_atomic(out / "summary.json", json.dumps(summary, indent=1))
    if stopped is not None:
        raise stopped
    return summary
