"""`livescope bench jitter`: wake-up lateness, idle and beside busy processes."""

from __future__ import annotations

import json
import sys

import pytest

from livescope.bus import JITTER_ROUNDS, bench_jitter
from livescope.schema import LivescopeError
from tests.conftest import run_cli


def test_stalls_are_counted_per_second_over_each_threshold() -> None:
    from livescope.bus._jitter import _summary

    late_ns = [0, 500_000, 1_500_000, 2_500_000, 6_000_000]
    out = _summary(late_ns, seconds=2.0)
    assert out["wakeups"] == 5
    assert out["stalls_per_s"] == {"over_1ms": 1.5, "over_2ms": 1.0, "over_5ms": 0.5}
    assert out["late_ms"]["max"] == 6.0
    assert out["late_ms"]["p50"] == 1.5


def test_bench_jitter_cli_runs_every_round_side_by_side() -> None:
    res = run_cli(
        "bench", "jitter", "--seconds", "0.5", "--period-ms", "5", "--busy", "1", "--turns", "2"
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["bench"] == "jitter"  # (as every benchmark names itself)
    assert (out["seconds"], out["turns"]) == (0.5, 2)
    assert list(out["rounds"]) == list(JITTER_ROUNDS)
    for name, r in out["rounds"].items():
        # ~100 sleeps of 5 ms in 2 turns of 0.25 s; a wake-up is never early
        assert 20 <= r["wakeups"] <= 101, (name, r)
        assert 0 <= r["late_ms"]["p50"] <= r["late_ms"]["p99"] <= r["late_ms"]["max"]
        if JITTER_ROUNDS[name] is None:
            assert "busy_processes" not in r
        else:
            assert r["busy_processes"] == 1
            assert r["busy_passes_per_s"] > 0  # the load did run
            if JITTER_ROUNDS[name] == "normal":
                assert "lowered" not in r
            else:
                assert r["lowered"] is sys.platform.startswith("linux")
    idle, bulk = out["rounds"]["idle"], out["rounds"]["bulk"]
    a, b = bulk["late_ms"]["p999"], idle["late_ms"]["p999"]
    if b > 0:
        # (the ratio is of the unrounded figures: the printed ones are rounded to 0.1 µs,
        # which moves their ratio by up to its share of each, e.g. 0.02 for 21.67 from
        # 0.06 ms; the ratio itself is rounded to 0.001)
        slack = a / b * (5e-5 / b + 5e-5 / max(a, 5e-5)) + 5e-4
        assert out["ratios"]["bulk_vs_idle_p999"] == pytest.approx(a / b, abs=slack + 1e-9)
    assert set(out["ratios"]) == {
        f"{a}_vs_{b}_{k}"
        for a, b in [("bulk", "idle"), ("bulk_nice", "idle"), ("bulk_idle_class", "idle"),
                     ("bulk_idle_class", "bulk")]
        for k in ("p999", "stalls_over_2ms")
    }  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        pytest.param({"seconds": 0.0}, "seconds", id="no-time"),
        pytest.param({"period_ms": 0.001}, "period_ms", id="period-too-short"),
        pytest.param({"busy": 0}, "busy", id="no-busy-process"),
        pytest.param({"turns": 0}, "turns", id="no-turn"),
    ],
)
def test_bench_jitter_refuses_bad_arguments(kwargs: dict[str, float], named: str) -> None:
    with pytest.raises(LivescopeError, match=named):
        bench_jitter(**kwargs)  # type: ignore[arg-type]


def test_bench_jitter_refuses_a_bad_priority_setting_before_starting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIVESCOPE_BULK_PRIORITY", "bogus")
    res = run_cli("bench", "jitter", "--seconds", "0.5", "--turns", "1")
    assert res.returncode == 2, res.stderr
    assert "LIVESCOPE_BULK_PRIORITY" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_child_process_that_dies_or_hangs_is_a_clear_error() -> None:
    import multiprocessing as mp

    from livescope.bus._jitter import _child_answer

    parent, child = mp.Pipe()
    child.close()  # what a dead child leaves
    with pytest.raises(LivescopeError, match="the probe ended without answering"):
        _child_answer(parent, 5, "the probe")
    parent, child = mp.Pipe()
    with pytest.raises(LivescopeError, match="the probe did not answer within 0 s"):
        _child_answer(parent, 0.05, "the probe")
    child.send("ok")
    assert _child_answer(parent, 5, "the probe") == "ok"
