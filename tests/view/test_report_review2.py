"""The report's decisions and thumbnails, second review: what a run folder holds, shown as it is.

Each test draws a report of a run whose contents it states: a frame the recording
cannot give back costs its panel (not the whole report), the thumbnails show the
channel the rig's profile segments, a plate of many positions does not make a page
too large to open, and a decision the agent answered after the worker's wait shows
that answer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from livescope.schema import HardwareProfile
from livescope.scope import demo_sequence, run_simulated
from livescope.view import _report_fields, write_report
from livescope.view._report_plots import STATUS_CAPTION

from .test_report_robustness import make_run, not_drawn, notes, section
from .test_report_robustness import recorded_run as recorded_run

# ------------------------------------------------------------------ thumbnails


def _captions(page: str) -> list[str]:
    return re.findall(r"<figcaption>(.*?)</figcaption>", page, re.S)


def test_a_damaged_frame_in_the_recording_costs_its_panel_only(recorded_run: Path) -> None:
    # a chunk cut short (a copy that did not finish, a bad disk): zarr's codec raised a
    # RuntimeError, which no section catches, and no report was written at all
    chunk = recorded_run / "data.ome.zarr" / "0" / "0" / "c" / "1" / "1" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:100])  # (t=1, channel 1: DAPI, z=0)
    page = section(write_report(recorded_run).read_text(encoding="utf-8"), "fields")
    assert page.count('<img class="plot"') == 1
    (said,) = notes(page)
    assert said.startswith(
        "p0: the DAPI frame at t=1, z=0 could not be read from data.ome.zarr (not drawn): "
        "RuntimeError: "
    )
    (caption,) = _captions(page)
    assert caption.startswith("p0: DAPI channel at time points 0 of 2.")


def _renamed_run(out: Path, profile: HardwareProfile, names: dict[str, str]) -> Path:
    """A simulated run on the sim rig under another name, its channels renamed ``names``."""
    data = profile.model_dump()
    data["name"] = "lab-rig"  # (no shipped profile of that name)
    for preset in data["channels"]["presets"]:
        preset["name"] = names[preset["name"]]
    rig = type(profile).model_validate(data)
    run_simulated(rig, demo_sequence(rig, timepoints=1, positions=1), out, seed=3)
    return out


@pytest.mark.parametrize(
    ("names", "keep_profile", "shown"),
    [
        # the run's profile.yaml says which channel shows nuclei (the summary names a rig
        # that is not shipped: the brightfield channel was shown, as no name matched)
        pytest.param({"Phase": "Brightfield", "DAPI": "405"}, True, "405", id="from-profile"),
        # without a profile, by name: "SPY" alone took a SPY dye of tubulin for a DNA stain
        pytest.param(
            {"Phase": "SPY555-tubulin", "DAPI": "SPY650-DNA"}, False, "SPY650-DNA", id="by-name"
        ),
    ],
)
def test_the_thumbnails_show_the_channel_of_the_nuclei(
    tmp_path: Path,
    sim_profile: HardwareProfile,
    names: dict[str, str],
    keep_profile: bool,
    shown: str,
) -> None:
    run = _renamed_run(tmp_path / "run", sim_profile, names)
    if not keep_profile:
        (run / "profile.yaml").unlink()
    page = section(write_report(run).read_text(encoding="utf-8"), "fields")
    (caption,) = _captions(page)
    assert caption.startswith(f"p0: {shown} channel at time points 0 of 1.")


def test_a_run_of_many_positions_draws_the_first_positions_thumbnails(
    tmp_path: Path, sim_profile: HardwareProfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a figure is ~0.3 MB of the page: a 96-well plate made a page of ~30 MB (here the
    # limit is lowered to 1, not to record 17 positions)
    monkeypatch.setattr(_report_fields, "MAX_THUMBNAIL_POSITIONS", 1)
    run = tmp_path / "run"
    run_simulated(sim_profile, demo_sequence(sim_profile, timepoints=1, positions=2), run, seed=3)
    page = section(write_report(run).read_text(encoding="utf-8"), "fields")
    assert page.count('<img class="plot"') == 1
    assert [c.split(":")[0] for c in _captions(page)] == ["p0"]
    assert "Thumbnails of the first 1 of 2 positions" in " ".join(notes(page))


# ------------------------------------------------------------------ decisions


def _firing(decision_id: str | None, t: int, **kw: Any) -> dict[str, Any]:
    return {"rule": "mitosis-burst", "trigger": "p_mitosis", "position": "p0", "t": t,
            "seq": 2 * t, "sample_time_s": 60.0 * t, "track": 1, "y": 10.0, "x": 10.0,
            "decision": {"type": "add_events", "decision_id": decision_id}, **kw}  # fmt: skip


def _answered(run: Path, answers: list[tuple[str, bool, str]]) -> None:
    """Write the agent's log: its answer (decision id, accepted, reason) to each decision."""
    (run / "decisions.jsonl").write_text("".join(
        json.dumps({"decision": {"type": "add_events", "decision_id": d, "run_id": "r1",
                                 "rule": "mitosis-burst"},
                    "ack": {"decision_id": d, "run_id": "r1", "type": "add_events",
                            "accepted": ok, "reason": why}}) + "\n"
        for d, ok, why in answers))  # fmt: skip


def _rows(page: str, heading: str) -> list[list[str]]:
    """The cells of the table under ``heading`` (header row left out)."""
    after = page.split(f"<h3>{heading}</h3>", 1)[1]
    table = after.split("</table>", 1)[0]
    return [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in table.split("<tr>")[2:]]


def test_a_decision_answered_after_the_workers_wait_shows_the_answer(tmp_path: Path) -> None:
    # the worker stops waiting for an answer (stage "unanswered"); the agent may answer
    # later, and its log says what it did: one carried out was listed among the
    # decisions "not carried out", and counted unanswered
    run = make_run(tmp_path / "run", positions=("p0",))
    wait = {"verdict": "rejected", "stage": "unanswered"}
    policy = [
        _firing("d-late-yes", 0, **wait, reason="no answer from the agent (timeout); booked"),
        _firing("d-late-no", 1, **wait, reason="no answer from the agent (timeout); booked"),
        _firing("d-never", 2, **wait, reason="no answer from the agent (closed); booked"),
        _firing("d-in-time", 3, verdict="accepted", stage="agent", reason=""),
    ]
    (run / "results" / "policy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in policy))
    _answered(run, [("d-late-yes", True, ""), ("d-late-no", False, "stale: the cell moved"),
                    ("d-in-time", True, "")])  # fmt: skip
    page = section(write_report(run).read_text(encoding="utf-8"), "decisions")
    assert not_drawn(page) == []
    # rule, fired, accepted, shared, recorded, refused by guardrail / agent / shared, ...
    ((rule, fired, accepted, _, _, _, by_agent, _, unanswered, *_),) = _rows(page, "Per rule")
    assert (rule, fired, accepted, by_agent, unanswered) == ("mitosis-burst", "4", "2", "1", "1")
    why = {r[0]: r[1] for r in _rows(page, "Why decisions were not carried out")}
    assert why == {
        "answered after the worker&#x27;s wait: stale: the cell moved": "1",
        "no answer from the agent (closed); booked": "1",
    }
    outcomes = [r[5] for r in _rows(page, "All firings")]
    assert outcomes == ["accepted", "rejected (agent)", "unanswered", "accepted"]


def test_a_firing_time_that_is_no_number_costs_that_time_only(tmp_path: Path) -> None:
    # a hand-edited or older policy.jsonl: a time that is text (and no time point to look
    # it up by) stopped the whole decisions section
    run = make_run(tmp_path / "run", positions=("p0",))
    odd = _firing("d-x", 0, verdict="accepted", stage="agent", reason="")
    odd.update(t=None, sample_time_s="soon")
    with (run / "results" / "policy.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(odd) + "\n")
    page = section(write_report(run).read_text(encoding="utf-8"), "decisions")
    assert not_drawn(page) == []
    assert page.count('<img class="plot"') == 1  # (the timeline, of the other four)
    rows = _rows(page, "All firings")
    assert len(rows) == 5
    assert rows[-1][0] == "—"


def test_the_thumbnails_mark_a_late_answer_as_the_decisions_section_does(
    recorded_run: Path,
) -> None:
    # the firing's marker said "not answered" where the decisions section says accepted
    firing = _firing("d-late", 1, verdict="rejected", stage="unanswered",
                     reason="no answer from the agent (timeout); booked")  # fmt: skip
    (recorded_run / "results" / "policy.jsonl").write_text(json.dumps(firing) + "\n")
    _answered(recorded_run, [("d-late", True, "")])
    page = section(write_report(recorded_run).read_text(encoding="utf-8"), "fields")
    assert "1 rule firing(s) marked: " + STATUS_CAPTION["accepted"] + "." in page
