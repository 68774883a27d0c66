"""Decisions sent to a running agent: applied at event boundaries, or rejected with a reason."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import useq
from pymmcore_plus.core._sequencing import SequencedEvent

from livescope.bus import DecisionClient
from livescope.policy import STALE_REFUSAL
from livescope.record import read_decisions, read_frames
from livescope.schema import (
    AddEvents,
    ChangeInterval,
    DecisionAck,
    HardwareProfile,
    Move,
    StopPosition,
    StopRun,
    clock_ns,
)
from livescope.scope import EventFeed, LivescopeEngine, ScopeAgent, SimulatedMicroscope


class Running:
    def __init__(
        self, sim: SimulatedMicroscope, run: Path, loops: int = 30,
        seq: useq.MDASequence | None = None,
    ) -> None:  # fmt: skip
        seq = seq or useq.MDASequence(
            stage_positions=[useq.Position(x=0, y=0, z=0, name="A"),
                             useq.Position(x=300, y=0, z=0, name="B")],
            channels=[useq.Channel(config="Phase", exposure=5.0)],
            time_plan=useq.TIntervalLoops(interval=120, loops=loops),
        )  # fmt: skip
        # the tests' close-ups are due long after the test (`_dapi`: 1e5 s, 167 s at the
        # simulator's 600x) so that they stay queued: the rig's limit on that is lifted
        guards = {**sim.profile.guardrails.model_dump(), "max_added_span_s": None}
        profile = sim.profile.replace(guardrails=guards)
        self.agent = ScopeAgent(sim.core, profile, seq, run, sim=sim, bus="inline")
        self.summary: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._run)
        self.thread.start()
        self.client = DecisionClient(self.agent.server.endpoint)  # type: ignore[union-attr]
        time.sleep(0.3)

    def _run(self) -> None:
        self.summary = self.agent.run()

    def join(self) -> dict[str, Any]:
        self.thread.join(60)
        self.client.close()
        return self.summary


@pytest.fixture
def running(sim: SimulatedMicroscope, tmp_path: Path) -> Iterator[Running]:
    r = Running(sim, tmp_path / "run")
    yield r
    if r.thread.is_alive():
        r.agent.feed.stop()
        r.join()


def test_bad_decisions_are_rejected_with_reasons_and_the_run_goes_on(
    running: Running, sim_profile: HardwareProfile, tmp_path: Path
) -> None:
    rid = running.agent.run_id
    c = running.client
    cases = [
        (
            c.send_raw(b'{"type": "teleport", "run_id": "%s"}' % rid.encode()),
            "unknown decision type 'teleport'",
        ),
        (c.send_raw(b"not json"), "not JSON"),
        (  # useq takes a NaN start time; the agent must not queue an event due at NaN s
            c.send_raw(b'{"type": "add_events", "run_id": "%s", "events": [{"index": {"t": 60, '
                       b'"p": 0}, "channel": "DAPI", "min_start_time": NaN}]}' % rid.encode()),
            "event 0 {'t': 60, 'p': 0}: min_start_time must be finite, got nan",
        ),
        (  # an infinite interval would hold the run forever
            c.send_raw(b'{"type": "change_interval", "run_id": "%s", "interval_s": Infinity}'
                       % rid.encode()),
            "interval_s: Input should be a finite number",
        ),
        (
            c.send_raw(b'{"type": "move", "run_id": "%s", "position": "A", "x_um": NaN, '
                       b'"y_um": 0}' % rid.encode()),
            "x_um: Input should be a finite number",
        ),
        (c.send(StopRun(run_id="someone-else")), "unknown run 'someone-else'"),
        (c.send(Move(run_id=rid, position="A", x_um=9000, y_um=0)), "stages.xy.x_range_um"),
        (c.send(Move(run_id=rid, position="Z", x_um=0, y_um=0)), "unknown position 'Z'"),
        (c.send(StopPosition(run_id=rid, position="nowhere")), "unknown position 'nowhere'"),
        (
            c.send(AddEvents(run_id=rid, events=[useq.MDAEvent(index={"t": 50}, x_pos=0, y_pos=2000,
                                                               channel={"config": "DAPI"})])),
            "stages.xy.y_range_um",
        ),
        (  # the event is named in the reason
            c.send(AddEvents(run_id=rid, events=[
                useq.MDAEvent(index={"t": 51}, x_pos=0, y_pos=0, channel={"config": "DAPI"}),
                useq.MDAEvent(index={"t": 52}, x_pos=0, y_pos=0, channel={"config": "Phase"},
                              exposure=600),
            ])),
            "event 1 {'t': 52}: exposure 600.0 ms is outside channel 'Phase' limits",
        ),
        # the rig's budgets hold for any client, not only a worker whose guardrails passed it
        (
            c.send(AddEvents(run_id=rid, events=[
                useq.MDAEvent(index={"t": 51}, x_pos=0, y_pos=0, channel={"config": "DAPI"},
                              exposure=1e6)])),
            "guardrail: light dose: event 0 exposure 1e+06 ms > "
            "light_dose.max_exposure_ms_per_frame = 1000 ms",
        ),
        (
            c.send(AddEvents(run_id=rid, events=[
                useq.MDAEvent(index={"t": 100 + i, "p": 0}, channel={"config": "DAPI"},
                              exposure=1000) for i in range(121)])),
            "guardrail: light dose: position A would get 121.00 s of fluorescence; "
            "light_dose.max_fluorescence_s_per_position = 120 s",
        ),
        (
            c.send(AddEvents(run_id=rid, events=[
                useq.MDAEvent(index={"t": 100 + i, "p": 0}, channel={"config": "Phase"})
                for i in range(501)])),
            "guardrail: frame budget: 501 more frames would make 501 added this run; "
            "light_dose.max_extra_frames_per_run = 500",
        ),
        (
            c.send(ChangeInterval(run_id=rid, interval_s=0.1)),
            "guardrail: interval: 0.1 s is shorter than guardrails.min_interval_s = 1 s",
        ),
        (
            c.send(AddEvents(run_id=rid, events=[useq.MDAEvent(index={"t": 50, "p": 0},
                                                               channel={"config": "Cy5"})])),
            "unknown channel 'Cy5'",
        ),
        (
            c.send(AddEvents(run_id=rid, events=[useq.MDAEvent(index={"t": 0, "p": 0},
                                                               channel={"config": "Phase"})])),
            "already planned or acquired",
        ),
    ]  # fmt: skip
    for ack, reason in cases:
        assert ack.accepted is False
        assert reason in ack.reason, ack
    summary = running.join()
    assert summary["frames_acquired"] == 60, summary  # the run went on to the end
    assert summary["decisions_rejected"] == len(cases)
    log = read_decisions(running.agent.run_dir)
    assert len(log) == len(cases)
    reasons = [entry["ack"]["reason"] for entry in log]
    for (_, reason), logged in zip(cases, reasons, strict=True):
        assert reason in logged


def test_a_decision_that_fails_inside_the_agent_is_refused_and_counted(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a bug in applying one decision (fault injected): refused with its error, counted
    # as rejected (it was not), the run goes on; an answer the decision log cannot keep
    # (a full disk) is counted and makes the run not ok
    rid = running.agent.run_id

    def broken(d):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    monkeypatch.setattr(running.agent, "_apply", broken)
    ack = running.client.send(StopRun(run_id=rid))
    assert ack.accepted is False
    assert ack.reason == "internal error: RuntimeError: boom"
    deadline = time.monotonic() + 5  # (the log is written after the answer)
    while not read_decisions(running.agent.run_dir, live=True) and time.monotonic() < deadline:
        time.sleep(0.01)

    def full(record):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(running.agent.decision_log, "append", full)
    assert running.client.send(StopRun(run_id=rid)).accepted is False
    running.agent.feed.stop()
    summary = running.join()
    assert summary["decisions_rejected"] == 2
    assert summary["decision_log_errors"] == 1
    assert summary["ok"] is False
    assert summary["error"] == "1 write(s) or sync(s) of the decision log failed"
    assert len(read_decisions(running.agent.run_dir)) == 1


def _dapi(run_id: str, ts: range, exposure: float = 1000.0) -> AddEvents:
    return AddEvents(run_id=run_id, delay_s=1e5, events=[  # due long after the test
        useq.MDAEvent(index={"t": t, "p": 0}, channel={"config": "DAPI"}, exposure=exposure)
        for t in ts])  # fmt: skip


def test_the_agent_books_what_it_accepted_against_the_rigs_budgets(running: Running) -> None:
    rid = running.agent.run_id
    c = running.client
    assert c.send(_dapi(rid, range(100, 200))).accepted  # 100 s of position A's 120 s
    collides = c.send(_dapi(rid, range(150, 160)))  # within the budget, refused for another reason
    assert not collides.accepted
    assert "already planned" in collides.reason
    assert c.send(_dapi(rid, range(200, 220))).accepted  # the refused one booked nothing: 120 s
    over = c.send(_dapi(rid, range(220, 221)))
    assert not over.accepted
    assert "guardrail: light dose: position A would get 121.00 s" in over.reason
    assert running.agent.guardrails.usage()["extra_frames"] == 120


def test_a_decision_the_agent_cannot_book_is_refused_and_nothing_of_it_is_queued(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    # booking fails (fault injected): the answer says refused, so none of its events
    # may be acquired (the worker gives the budget back on a refusal); and a decision
    # refused while being applied gives back what it booked
    rid = running.agent.run_id
    feed = running.agent.feed
    planned = running.agent.guardrails.dose_s["A"]  # the plan's own light

    def broken(decision, now_s):  # type: ignore[no-untyped-def]
        raise RuntimeError("books unreadable")

    with monkeypatch.context() as m:
        m.setattr(running.agent.guardrails, "commit", broken)
        ack = running.client.send(_dapi(rid, range(100, 101)))
    assert not ack.accepted
    assert ack.reason == "internal error: RuntimeError: books unreadable"
    assert not feed.is_taken(("A", 100, "DAPI", 0))
    assert running.agent.guardrails.usage()["extra_frames"] == 0
    assert running.client.send(_dapi(rid, range(100, 101))).accepted  # now booked and queued
    assert feed.is_taken(("A", 100, "DAPI", 0))
    collides = running.client.send(_dapi(rid, range(100, 102)))
    assert not collides.accepted
    assert "already planned" in collides.reason
    assert running.agent.guardrails.usage()["extra_frames"] == 1
    assert running.agent.guardrails.dose_s["A"] == pytest.approx(planned + 1.0)  # 1 s, once


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"properties": [("Camera", "Exposure", 1800.0)]}, id="properties"),
        pytest.param({"keep_shutter_open": True}, id="shutter-open"),
        pytest.param({"roi": (0, 0, 64, 64)}, id="roi"),
        pytest.param(
            {"action": {"type": "hardware_autofocus", "autofocus_device_name": "Z"}},
            id="other-action",
        ),
    ],
)
def test_an_added_event_with_fields_nothing_checks_is_refused(
    running: Running, extra: dict[str, Any]
) -> None:
    # device properties could set another exposure or move a stage past the guardrails,
    # an open shutter light the sample between frames: such an event was accepted
    ev = useq.MDAEvent(index={"t": 100}, pos_name="A", channel={"config": "DAPI"}, exposure=50,
                       **extra)  # fmt: skip
    ack = running.client.send(AddEvents(run_id=running.agent.run_id, events=[ev]))
    assert not ack.accepted
    assert "an added event may give its channel, exposure, position and time" in ack.reason
    assert not running.agent.feed.is_taken(("A", 100, "DAPI", 0))


def test_the_agent_holds_decisions_per_minute_and_time_indices_to_the_rig(
    running: Running,
) -> None:
    # it left the rate to the worker (any client of the channel could flood it), and an
    # added event's time index had no bound (the recording's time axis grew to match)
    rid = running.agent.run_id
    huge = useq.MDAEvent(index={"t": 10**9}, pos_name="A", channel={"config": "Phase"})
    ack = running.client.send(AddEvents(run_id=rid, events=[huge]))
    assert not ack.accepted
    assert "time index t=1000000000 is past the plan's last" in ack.reason
    # nor its z index (the recording's z axis grew to 10**30 planes no reader could open)
    deep = useq.MDAEvent(index={"t": 100, "z": 10**30}, pos_name="A", channel={"config": "Phase"})
    ack = running.client.send(AddEvents(run_id=rid, events=[deep]))
    assert not ack.accepted
    assert f"z index z={10**30} is past the plan's last" in ack.reason
    assert not running.agent.feed.is_taken(("A", 100, "Phase", 10**30))
    # a small limit, so that the burst takes a few ms of the simulated clock's minute
    # (600x: 0.1 s of wall time)
    g = running.agent.guardrails
    g.profile = g.profile.replace(
        guardrails={**g.profile.guardrails.model_dump(), "max_decisions_per_min": 3}
    )
    acks = [running.client.send(ChangeInterval(run_id=rid, interval_s=120.0)) for _ in range(7)]
    assert [a.accepted for a in acks] == [True] * 6 + [False]
    assert "max_decisions_per_min = 3 (x2 here)" in acks[-1].reason


def test_the_agent_refuses_a_decision_on_a_frame_older_than_the_rigs_limit(
    running: Running,
) -> None:
    # a worker far behind the camera would otherwise image cells as they were minutes ago
    g = running.agent.guardrails
    g.profile = g.profile.replace(
        guardrails={**g.profile.guardrails.model_dump(), "max_decision_age_s": 300}
    )
    fanout = running.agent._fanout
    assert fanout is not None
    while fanout.frames_acquired < 8:  # 4 time points, 120 s apart (0.2 s each at 600x)
        time.sleep(0.02)
    rid = running.agent.run_id
    old = running.client.send(ChangeInterval(run_id=rid, interval_s=120.0, seq=0))
    assert not old.accepted
    assert old.reason.startswith(f"{STALE_REFUSAL}it answers frame 0, taken ")
    assert old.reason.endswith(" s ago; guardrails.max_decision_age_s = 300 s")
    taken = float(old.reason.split("taken ")[1].split(" s ago")[0])
    assert taken > 300
    last = fanout.frames_acquired - 1
    new = running.client.send(ChangeInterval(run_id=rid, interval_s=120.0, seq=last))
    assert new.accepted, new.reason
    assert running.client.send(ChangeInterval(run_id=rid, interval_s=120.0)).accepted  # no seq
    # a stop is never too late: it only saves light
    assert running.client.send(StopRun(run_id=rid, seq=0)).accepted
    summary = running.join()
    assert summary["decisions_rejected"] == 1


def test_an_event_at_its_own_x_y_is_filed_under_its_place_and_booked_where_it_lands(
    running: Running,
) -> None:
    there = useq.MDAEvent(index={"t": 60}, x_pos=150.2, y_pos=-20.0, channel={"config": "DAPI"})
    dose = running.agent.guardrails.dose_s
    before = {k: dose[k] for k in ("A", "B")}
    ack = running.client.send(AddEvents(run_id=running.agent.run_id, delay_s=1e5, events=[there]))
    assert ack.accepted, ack.reason
    # recorded (and kept apart from other events) under its place's name, not as "p0"
    assert running.agent.feed.is_taken(("xy+150-20", 60, "DAPI", 0))
    assert not running.agent.feed.is_taken(("p0", 60, "DAPI", 0))
    # its light is booked where it lands, as the worker's guardrails book it: the
    # fields of A (0, 0) and B (300, 0) it overlaps, and its stage areas
    assert running.agent.guardrails.usage()["extra_frames"] == 1
    assert "xy+150-20" not in dose
    for k in ("A", "B"):
        assert dose[k] == pytest.approx(before[k] + 0.05)
    assert dose["area(+0,-1)"] == pytest.approx(0.05)
    # an empty name is no name: booked and filed alike
    unnamed = there.model_copy(update={"index": {"t": 61}, "pos_name": ""})
    ack = running.client.send(AddEvents(run_id=running.agent.run_id, delay_s=1e5, events=[unnamed]))
    assert ack.accepted, ack.reason
    assert running.agent.feed.is_taken(("xy+150-20", 61, "DAPI", 0))
    assert dose["area(+0,-1)"] == pytest.approx(0.1)


def test_stopping_a_position_stops_its_sub_sequences_and_what_is_added_for_it_later(
    running: Running,
) -> None:
    rid, c = running.agent.run_id, running.client

    def closeup(name: str, t: int, x: float = 10.0) -> AddEvents:
        ev = useq.MDAEvent(index={"t": t}, pos_name=name, x_pos=x, y_pos=0.0,
                           channel={"config": "Phase"})  # fmt: skip
        return AddEvents(run_id=rid, delay_s=1e5, events=[ev])

    assert c.send(closeup("A~closeup-0", 60)).accepted
    assert c.send(closeup("A~closeup-1", 60)).accepted
    assert c.send(closeup("xy+900+0", 60, x=900.0)).accepted
    # a place that only added events image can be stopped by its name
    one = c.send(StopPosition(run_id=rid, position="A~closeup-1"))
    assert one.accepted, one.reason
    # its own, and A~closeup-0's: queued at x/y of its own inside the stopped field (sent
    # after the stop, it would be refused)
    assert one.reason == "2 pending event(s) dropped"
    assert c.send(StopPosition(run_id=rid, position="xy+900+0")).accepted
    # stopping A stops the sub-sequences of A's sample too
    stop_a = c.send(StopPosition(run_id=rid, position="A"))
    assert stop_a.accepted, stop_a.reason
    again = c.send(StopPosition(run_id=rid, position="A~closeup-0"))
    assert again.reason == "0 pending event(s) dropped"  # (gone with A)
    # and what is added for it, or for a sub-sequence of it, later is refused (not dropped
    # unseen after an accepted answer)
    for late in (closeup("A~closeup-2", 61), _dapi(rid, range(70, 71)), closeup("A", 62)):
        ack = c.send(late)
        assert not ack.accepted
        assert "position A was stopped by an earlier decision" in ack.reason

    # an event at a place of its own (x/y only) is refused where it would image a stopped
    # field (centred in it: the sim's field is 332.8 µm wide), wherever its name points
    def at(x: float, t: int) -> AddEvents:
        ev = useq.MDAEvent(index={"t": t}, x_pos=x, y_pos=5.0, channel={"config": "Phase"})
        return AddEvents(run_id=rid, delay_s=1e5, events=[ev])

    for x, stopper in ((20.0, "A~closeup-1"), (-160.0, "A"), (905.0, "xy+900+0")):
        ack = c.send(at(x, 63))
        assert not ack.accepted, x
        assert f"position {stopper} was stopped by an earlier decision and " in ack.reason
        assert "lies in its field" in ack.reason
    # so is another position's event given x/y of its own (B's fields overlap A's: a close-up
    # of B centred on a cell inside A's field would image the stopped patch)
    ack = c.send(closeup("B~closeup-1", 61, x=100.0))
    assert not ack.accepted
    assert "was stopped by an earlier decision and B~closeup-1 lies in its field" in ack.reason
    # B goes on, at its own centre and beside the stopped fields, and so does a place
    assert c.send(closeup("B~closeup-0", 60, x=300.0)).accepted
    assert c.send(closeup("B~closeup-2", 61, x=200.0)).accepted
    assert c.send(at(300.0, 64)).accepted
    assert c.send(at(700.0, 64)).accepted
    unknown = c.send(StopPosition(run_id=rid, position="A~never"))
    assert not unknown.accepted
    assert "unknown position 'A~never'" in unknown.reason


def test_an_added_event_images_the_grid_tile_it_asks_for(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    grid = useq.GridRowsColumns(rows=1, columns=2, fov_width=300, fov_height=300)
    seq = useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=0, name="A",
                                       sequence=useq.MDASequence(grid_plan=grid))],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=120, loops=30),
    )  # fmt: skip
    r = Running(sim, tmp_path / "run", seq=seq)
    try:
        rid, feed, dose = r.agent.run_id, r.agent.feed, r.agent.guardrails.dose_s
        tiles = {name: feed.position_plan(name)[0] for name in ("A_g0", "A_g1")}
        assert tiles["A_g0"] != tiles["A_g1"]

        def add(t: int, **index: int) -> DecisionAck:
            ev = useq.MDAEvent(index={"t": t, **index}, channel={"config": "DAPI"})
            return r.client.send(AddEvents(run_id=rid, events=[ev]))

        for ack in (add(60, p=0, g=1), add(61, p=0)):
            assert ack.accepted, ack.reason
        # the tile it names, or the first tile, booked to that tile's budget alone (it was
        # filed as "A_g0_g1" and imaged at the first tile's place)
        assert feed.is_taken(("A_g1", 60, "DAPI", 0))
        assert feed.is_taken(("A_g0", 61, "DAPI", 0))
        assert not any("_g0_g" in k for k in dose)
        assert dose["A_g1"] == pytest.approx(dose["A_g0"]) == pytest.approx(0.05)
        missing = add(62, p=0, g=5)
        assert not missing.accepted
        assert "its position has no grid tile g=5" in missing.reason
        at_xy = useq.MDAEvent(index={"t": 63, "g": 5}, pos_name="A", x_pos=0.0, y_pos=0.0,
                              channel={"config": "DAPI"})  # fmt: skip
        missing = r.client.send(AddEvents(run_id=rid, events=[at_xy]))  # with x/y as well
        assert not missing.accepted
        assert "its position has no grid tile g=5" in missing.reason
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            frames = read_frames(r.agent.run_dir)
            if {f["index"]["t"] for f in frames if f["channel"] == "DAPI"} >= {60, 61}:
                break
            time.sleep(0.2)
        dapi = {f["index"]["t"]: f for f in read_frames(r.agent.run_dir) if f["channel"] == "DAPI"}
        assert (dapi[60]["position"], dapi[60]["x_um"]) == ("A_g1", tiles["A_g1"])
        assert (dapi[61]["position"], dapi[61]["x_um"]) == ("A_g0", tiles["A_g0"])
    finally:
        r.agent.feed.stop()
        r.join()


def test_decisions_are_applied_between_events(running: Running) -> None:
    rid = running.agent.run_id
    c = running.client
    time.sleep(0.5)
    moved = c.send(Move(run_id=rid, position="A", x_um=50.0, y_um=-20.0))
    stopped_b = c.send(StopPosition(run_id=rid, position="B"))
    slower = c.send(ChangeInterval(run_id=rid, interval_s=60.0))
    assert moved.accepted
    assert stopped_b.accepted
    assert slower.accepted
    time.sleep(0.5)
    end = c.send(StopRun(run_id=rid, rule="enough"))
    assert end.accepted
    summary = running.join()
    frames = read_frames(running.agent.run_dir)
    assert summary["frames_acquired"] == len(frames) < 60  # stopped early
    t_move = max(f["t_camera_ns"] for f in frames if f["position"] == "B")
    later_a = [f for f in frames if f["position"] == "A" and f["t_camera_ns"] > t_move]
    assert later_a
    assert all((f["x_um"], f["y_um"]) == (50.0, -20.0) for f in later_a[1:])
    gaps = [b["sample_time_s"] - a["sample_time_s"] for a, b in itertools.pairwise(later_a)]
    assert gaps
    assert all(g == pytest.approx(60.0) for g in gaps)
    log = read_decisions(running.agent.run_dir)
    assert [e["decision"]["type"] for e in log] == [
        "move",
        "stop_position",
        "change_interval",
        "stop_run",
    ]


@contextlib.contextmanager
def _slow_run(
    sim: SimulatedMicroscope, run: Path, loops: int
) -> Iterator[tuple[ScopeAgent, DecisionClient]]:
    """Run one position, phase only, 20 min apart (2 s on the wall clock at 600x)."""
    seq = useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=0, name="A")],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=1200, loops=loops),
    )
    agent = ScopeAgent(sim.core, sim.profile, seq, run, sim=sim, bus="inline")
    thread = threading.Thread(target=agent.run)
    thread.start()
    client = DecisionClient(agent.server.endpoint)  # type: ignore[union-attr]
    try:
        yield agent, client
    finally:
        thread.join(30)
        client.close()


def _close_up(agent: ScopeAgent, client: DecisionClient, channel: str) -> None:
    ack = client.send(AddEvents(run_id=agent.run_id, events=[
        useq.MDAEvent(index={"t": 0}, x_pos=10.0, y_pos=0.0, pos_name="A~closeup",
                      channel={"config": channel})]))  # fmt: skip
    assert ack.accepted, ack.reason


def _frames_in_order(agent: ScopeAgent) -> list[dict[str, Any]]:
    return sorted(read_frames(agent.run_dir), key=lambda f: f["t_camera_ns"])


def test_events_added_while_the_runner_waits_are_acquired_before_the_next_time_point(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    # a close-up asked for now must not wait behind the next time point (it did: the
    # runner was handed that event at once and waited for it with the event in hand)
    with _slow_run(sim, tmp_path / "run", loops=2) as (agent, client):
        time.sleep(0.4)
        t_sent = clock_ns()
        _close_up(agent, client, "DAPI")
    frames = _frames_in_order(agent)
    order = [(f["position"], f["index"]["t"]) for f in frames]
    assert order == [("A", 0), ("A~closeup", 0), ("A", 1)]
    assert frames[1]["t_camera_ns"] - t_sent < 1e9  # at once, not at the next time point


def test_a_pause_delays_the_plan_and_close_ups_still_go_first(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    # the feed keeps the schedule: a pause must stop its clock (else the runner, which
    # counts the pause, is handed each event early and waits with it in hand)
    # when the runner starts each event (after waiting for it to be due, before the
    # simulator steps its sample to the event's time and the camera exposes: those steps
    # take longer for a longer stretch of sample time, up to 0.3 s more on a slow machine)
    started: dict[tuple[str | None, int], float] = {}
    sim.core.mda.events.eventStarted.connect(
        lambda ev: started.setdefault((ev.pos_name, ev.index.get("t", 0)), time.perf_counter())
    )
    with _slow_run(sim, tmp_path / "run", loops=3) as (agent, client):
        time.sleep(0.3)
        sim.core.mda.set_paused(True)
        time.sleep(1.0)
        sim.core.mda.set_paused(False)
        time.sleep(0.5)  # t=1 is now due about 1.5 s from here, not 0.5 s
        _close_up(agent, client, "Phase")
    frames = _frames_in_order(agent)
    order = [(f["position"], f["index"]["t"]) for f in frames]
    assert order == [("A", 0), ("A~closeup", 0), ("A", 1), ("A", 2)]
    t0, t1, t2 = (started["A", t] for t in range(3))
    assert t2 - t1 == pytest.approx(2.0, abs=0.3)  # then on schedule again
    # the interval with the pause is longer by the 1 s pause than the next one (how
    # exactly the feed counts a pause is tested on the feed alone, below: here the
    # runner's signal must reach it). The outcomes to tell apart are 1 s (counted once),
    # 0 (the signal lost) and 2 s (counted by the feed and the runner both): the margin
    # is half the pause
    assert (t1 - t0) - (t2 - t1) == pytest.approx(1.0, abs=0.5)


def _feed_one_second_apart(sim: SimulatedMicroscope) -> EventFeed:
    """A feed of two phase frames 60 s apart in plan time, 1 s on the wall clock."""
    seq = useq.MDASequence(
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=60, loops=2),
    )
    return EventFeed(seq, LivescopeEngine(sim.core, sim.profile, sim=sim), 60.0)


def test_places_noted_but_not_queued_can_be_named_later(sim: SimulatedMicroscope) -> None:
    # a replay serves only the added events its recording holds; the others' places
    # are still known, so a later StopPosition naming one is not "unknown"
    feed = _feed_one_second_apart(sim)
    there = useq.MDAEvent(index={"t": 9}, pos_name="p0~closeup-0", x_pos=5.0, y_pos=0.0,
                          channel={"config": "DAPI"})  # fmt: skip
    assert not feed.has_position("p0~closeup-0")
    feed.note_added([there])
    assert feed.has_position("p0~closeup-0")
    assert feed.stop_position("p0~closeup-0") == 0


def test_the_feeds_clock_stops_while_paused(sim: SimulatedMicroscope) -> None:
    feed = _feed_one_second_apart(sim)
    events = iter(feed)
    next(events)  # the clock starts at the first event
    feed.pause_toggled(True)
    frozen = feed.now()
    time.sleep(0.3)
    assert feed.now() == frozen
    feed.pause_toggled(True)  # asked twice: still one pause
    feed.pause_toggled(False)
    feed.pause_toggled(False)  # lifted twice: counted once
    assert feed.now() == pytest.approx(frozen, abs=0.05 * 60)
    time.sleep(0.2)
    assert feed.now() == pytest.approx(frozen + 0.2 * 60, abs=0.05 * 60)


def test_a_pause_while_the_feed_waits_delays_the_next_event_by_all_of_it(
    sim: SimulatedMicroscope,
) -> None:
    feed = _feed_one_second_apart(sim)
    events = iter(feed)
    next(events)
    t0 = time.perf_counter()
    got: list[float] = []
    waiter = threading.Thread(target=lambda: (next(events), got.append(time.perf_counter())))
    waiter.start()
    time.sleep(0.3)  # the feed is waiting for the next event (in 0.25 s slices)
    feed.pause_toggled(True)
    time.sleep(0.5)
    feed.pause_toggled(False)
    waiter.join(5)
    # 1 s + the whole 0.5 s pause. A busy machine only makes it later: the upper bound
    # is halfway to the 2 s of a pause counted twice, the lower one 50 ms under 1.5 s
    # (a pause not counted gives 1 s)
    assert 1.45 <= got[0] - t0 < 1.75, got[0] - t0


def test_a_pause_signal_out_of_order_follows_the_runners_state(
    sim: SimulatedMicroscope,
) -> None:
    feed = _feed_one_second_apart(sim)
    pausing = [False]
    feed.runner_pausing = lambda: pausing[0]
    events = iter(feed)
    next(events)
    t0 = time.perf_counter()
    feed.pause_toggled(True)  # a "paused" signal that came after the runner was resumed
    next(events)  # the feed does not stay paused for good
    # on time (a busy machine only makes it later); a pause that held would keep it waiting
    assert 0.95 <= time.perf_counter() - t0 < 1.5


def test_only_the_first_event_resets_the_runners_timer(sim: SimulatedMicroscope) -> None:
    # positions before time: useq resets the timer at each position's first event
    seq = useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, name="A"), useq.Position(x=50, y=0, name="B")],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=30, loops=2),
        axis_order="ptc",
    )
    assert sum(ev.reset_event_timer for ev in seq) == 2
    feed = EventFeed(seq, LivescopeEngine(sim.core, sim.profile, sim=sim), 600.0)
    assert [ev.reset_event_timer for ev in feed] == [True, False, False, False]


def test_the_agent_expands_its_plan_once(
    sim: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ~40 µs per event: expanding a long multi-position plan three times cost seconds
    seq = useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, name="A"), useq.Position(x=50, y=0)],
        channels=[useq.Channel(config="Phase"), useq.Channel(config="DAPI")],
        time_plan=useq.TIntervalLoops(interval=60, loops=3),
    )
    expansions = 0
    iterate = useq.MDASequence.__iter__

    def counted(self: useq.MDASequence) -> Iterator[useq.MDAEvent]:
        nonlocal expansions
        expansions += 1
        return iterate(self)

    monkeypatch.setattr(useq.MDASequence, "__iter__", counted)
    agent = ScopeAgent(sim.core, sim.profile, seq, tmp_path / "run", sim=sim, bus="off")
    assert expansions == 1
    assert agent.planned_events == 12
    # the queue and the books hold every planned event, as if each had expanded it
    assert all(agent.feed.is_taken(("A", t, c, 0)) for t in range(3) for c in ("Phase", "DAPI"))
    assert agent.feed.is_taken(("p1", 2, "DAPI", 0))
    assert dict(agent.guardrails.dose_s) == pytest.approx({"A": 0.15, "p1": 0.15})  # 3 x 50 ms
    agent.feed.stop()
    assert agent.run()["frames_acquired"] == 0  # (and its files are closed)


def test_a_run_cancelled_while_the_feed_waits_ends_at_once(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    seq = useq.MDASequence(
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=6000, loops=2),  # 10 s apart at 600x
    )
    agent = ScopeAgent(sim.core, sim.profile, seq, tmp_path / "run", sim=sim, bus="off")
    thread = threading.Thread(target=agent.run)
    thread.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    sim.core.mda.cancel()  # as a GUI would, not through the agent
    thread.join(30)
    assert not thread.is_alive()
    assert time.monotonic() - t0 < 5.0  # not after the 10 s wait for the next time point
    assert [f["index"]["t"] for f in read_frames(agent.run_dir)] == [0]


def test_move_keeps_z_stacks_and_is_refused_when_a_plane_leaves_the_travel(
    sim: SimulatedMicroscope,
) -> None:
    seq = useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=10, name="A")],
        channels=[useq.Channel(config="DAPI", exposure=5.0)],
        z_plan=useq.ZRangeAround(range=4, step=2),
        time_plan=useq.TIntervalLoops(interval=60, loops=2),
    )
    feed = EventFeed(seq, LivescopeEngine(sim.core, sim.profile, sim=sim), 600.0)
    assert feed.move("A", 100.0, 50.0, 20.0) == 6
    planes = sorted({feed.preview(ev).z_pos for ev in seq})
    assert planes == [18.0, 20.0, 22.0]  # the stack moved as a whole
    assert {(feed.preview(ev).x_pos, feed.preview(ev).y_pos) for ev in seq} == {(100.0, 50.0)}
    coords = feed.moved_coordinates("A", 0.0, 0.0, 199.0)
    assert max(z for _, _, z in coords if z is not None) == 201.0  # beyond the 200 µm travel
    # a hardware-timed z-stack (a piezo's sequence, merged before the move reached it)
    # is moved too: it imaged the plan's planes
    stack = [ev for ev in seq if ev.index["t"] == 1]
    burst = SequencedEvent(**{**stack[0].model_dump(), "events": tuple(stack),
                              "z_sequence": tuple(e.z_pos for e in stack)})  # fmt: skip
    assert burst.z_sequence == (8.0, 10.0, 12.0)
    moved = feed._moved(burst)
    assert moved.z_sequence == (18.0, 20.0, 22.0)
    assert [e.z_pos for e in moved.events] == [18.0, 20.0, 22.0]
    # an x/y move (a recentring) keeps the focus an earlier move gave the position
    feed.move("A", 0.0, 0.0, None)
    assert sorted({feed.preview(ev).z_pos for ev in seq}) == [18.0, 20.0, 22.0]


def test_a_move_shifts_only_its_own_position_in_a_burst_of_several(
    sim: SimulatedMicroscope,
) -> None:
    # a sequenceable XY stage merges positions imaged at one time into one burst: its
    # x sequence was shifted by the first position's move for every position
    seq = useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=0, name="A"),
                         useq.Position(x=500, y=0, z=0, name="B")],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=60, loops=2),
    )  # fmt: skip
    feed = EventFeed(seq, LivescopeEngine(sim.core, sim.profile, sim=sim), 600.0)
    pair = [ev for ev in seq if ev.index["t"] == 1]
    burst = SequencedEvent(**{**pair[0].model_dump(), "events": tuple(pair),
                              "x_sequence": (0.0, 500.0), "y_sequence": (0.0, 0.0)})  # fmt: skip
    for name, expected in (("B", (0.0, 450.0)), ("A", (100.0, 450.0))):
        feed.move(name, 100.0 if name == "A" else 450.0, 0.0, None)
        moved = feed._moved(burst)
        assert moved.x_sequence == expected
        assert tuple(e.x_pos for e in moved.events) == expected


def test_the_agent_books_a_moves_light_where_it_lands_and_undoes_a_move_it_refuses(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    # A moved over B: each one's DAPI frames still to come light the other's sample
    seq = useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=0, name="A"),
                         useq.Position(x=1000, y=0, z=0, name="B")],
        channels=[useq.Channel(config="DAPI", exposure=50.0)],
        z_plan=useq.ZRangeAround(range=2, step=2),  # two planes, 1 µm either side
        time_plan=useq.TIntervalLoops(interval=60, loops=4),
    )  # fmt: skip
    profile = sim.profile.replace(light_dose={"max_fluorescence_s_per_position": 1.0})
    agent = ScopeAgent(sim.core, profile, seq, tmp_path / "run", sim=sim, bus="off")
    try:
        rid = agent.run_id
        assert dict(agent.guardrails.dose_s) == pytest.approx({"A": 0.4, "B": 0.4})
        at_b = AddEvents(run_id=rid, events=[
            useq.MDAEvent(index={"t": 9}, pos_name="B", channel={"config": "DAPI"},
                          exposure=100.0, min_start_time=200.0)])  # fmt: skip
        assert agent._on_decision(at_b, clock_ns()).accepted
        # a plane out of the z travel (200 µm): refused by the feed after the guardrails
        # passed and booked it, and undone
        ack = agent._on_decision(Move(run_id=rid, position="A", x_um=950, y_um=0, z_um=199.5),
                                 clock_ns())  # fmt: skip
        assert not ack.accepted
        assert ack.reason.startswith("move A: z = 200.5 µm is outside the stage travel")
        assert dict(agent.guardrails.dose_s) == pytest.approx({"A": 0.4, "B": 0.5})
        assert agent.guardrails.state()["moves"] == {}
        ack = agent._on_decision(Move(run_id=rid, position="A", x_um=950, y_um=0), clock_ns())
        assert ack.accepted, ack.reason
        # each one's light (plan and added, counted whole) booked to the other
        assert dict(agent.guardrails.dose_s) == pytest.approx({"A": 0.9, "B": 0.9})

        def closeup(at: str, t: int) -> AddEvents:
            return AddEvents(run_id=rid, events=[
                useq.MDAEvent(index={"t": t}, pos_name=at, channel={"config": "DAPI"},
                              exposure=100.0, min_start_time=300.0 + t)])  # fmt: skip

        # a close-up at A, imaged over B now, is booked to B too, and held to its budget
        assert agent._on_decision(closeup("A", 10), clock_ns()).accepted
        assert dict(agent.guardrails.dose_s) == pytest.approx({"A": 1.0, "B": 1.0})
        ack = agent._on_decision(closeup("B", 11), clock_ns())
        assert not ack.accepted
        assert ack.reason == (
            "guardrail: light dose: position B would get 1.10 s of fluorescence; "
            "light_dose.max_fluorescence_s_per_position = 1 s"
        )
    finally:
        agent.feed.stop()
        agent.run()


def test_the_agent_rehearses_a_close_up_before_the_run_and_keeps_nothing_of_it(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    # the run's first decisions would otherwise run the parse/check/prepare code cold
    seq = useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, name="A")],
        channels=[useq.Channel(config="Phase"), useq.Channel(config="DAPI")],
        time_plan=useq.TIntervalLoops(interval=60, loops=3),
    )
    agent = ScopeAgent(sim.core, sim.profile, seq, tmp_path / "run", sim=sim, bus="off")
    books = agent.guardrails.state()
    assert agent._rehearse_decision() is True  # the whole way: parsed, checked, prepared
    assert agent.guardrails.state() == books
    assert not agent.feed.has_position("A~rehearsal-0")
    assert (agent.decisions_accepted, agent.decisions_rejected) == (0, 0)
    agent.feed.stop()
    summary = agent.run()  # (which rehearses again)
    assert summary["frames_acquired"] == 0
    assert read_decisions(tmp_path / "run") == []


def test_the_run_rehearses_and_a_failed_rehearsal_does_not_stop_it(
    sim: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import livescope.scope._agent as agent_module

    seq = useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=0, name="A")],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=60, loops=2),
    )
    agent = ScopeAgent(sim.core, sim.profile, seq, tmp_path / "run", sim=sim, bus="off")
    rehearsed: list[bool] = []
    rehearse = agent._rehearse_decision

    def broken(*args: Any) -> Any:
        raise RuntimeError("e.g. limits no close-up can pass")

    def spy() -> bool:
        rehearsed.append(rehearse())
        return rehearsed[-1]

    monkeypatch.setattr(agent_module, "rehearsal_closeup", broken)
    monkeypatch.setattr(agent, "_rehearse_decision", spy)
    summary = agent.run()
    assert rehearsed == [False]  # run() rehearsed, and the rehearsal failed quietly
    assert summary["ok"]
    assert summary["frames_acquired"] == 2


def test_an_interrupted_runs_summary_is_read_only_if_this_run_wrote_it(tmp_path: Path) -> None:
    """A Ctrl+C before a run wrote its summary must not report a folder's earlier run."""
    import json
    import os

    from livescope.scope import interrupted_summary

    with pytest.raises(KeyboardInterrupt):
        interrupted_summary(tmp_path)  # no summary at all: the Ctrl+C goes on
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"run_id": "earlier", "interrupted": True}), encoding="utf-8")
    started = time.time()
    assert interrupted_summary(tmp_path, since=started)["run_id"] == "earlier"  # (just written)
    os.utime(path, (started - 60, started - 60))  # written a minute before this run began
    assert interrupted_summary(tmp_path)["run_id"] == "earlier"
    with pytest.raises(KeyboardInterrupt):
        interrupted_summary(tmp_path, since=started)
    path.write_text(json.dumps({"run_id": "now", "interrupted": False}), encoding="utf-8")
    with pytest.raises(KeyboardInterrupt):  # a run that ended as planned was not interrupted
        interrupted_summary(tmp_path, since=started)
