"""eval stain / eval states --simulated with options that only their file inputs use."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (
            [
                "stain",
                "--engine",
                "nuclei-stain",
                "--simulated",
                "100",
                "--views",
                "1",
                "--crop",
                "0:3,0:3",
            ],
            "--crop",
        ),
        (
            [
                "stain",
                "--engine",
                "nuclei-stain",
                "--simulated",
                "100",
                "--views",
                "1",
                "--pixel-size",
                "100",
            ],
            "--pixel-size",
        ),
        (
            [
                "states",
                "--engine",
                "cell-state",
                "--simulated",
                "100",
                "--views",
                "1",
                "--pixel-size",
                "100",
            ],
            "--pixel-size",
        ),
    ],
)
def test_an_option_the_simulated_scoring_leaves_out_is_refused(args: list[str], named: str) -> None:
    # (they were checked, then left out: rc 0 and whole frames scored at each view's size)
    res = run_cli("eval", *args, "--json")
    assert res.returncode == 2, res.stdout
    out = json.loads(res.stdout)
    assert out["ok"] is False
    assert out["error"].startswith(f"{named}: only with --")
