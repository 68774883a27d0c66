"""``bench engines``' rows: a backend that fails, one that cannot run, and the warm-up.

Nothing here is timed: the backends and engines are stand-ins (no inference, tiny
frames), so that only the benchmark's loop and the JSON it prints are checked.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import typer

import livescope.inference
import livescope.scope
from livescope.cli._engines import _bench_stain, _bench_states, bench_engines
from livescope.inference import EngineError
from livescope.inference._backend_base import BackendRunError

COLD_MS = 500.0
"""What a stand-in engine's first call at a frame shape reports (first-call costs)."""
WARM_MS = 2.0


def _backends(*status: tuple[str, bool, str]) -> Any:
    return lambda: [(SimpleNamespace(name=name), ok, why) for name, ok, why in status]


class _Engine:
    """Stand-in engine: fails to build on ``build_fails``, to run on ``run_fails`` at
    frames of ``fails_at`` px; a first call at a shape is slow, as a real engine's."""

    build_fails: tuple[str, ...] = ()
    run_fails: tuple[str, ...] = ()
    fails_at = 0

    def __init__(self, name: str, *, backend: Any) -> None:
        if backend.name in self.build_fails:
            raise EngineError(f"engine {name}: simulated: {backend.name} out of GPU memory")
        self.backend = backend
        self.seen: set[tuple[int, ...]] = set()

    def __enter__(self) -> _Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def warmup(self, shape: tuple[int, int] = (512, 512)) -> None:
        """The engine alone: the post-processing's first-call costs are still to come."""

    def _ms(self, frame: Any) -> float:
        if self.backend.name in self.run_fails and frame.shape[-1] == self.fails_at:
            raise BackendRunError(f"simulated: {self.backend.name} ran out of memory")
        cold = frame.shape not in self.seen
        self.seen.add(frame.shape)
        return COLD_MS if cold else WARM_MS

    def segment(self, frame: Any) -> Any:
        ms = self._ms(frame)
        labels = np.zeros(frame.shape, np.int32)
        return SimpleNamespace(ms_engine=WARM_MS, ms_post=ms, labels=labels)

    def predict(self, frame: Any) -> Any:
        return SimpleNamespace(ms=self._ms(frame))

    def classify(self, frame: Any, labels: Any) -> None:
        self._ms(frame)
        calls.append(int(labels.max()))


calls: list[int] = []
"""Cells in each frame the stand-in classifier was called on."""


def _small(size: int) -> int:
    return size // 64  # 512² -> 8², 1024² -> 16², 2048² -> 32²: one shape per size


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> type[_Engine]:
    """Stand-in backends, engines and tiny simulated frames, for `bench_engines`."""

    def frames(n: int, *, size: int, seed: int) -> list[tuple[Any, Any]]:
        side = _small(size)
        return [(np.full((side, side), 100, np.uint16), np.zeros((side, side), np.int32))] * n

    def views(n: int, *, seed: int, size: int, objectives: tuple[str, ...]) -> list[Any]:
        return [SimpleNamespace(phase=np.zeros((_small(size),) * 2, np.float32))] * n

    class Engine(_Engine):
        pass

    calls.clear()
    for cls in ("SegmentationEngine", "StainEngine", "CellStateEngine"):
        monkeypatch.setattr(livescope.inference, cls, Engine)
    monkeypatch.setattr(livescope.inference, "classical_segmentation",
                        lambda f: np.zeros(f.shape, np.int32))  # fmt: skip
    monkeypatch.setattr(livescope.scope, "simulated_frames", frames)
    monkeypatch.setattr(livescope.scope, "simulated_views", views)
    monkeypatch.setattr(livescope.inference, "backend_status", _backends(
        ("tensorrt", False, "tensorrt is not installed"),
        ("tensorrt-rtx", True, "GPU"), ("torch", True, "cpu"),
        ("onnxruntime", True, "CPUExecutionProvider"),
    ))  # fmt: skip
    return Engine


def _rows(rows: list[dict[str, Any]], backend: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["backend"] == backend]


def test_a_backend_that_fails_to_build_or_run_the_engine_is_a_row_and_the_others_are_timed(
    stand_ins: type[_Engine], capsys: pytest.CaptureFixture[str]
) -> None:
    # (a TensorRT build out of GPU memory stopped the whole benchmark, exit 2: the other
    # backends' results were lost)
    stand_ins.build_fails = ("tensorrt-rtx",)
    stand_ins.run_fails, stand_ins.fails_at = ("torch",), _small(2048)
    with pytest.raises(typer.Exit) as info:
        bench_engines(json_out=True, repeats=1, stain=None, states=None)
    assert info.value.exit_code == 1  # (as `engines check`: a check that failed)
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["ok"] is False
    rows = out["results"]
    assert _rows(rows, "tensorrt") == [
        {"backend": "tensorrt", "available": False, "detail": "tensorrt is not installed"}
    ]
    [rtx] = _rows(rows, "tensorrt-rtx")
    assert rtx == {"backend": "tensorrt-rtx", "available": True, "error": rtx["error"]}
    assert "tensorrt-rtx out of GPU memory" in rtx["error"]
    torch = _rows(rows, "torch")  # (the sizes timed before it failed are kept)
    assert [r.get("size") for r in torch] == [512, 1024, None]
    assert torch[-1] == {"backend": "torch", "available": True, "error": torch[-1]["error"]}
    assert "torch ran out of memory" in torch[-1]["error"]
    assert [r["size"] for r in _rows(rows, "onnxruntime")] == [512, 1024, 2048]
    assert out["post_share_1024_cpu"] is not None
    assert "failed: nuclei-unet / tensorrt-rtx, nuclei-unet / torch (exit 1)" in captured.err


def test_every_size_is_warmed_with_post_processing_before_it_is_timed(
    stand_ins: type[_Engine], capsys: pytest.CaptureFixture[str]
) -> None:
    # (the warm-up ran the engine alone at 512²: the first post-processing, scikit-image's
    # import included, was timed in the first backend's 512² ms_post)
    bench_engines(json_out=True, repeats=1, stain="nuclei-stain", states="cell-state")
    out = json.loads(capsys.readouterr().out)
    timed = [r for r in out["results"] + out["stain"] if "size" in r and "device" in r]
    assert len(timed) == 2 * 3 * 3  # seg and stain: 3 backends, 3 sizes
    assert {r.get("ms_post", r["ms_total"]) for r in timed} == {WARM_MS}
    assert calls == [100, 100, 1000, 1000] * 3  # each cell count: a call before the timed one
    assert out["ok"] is True  # (and exit 0: nothing failed)


BENCHES = [
    pytest.param(_bench_stain, "nuclei-stain", 3, id="stain"),  # 3 sizes
    pytest.param(_bench_states, "cell-state", 2, id="states"),  # 100 and 1,000 cells
]


@pytest.mark.parametrize(("bench", "name", "n_rows"), BENCHES)
def test_stain_and_states_say_which_backends_cannot_run(
    stand_ins: type[_Engine], bench: Any, name: str, n_rows: int
) -> None:
    # (left out without a word, where the segmentation rows said why)
    rows = bench(name, 1)
    assert rows[0] == {"engine": name, "backend": "tensorrt", "available": False,
                       "detail": "tensorrt is not installed"}  # fmt: skip
    backends = ("tensorrt-rtx", "torch", "onnxruntime")
    assert [r["backend"] for r in rows[1:]] == [b for b in backends for _ in range(n_rows)]


@pytest.mark.parametrize(("bench", "name", "n_rows"), BENCHES)
def test_stain_and_states_go_on_past_a_backend_that_fails_to_build_the_engine(
    stand_ins: type[_Engine], bench: Any, name: str, n_rows: int
) -> None:
    stand_ins.build_fails = ("torch",)
    rows = bench(name, 1)
    [torch] = _rows(rows, "torch")
    assert torch == {"engine": name, "backend": "torch", "available": True,
                     "error": torch["error"]}  # fmt: skip
    assert "torch out of GPU memory" in torch["error"]
    assert len(_rows(rows, "onnxruntime")) == len(_rows(rows, "tensorrt-rtx")) == n_rows
