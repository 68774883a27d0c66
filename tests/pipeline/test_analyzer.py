"""One pass per field: labels, tracks, a virtual stain and cell states (real engines)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from livescope.pipeline import FrameAnalyzer
from livescope.schema import LivescopeError, load_profile
from livescope.scope import SimulatedMicroscope


def _time_lapse(n: int, seed: int = 5) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """(phase, DAPI, pixel size) at one position, every 3 sample-minutes, 20x."""
    out = []
    with SimulatedMicroscope(load_profile("sim"), seed=seed) as sim:
        core = sim.core
        core.setConfig("Objective", "20x")
        core.setShutterOpen(True)
        core.setXYPosition(150.0, -80.0)
        for k in range(n):
            frames = []
            for channel in ("Phase", "DAPI"):
                core.setConfig("Channel", channel)
                sim.set_time(600.0 + 180.0 * k)
                core.snapImage()
                frames.append(np.asarray(core.getImage()).copy())
            out.append((frames[0], frames[1], core.getPixelSizeUm()))
    return out


@pytest.fixture(scope="module")
def frames() -> list[tuple[np.ndarray, np.ndarray, float]]:
    return _time_lapse(4)


def test_one_pass_yields_labels_tracks_stain_and_states(frames) -> None:  # type: ignore[no-untyped-def]
    with FrameAnalyzer(
        stain="nuclei-stain", states="cell-state", backend="onnxruntime", nucleus_diameter_um=12
    ) as fa:
        results = [
            fa.analyse(fluorescence=dapi, label_free=phase, pixel_size_um=px)
            for phase, dapi, px in frames
        ]
        # the engines a decision on the field records: the stain only when the policies
        # read it (here the DAPI frame was segmented: the stain is the overlay's)
        used = fa.engines_used(results[0])
        assert set(used) == {"nuclei-stain", "nuclei-unet", "cell-state"}
        assert all(len(h) == 64 for h in used.values())
        assert set(fa.engines_used(results[0], stain_decides=False)) == {
            "nuclei-unet", "cell-state"
        }  # fmt: skip
    for r in results:
        assert r.labels is not None
        assert r.stain is not None
        assert r.states is not None
        assert r.tracks is not None
        assert r.nuclear_source == "fluorescence"
        assert r.stain.shape == r.labels.shape == frames[0][0].shape
        assert set(r.ms) == {"stain", "segment", "track", "states"}
        assert r.states.ids.tolist() == sorted(set(np.unique(r.labels).tolist()) - {0})
        rows = r.cell_table()
        assert len(rows) == r.labels.max() > 3
        assert all(row["track"] > 0 and "p_mitosis" in row for row in rows)
    # the same nuclei keep their track ids from one time point to the next
    first = {row["track"] for row in results[0].cell_table()}
    last = {row["track"] for row in results[-1].cell_table()}
    assert len(first & last) >= 0.6 * len(first)


def test_label_free_only_segments_the_virtual_stain(frames) -> None:  # type: ignore[no-untyped-def]
    phase, _, px = frames[0]
    with FrameAnalyzer(
        stain="nuclei-stain", states="cell-state", backend="onnxruntime", nucleus_diameter_um=12
    ) as fa:
        r = fa.analyse(label_free=phase, pixel_size_um=px)
        assert r.nuclear_source == "virtual_stain"
        # what was segmented: its engine is recorded whatever the policies read
        assert "nuclei-stain" in fa.engines_used(r, stain_decides=False)
        assert r.labels is not None
        assert r.labels.max() > 3
        blank = fa.analyse(label_free=np.full_like(phase, 90), position="empty", pixel_size_um=px)
        # lamp off: the camera's offset and read noise only; its stain is dim noise, which
        # must not be stretched to full range and segmented into phantom (mitotic) cells
        noise = np.random.default_rng(1).normal(100.0, 1.5, phase.shape)
        dark = fa.analyse(label_free=noise.round().astype(phase.dtype), position="dark",
                          pixel_size_um=px)  # fmt: skip
    assert dark.stain is not None
    assert dark.stain.max() < 0.2  # in the target's units: no nucleus' worth of stain
    assert dark.labels is not None
    assert dark.labels.max() == 0
    assert blank.labels is not None
    assert not blank.labels.any()
    assert blank.cell_table() == []
    assert blank.states is not None
    assert len(blank.states) == 0


def test_analyzer_refuses_impossible_plans() -> None:
    with pytest.raises(LivescopeError, match="cell-state stage needs a segmentation engine"):
        FrameAnalyzer(segmenter=None, states="cell-state")
    with FrameAnalyzer(backend="onnxruntime") as fa, pytest.raises(LivescopeError, match="needs"):
        fa.analyse()


def _counted(calls: list[str], name: str, real: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return real(*args, **kwargs)

    return call


def test_a_warm_up_runs_every_engine_and_leaves_no_trace(frames) -> None:  # type: ignore[no-untyped-def]
    phase, dapi, px = frames[0]
    kw = {"stain": "nuclei-stain", "states": "cell-state", "backend": "onnxruntime",
          "nucleus_diameter_um": 12}  # fmt: skip
    with FrameAnalyzer(**kw) as cold:  # type: ignore[arg-type]
        expected = cold.analyse(fluorescence=dapi, label_free=phase, pixel_size_um=px)
    with FrameAnalyzer(**kw) as fa:  # type: ignore[arg-type]
        calls: list[str] = []
        for engine, method in ((fa.stain, "predict"), (fa.states, "classify")):
            setattr(engine, method, _counted(calls, method, getattr(engine, method)))
        seconds = fa.warm_up(phase.shape, px)
        assert seconds > 0
        assert calls == ["predict", "classify"]  # every engine ran, the classifier on cells
        assert fa.trackers == {}  # no position, no track
        got = fa.analyse(fluorescence=dapi, label_free=phase, pixel_size_um=px)
    assert got.frame == expected.frame == 0
    np.testing.assert_array_equal(got.labels, expected.labels)
    np.testing.assert_array_equal(got.states.probs, expected.states.probs)  # type: ignore[union-attr]
    assert [r["track"] for r in got.cell_table()] == [r["track"] for r in expected.cell_table()]


def test_the_run_loads_one_segmentation_engine_for_its_pixel_size(frames) -> None:  # type: ignore[no-untyped-def]
    # the engines' hashes are asked for before any frame: they must not load an engine
    # of their own beside the one the frames' pixel size needs
    phase, dapi, px = frames[0]
    with FrameAnalyzer(backend="onnxruntime", nucleus_diameter_um=12) as fa:
        hashes = fa.engine_hashes()
        assert fa.engine_runtimes() == {}  # nothing loaded yet
        fa.warm_up(phase.shape, px)
        fa.analyse(fluorescence=dapi, pixel_size_um=px)
        (seg,) = fa._segmenters.values()
        assert hashes == {"nuclei-unet": seg.card.sha256} == fa.engine_hashes()
        assert fa.engine_runtimes()["nuclei-unet"]["backend"] == "onnxruntime"
