"""What the pipeline worker's threads hand each other: fields, and fields to decide or store."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from numpy.typing import NDArray

from livescope.policy import Observation, Verdict
from livescope.tracking import TrackerSnapshot

from ._analyzer import FrameResult

__all__ = ["DecideJob", "Field", "StoreJob", "overlap_ns"]  # the worker's own, not re-exported


@dataclass
class Field:
    """The frames of one position at one time point, as the worker analyses them."""

    position: str
    t: int
    frames: dict[tuple[str, int], NDArray[Any]]
    header: dict[str, Any]
    """Header of the frame that completed the field (latest arrival)."""
    t_received_ns: int
    live: bool = True
    t_start_ns: int = 0
    """When its analysis began and when its decisions were answered (`clock_ns`)."""
    t_done_ns: int = 0
    next_seq: int | None = None
    """The first frame received after it, of another field: every frame of this one
    was taken before it (None: none came after)."""
    stain_skipped: bool = False
    """Its overlay-only virtual stain was left out to catch up (counted once decided)."""
    z_um: dict[int, float] = field(default_factory=dict)
    """Stage z of its frames by z index, where their headers give it (a z-stack's
    planes: the header above is the last plane's)."""
    analysed: dict[str, NDArray[Any]] = field(default_factory=dict)
    """Channel → the plane the engines ran on (a z-stack's nearest its middle), set
    when it is analysed: what the overlay shows under its labels."""

    pixel_um: dict[str, float] = field(default_factory=dict)
    """Channel → µm per pixel its frames give (channels of a field may be binned
    differently, a preset's binning: the header above is the last frame's)."""

    def note(self, header: dict[str, Any]) -> None:
        """Keep the stage z and the pixel size of a frame of this field (where it has them)."""
        if header.get("z_um") is not None:
            self.z_um[int(header.get("index", {}).get("z", 0))] = float(header["z_um"])
        px = float(header.get("pixel_size_um") or 0.0)
        if px > 0 and header.get("channel") is not None:
            self.pixel_um[str(header["channel"])] = px

    def pixel_size_um(self, channel: str | None) -> float | None:
        """Return µm per pixel of ``channel``'s frames (else the header's; None: not given)."""
        px = self.pixel_um.get(channel) if channel is not None else None
        return px or float(self.header.get("pixel_size_um") or 0.0) or None

    def z_centre_um(self) -> float | None:
        """Return the middle of its planes' stage z (the header's z with none kept)."""
        if self.z_um:
            return (min(self.z_um.values()) + max(self.z_um.values())) / 2
        z = self.header.get("z_um")
        return None if z is None else float(z)


@dataclass
class DecideJob:
    """A field whose engines have run, for the decision thread."""

    fld: Field
    res: FrameResult
    nuclear: NDArray[Any] | None
    pixel_size_um: float | None
    t_start_ns: int
    t_analysed_ns: int
    busy_ns: int
    """Time the engines spent on earlier fields while this one waited."""
    tracker_state: TrackerSnapshot | None
    """Its position's tracker right after this field (the next field may change it; None:
    nothing was tracked)."""
    counts: dict[str, int] | None = None
    """The main thread's counts right after this field (the worker's ``MAIN_COUNTS``), for
    its saved state: the main thread has often analysed the next field by the time this one
    is decided (None: the worker's counts as they are then)."""

    def latency_ms(
        self, *, prepare: float, policy: float, posting: float, posted: int,
        sent: list[tuple[int, int, Any]], t_handoff_ns: int, t_decided_ns: int,
    ) -> dict[str, float]:  # fmt: skip
        """Return the field's latency record (ms per stage; `livescope.pipeline.LATENCY_STAGES`).

        ``prepare``, ``policy`` (posting included) and ``posting``: ms the
        decision thread spent; ``posted``: how many decisions were sent;
        ``sent``: (t_sent, t_acked, ack) of each accepted one; ``t_handoff_ns``:
        when the decision thread took the field; ``t_decided_ns``: when every
        decision was answered (or the wait ended). Live fields also get their
        way from the camera and the pipeline overhead (end to end, minus this
        field's engines and the time it waited for the engines on earlier
        fields): measured on the agent's clock (``t_camera_ns``, the answers'
        ``t_acked_ns``), so left out where the frame's camera time is after it
        was received here (an agent on another machine, its clock ahead: the
        figures would be the clocks'). End to end runs to the end of the
        field's last decision, every posted one counted (an accepted one's
        answer stamp; a refused or unanswered one, ``t_decided_ns``), and
        ``decision_enqueued`` is its slowest accepted decision's sent → queued.
        """
        fld, res = self.fld, self.res
        ms: dict[str, float] = {k: round(v, 3) for k, v in res.ms.items()}
        engines_ms = sum(res.ms.values())
        ms["engines"] = round(engines_ms, 3)
        ms["policy"] = round(policy - posting, 3)
        if posted:  # (a field that sent nothing has no sending stage)
            ms["post"] = round(posting, 3)
        ms["prepare"] = round(prepare, 3)
        ms["analyse_other"] = round((self.t_analysed_ns - self.t_start_ns) / 1e6 - engines_ms, 3)
        ms["handoff"] = round((t_handoff_ns - self.t_analysed_ns) / 1e6, 3)
        if not fld.live:
            return ms
        t_cam = int(fld.header.get("t_camera_ns") or 0)
        agent_clock = 0 < t_cam <= fld.t_received_ns  # (else: an agent's clock ahead of ours)
        if agent_clock:
            ms["camera_to_received"] = round((fld.t_received_ns - t_cam) / 1e6, 3)
        ms["queue_wait"] = round((self.t_start_ns - fld.t_received_ns) / 1e6, 3)
        ms["busy_wait"] = round(self.busy_ns / 1e6, 3)
        if agent_clock:
            # a decision is enqueued when the agent stamps its answer (t_acked_ns, the
            # agent's clock, as t_camera_ns is); the answer's way back is not its latency.
            # Every posted one counts, whatever became of the others: one refused or not
            # answered (posted, not in `sent`) ends when the decision thread stopped
            # waiting (t_decided_ns: every answer in, or the wait over; a refusal's own
            # stamp is not kept). With none posted, the field ends when the policies did.
            ends = [a for _, a, _ in sent]
            if posted > len(sent) or not ends:
                ends.append(t_decided_ns)
            e2e = (max(ends) - t_cam) / 1e6
            ms["end_to_end"] = round(e2e, 3)
            ms["overhead"] = round(e2e - engines_ms - self.busy_ns / 1e6, 3)
            if sent:
                # the slowest, not the median: a field that sends several (a burst of
                # close-ups) waits for its last; one row per field, so the summary's p99
                # is over each field's slowest decision
                ms["decision_enqueued"] = round(max((a - s) / 1e6 for s, a, _ in sent), 3)
        return ms


@dataclass
class StoreJob:
    """A decided field, for the store thread."""

    fld: Field
    res: FrameResult
    obs: Observation
    verdicts: list[Verdict]
    acks: dict[int, tuple[str, bool, str]]
    ms: dict[str, float]
    state: dict[str, Any]
    policy_state: tuple[int, str]
    """(generation, JSON) of the policies' state once this field was decided."""


def overlap_ns(spans: Iterable[tuple[int, int]], start: int, end: int) -> int:
    """Return how much of the ``(begin, end)`` spans (ns) lies between ``start`` and ``end``."""
    return sum(max(0, min(b, end) - max(a, start)) for a, b in spans)
