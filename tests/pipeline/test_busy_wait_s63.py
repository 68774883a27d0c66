"""A field queued behind many earlier fields counts all their engine time as its wait.

With the engines' last 32 spans alone, a field behind more than 32 fields (a worker
~40 s behind in a 150-time-point demo) had the rest of its wait counted as pipeline
overhead: seconds of it, in the p99 that issue 7 holds to 5 ms.
"""

from __future__ import annotations

from pathlib import Path

from livescope.pipeline import PipelineWorker
from livescope.pipeline._jobs import overlap_ns
from tests.pipeline.test_worker_results import NO_ENGINES

S = 1_000_000_000


def test_the_engines_time_behind_forty_fields_is_all_counted(tmp_path: Path) -> None:
    w = PipelineWorker(tmp_path, NO_ENGINES)
    try:
        t0 = 10**15
        for k in range(40):  # 40 earlier fields, 1 s of engines each, back to back
            w._engine_spans.append((t0 + k * S, t0 + (k + 1) * S))
        assert overlap_ns(w._engine_spans, t0, t0 + 40 * S) == 40 * S
        assert w._busy_since(t0, t0 + 40 * S) == 40 * S
    finally:
        w._finish(failed=True)


def test_spans_long_before_the_newest_fields_are_let_go(tmp_path: Path) -> None:
    from livescope.pipeline._worker import SPAN_HORIZON_NS

    w = PipelineWorker(tmp_path, NO_ENGINES)
    try:
        t0 = 10**15
        w._engine_spans.extend([(t0, t0 + S), (t0 + 100 * S, t0 + 101 * S)])
        since = t0 + 100 * S
        assert w._busy_since(since, since + 2 * S) == S
        # (the first ended more than the horizon before this field's frames)
        assert list(w._engine_spans) == [(t0 + 100 * S, t0 + 101 * S)]
        assert since - (t0 + S) > SPAN_HORIZON_NS
    finally:
        w._finish(failed=True)


def test_a_field_read_back_from_the_recording_lets_no_span_go(tmp_path: Path) -> None:
    # (a field caught up from the recording counts from its read time, now: pruning by it
    # dropped the spans the live field analysed next, taken 90 s ago, still waited behind)
    w = PipelineWorker(tmp_path, NO_ENGINES)
    try:
        t0 = 10**15
        w._engine_spans.extend((t0 + k * 15 * S, t0 + (k * 15 + 15) * S) for k in range(3))
        now = t0 + 90 * S
        w._busy_since(now, now + S, prune=False)  # the field read back
        live = t0  # the live field's frames, taken 90 s before now
        assert w._busy_since(live, now) == 45 * S
    finally:
        w._finish(failed=True)


def test_an_earlier_runs_results_are_refused_before_anything_is_recorded(tmp_path: Path) -> None:
    # (run and demo: the first worker refused them once the acquisition was going, and the
    # new recording then blocked the next try)
    import pytest
    import useq

    from livescope.pipeline import run_adaptive
    from livescope.schema import LivescopeError, load_profile

    out = tmp_path / "run"
    (out / "results").mkdir(parents=True)
    (out / "results" / "latency.jsonl").write_text('{"position": "p0", "t": 0}\n')
    seq = useq.MDASequence(channels=["DAPI"], time_plan={"interval": 1, "loops": 1})
    with pytest.raises(LivescopeError, match="already exists; choose a new output folder"):
        run_adaptive(load_profile("sim"), seq, out)
    assert sorted(p.name for p in out.iterdir()) == ["results"]
