"""``livescope engines list|check`` over every shipped engine (segmentation, stain, states)."""

from __future__ import annotations

import json

import pytest

from ..conftest import run_cli

SHIPPED = {"nuclei-unet": "segmentation", "nuclei-stain": "virtual_stain",
           "cell-state": "classification"}  # fmt: skip


def test_engines_list_shows_every_shipped_engine() -> None:
    p = run_cli("engines", "list", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert {e["name"]: e["task"] for e in out["engines"]} == SHIPPED


@pytest.mark.slow
def test_engines_check_runs_each_engine_on_its_own_kind_of_input() -> None:
    p = run_cli("engines", "check", "--json")
    out = json.loads(p.stdout)
    assert p.returncode == 0, p.stdout + p.stderr
    assert out["ok"] is True
    ran = {(r["engine"], r["backend"]) for r in out["results"] if r["status"] == "ok"}
    assert {(name, "onnxruntime") for name in SHIPPED} <= ran
    frame_engines = {n for n, task in SHIPPED.items() if task != "classification"}
    assert {(n, "onnxruntime (frame of any size)") for n in frame_engines} <= ran


def test_json_output_is_strict_json_even_with_nan(capsys: pytest.CaptureFixture[str]) -> None:
    from livescope.cli._common import emit

    emit({"pearson": float("nan"), "ms": [1.5, float("inf")], "nested": {"r": -float("inf")}})
    out = capsys.readouterr().out

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in JSON output")

    assert json.loads(out, parse_constant=refuse) == {
        "pearson": None, "ms": [1.5, None], "nested": {"r": None}
    }  # fmt: skip


def test_eval_stain_refuses_no_seeds_and_no_views() -> None:
    for args, message in ((("--simulated", ""), "names no seed"),
                          (("--simulated", "100", "--views", "0"), "--views")):  # fmt: skip
        p = run_cli("eval", "stain", "--engine", "nuclei-stain", *args, "--json")
        assert p.returncode == 2, p.stdout
        assert message in p.stdout + p.stderr


def test_usage_errors_with_json_still_print_one_json_object() -> None:
    for args, message in (
        (("eval", "seg", "--engine", "nuclei-unet"), "Missing option '--images'"),
        (("eval", "stain", "--engine", "nuclei-stain", "--views", "x"), "'--views'"),
        (("no-such-command",), "No such command"),
    ):
        p = run_cli(*args, "--json")
        assert p.returncode == 2, p.stdout + p.stderr
        out = json.loads(p.stdout)
        assert out["ok"] is False
        assert message in out["error"]
        assert message in p.stderr  # the usual usage message too
    ok = run_cli("engines", "list", "--json")
    assert ok.returncode == 0
    assert json.loads(ok.stdout)["engines"]


def test_engines_build_refuses_an_unknown_precision_on_every_path() -> None:
    # the ahead-of-time build takes no precision of its own: it is checked all the same
    for extra in ((), ("--backend", "tensorrt-rtx", "--compute-capability", "SM89")):
        res = run_cli("engines", "build", "nuclei-unet", "--precision", "fp64", *extra, "--json")
        assert res.returncode == 2, res.stderr
        assert json.loads(res.stdout)["error"] == (
            "engine nuclei-unet: precision must be fp32 or fp16, not 'fp64'"
        )
