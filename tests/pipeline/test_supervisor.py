"""The supervisor's verdict on a worker that has ended (no worker process is started here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livescope.pipeline import WorkerConfig, WorkerSupervisor
from livescope.schema import LivescopeError


@pytest.mark.parametrize(
    ("exits", "says", "error"),
    [
        ([0], {"ok": True, "fields": 3}, None),
        ([0], {"ok": False, "fields": 3}, "says its results are incomplete"),
        ([1, 0], {"ok": True}, None),  # restarted once, then finished
        ([1], {"ok": True}, r"the worker failed \(exit codes \[1\]"),
        ([], {}, r"the worker failed \(exit codes \[\]"),  # never ran to an exit
    ],
)
def test_the_run_takes_the_workers_results_only_if_it_finished_and_says_they_are_whole(
    tmp_path: Path, exits: list[int], says: dict[str, object], error: str | None
) -> None:
    sup = WorkerSupervisor(tmp_path / "run", WorkerConfig())
    sup.exits.extend(exits)  # what the watch thread saw of the worker's exits
    sup.restarts = max(0, len(exits) - 1)
    if says:
        (sup.results / "worker.json").write_text(json.dumps(says), encoding="utf-8")
    if error is not None:
        with pytest.raises(LivescopeError, match=error):
            sup.wait(1)
        return
    summary = sup.wait(1)
    assert summary.get("fields") == says.get("fields")
    assert summary["supervisor"] == {"restarts": len(exits) - 1, "exit_codes": exits}
