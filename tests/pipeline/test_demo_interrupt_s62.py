"""A Ctrl+C as the recording closes is logged as what it was, not as a stopped acquisition."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import useq

from livescope.pipeline import _demo
from livescope.schema import load_profile
from tests.pipeline.test_supervisor_hang_review import _record, _worker
from tests.pipeline.test_supervisor_review import _Scripted


@pytest.mark.parametrize(
    ("closing", "said", "not_said"),
    [
        pytest.param(
            True,
            "once the acquisition had ended and each frame it took was recorded",
            "has stopped",
            id="while-closing",
        ),
        pytest.param(False, "the acquisition has stopped", "had ended", id="mid-acquisition"),
    ],
)
def test_a_ctrl_c_is_logged_as_what_it_interrupted(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    closing: bool,
    said: str,
    not_said: str,
) -> None:
    # a Ctrl+C once every frame was recorded left the run ok (`interrupted_while_closing`)
    # but the demo logged "the acquisition has stopped", as if frames had been lost
    out = tmp_path / "run"
    made: list[_Scripted] = []

    class Finishes(_Scripted):  # the real supervisor; a script stands in for its worker
        script = _worker(out / "results", stores=(("p0", 0, 0),), then="finish")

        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    def acquire(on_ready: Callable[[Any], None]) -> dict[str, Any]:
        on_ready(None)
        _record(made[0], (0, "p0", 0, None))
        flag = "interrupted_while_closing" if closing else "interrupted"
        summary = {"frames_acquired": 1, "frames_written": 1, "decisions_accepted": 0,
                   "decisions_rejected": 0, "duration_s": 1.0, flag: True}  # fmt: skip
        (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
        raise KeyboardInterrupt  # as the agent raises it once its summary is written

    monkeypatch.setattr(_demo, "WorkerSupervisor", Finishes)
    started = time.time()
    try:
        with caplog.at_level(logging.WARNING):
            summary = _demo.run_adaptive(
                load_profile("sim"), useq.MDASequence(time_plan={"interval": 1, "loops": 1}),
                out, acquire=acquire, watch_stalls=False,
            )  # fmt: skip
    finally:
        for sup in made:
            sup.stop_grace_s = 0.5
            sup.stop()
    assert summary["frames_acquired"] == 1
    assert (out / "summary.json").stat().st_mtime >= started - 2.0
    said_lines = [r.getMessage() for r in caplog.records if "interrupted" in r.getMessage()]
    assert len(said_lines) == 1, said_lines
    assert said in said_lines[0]
    assert not_said not in said_lines[0]
