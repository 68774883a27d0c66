"""Review fixes: label-free channels in the viewer, its binning scale, a report plot
with a time missing, and cell-state classes that clash with cells.csv's own columns.

The viewer's choices are tested through its pure functions: no window is opened.
"""

from __future__ import annotations

import collections
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livescope.inference import CellStates
from livescope.pipeline._analyzer import FrameResult
from livescope.pipeline._jobs import Field
from livescope.pipeline._results import ResultsStore
from livescope.policy import Cells, Observation
from livescope.schema import LivescopeError, builtin_profile_path
from livescope.view import _report_plots as plots
from livescope.view import _viewer

# ------------------------------------------------------------ label-free channels


@pytest.mark.parametrize(
    ("channel", "free"),
    [("Ph1", True), ("Ph2", True), ("PH3", True), ("TL", True), ("TL-BF", True),
     ("Transmission", True), ("Trans", True), ("DIC", True), ("BF", True),
     ("Brightfield", True), ("Phase", True), ("Phase2", True), ("Phase Contrast", True),
     ("DAPI", False), ("GFP", False), ("mCherry", False), ("Cy5", False),
     ("H2B-mCherry", False), ("Hoechst 33342", False), ("SiR-DNA", False)],
)  # fmt: skip
def test_common_label_free_channel_names_are_told_label_free(channel: str, free: bool) -> None:
    # Ph1-3 (Nikon's phase rings), TL and Transmission were drawn green, additive,
    # over the nuclear channel
    assert _viewer.channel_is_label_free(channel) is free


def _run_with_profile(tmp_path: Path, renames: dict[str, str]) -> Path:
    """A run folder whose profile.yaml is the shipped sim one, its channels renamed."""
    text = builtin_profile_path("sim").read_text(encoding="utf-8")
    for old, new in renames.items():
        assert f"{{name: {old}," in text
        text = text.replace(f"{{name: {old},", f"{{name: {new},")
    run = tmp_path / "run"
    run.mkdir()
    (run / "profile.yaml").write_text(text, encoding="utf-8")
    return run


def test_the_runs_profile_says_which_channels_are_label_free(tmp_path: Path) -> None:
    """The pipeline goes by the profile's ``kind``: so does the viewer, whatever the names."""
    # a label-free channel whose name says nothing, a fluorescence one whose name says phase
    run = _run_with_profile(tmp_path, {"Phase": "Ring2", "DAPI": "Phase-dye"})
    kinds = _viewer.run_channel_kinds(run)
    assert kinds == {"Ring2": "label_free", "Phase-dye": "fluorescence"}
    assert _viewer.run_channel_kinds(run / "overlay.json") == kinds  # (its overlay.json)
    assert _viewer.channel_is_label_free("Ring2", kinds)
    assert not _viewer.channel_is_label_free("Phase-dye", kinds)
    assert _viewer.channel_is_label_free("Ph3", kinds)  # not in the profile: by its name
    # no labels: the segmented (fluorescence) frame's grid, not the label-free one's
    arrays = {"raw:Ring2": np.zeros((64, 64), np.uint16), "raw:Phase-dye": np.zeros((32, 32))}
    assert _viewer._labels_grid(arrays, kinds) == (32, 32)


@pytest.mark.parametrize(
    "source",
    [pytest.param("ipc:///tmp/nothing", id="endpoint"), pytest.param("", id="no-profile"),
     pytest.param("damaged", id="damaged-profile")],
)  # fmt: skip
def test_without_a_readable_profile_channels_are_told_by_name(
    tmp_path: Path, source: str, caplog: pytest.LogCaptureFixture
) -> None:
    where: str | Path = source
    if source in ("", "damaged"):
        where = tmp_path
        if source == "damaged":
            (tmp_path / "profile.yaml").write_text("channels: [", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="livescope"):
        assert _viewer.run_channel_kinds(where) == {}
    assert ("profile.yaml" in caplog.text) is (source == "damaged")


def test_a_phase_ring_channel_is_not_taken_for_the_segmented_grid() -> None:
    """No labels in a field: the grid is the nuclear frame's, binned 2x, not Ph2's."""
    arrays = {"raw:Ph2": np.zeros((512, 512), np.uint16), "raw:DAPI": np.zeros((256, 256))}
    assert _viewer._labels_grid(arrays) == (256, 256)


# ------------------------------------------------------------ binning


@pytest.mark.parametrize(
    ("grid", "shape", "scale"),
    [pytest.param(512, 170, 3.0, id="3x-with-a-remainder"),
     pytest.param(512, 256, 2.0, id="2x"),
     pytest.param(170, 512, 1 / 3, id="labels-binned-3x"),
     pytest.param(64, 64, 1.0, id="same")],
)  # fmt: skip
def test_a_binned_frame_is_scaled_by_the_whole_binning_factor(
    grid: int, shape: int, scale: float
) -> None:
    got = _viewer._binning_scale((grid, grid), (shape, shape))
    assert got is not None
    assert got == pytest.approx((scale, scale), abs=1e-12)


def test_a_3x_binned_frames_far_pixel_lies_over_the_pixels_it_bins() -> None:
    """512 px binned 3x gives 170 px: the last one's centre is sensor pixel 508, not 510."""
    s = _viewer._binning_scale((512, 512), (170, 170))
    assert s is not None
    for i in (0, 85, 169):
        drawn = i * s[0] + (s[0] - 1) / 2  # (the viewer's scale and translate)
        assert drawn == pytest.approx(3 * i + 1, abs=1e-9)


# ------------------------------------------------------------ report: cells over time


def _figure_of(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    drawn: list[Any] = []
    real = plots._png

    def keep(fig: Any) -> bytes:
        drawn.append(fig)
        return real(fig)

    monkeypatch.setattr(plots, "_png", keep)
    return drawn


def test_one_time_point_without_a_time_leaves_the_plot_drawn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn = _figure_of(monkeypatch)
    png = plots.cells_over_time(
        [0, 120, math.nan, 360], [5, 6, 7, 8], {"interphase": [1, 1, 1, 1]},
        position="p0", unit=("min", 60.0),
    )  # fmt: skip
    assert png.startswith(b"\x89PNG")
    ax_n, ax_f = drawn[0].axes[:2]
    assert ax_f.get_xlim() == pytest.approx((0.0, 6.0))
    assert list(ax_n.lines[0].get_xdata()) == [0.0, 2.0, 6.0]  # (the one without, left out)
    assert "1 time point with no time" in ax_n.get_xlabel()


def test_no_time_point_with_a_time_draws_an_empty_plot(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = _figure_of(monkeypatch)
    png = plots.cells_over_time(
        [math.nan, math.inf], [5, 6], {"interphase": [1, 1]}, position="p0", unit=("s", 1.0)
    )
    assert png.startswith(b"\x89PNG")
    assert "2 time points with no time" in drawn[0].axes[0].get_xlabel()


def test_times_all_known_say_nothing_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = _figure_of(monkeypatch)
    plots.cells_over_time([0, 60], [5, 6], {}, position="p0", unit=("min", 60.0))
    assert drawn[0].axes[0].get_xlabel() == "sample time (min)"


# ------------------------------------------------------------ cells.csv's state columns


def _field(classes: tuple[str, ...]) -> tuple[Field, FrameResult, Observation]:
    probs = np.full((2, len(classes)), 1 / len(classes), np.float32)
    st = CellStates(np.array([1, 2]), probs, classes, 0.0)
    cells = Cells(labels=np.array([1, 2]), tracks=np.array([1, 2]), parents=np.zeros(2, int),
                  age=np.zeros(2, int), y=np.array([10.0, 20.0]), x=np.array([30.0, 40.0]),
                  area=np.array([100.0, 120.0]), intensity=np.array([5.0, 6.0]),
                  stain=np.full(2, np.nan), p_mitosis=st.p_mitosis.astype(float),
                  state=(classes[0], classes[0]))  # fmt: skip
    obs = Observation(run_id="r", seq=1, position="p0", t=0, sample_time_s=0.0,
                      pixel_size_um=1.0, shape=(64, 64), cells=cells)  # fmt: skip
    return Field("p0", 0, {}, {"seq": 1}, 0), FrameResult("p0", 0, states=st), obs


def test_a_class_named_like_a_fixed_column_is_refused_naming_engine_and_class(
    tmp_path: Path,
) -> None:
    """A class ``mitosis`` made cells.csv's p_mitosis twice; readers took the class's."""
    classes = ("interphase", "mitosis", "apoptotic")
    with pytest.raises(LivescopeError, match=r"'my-states'.*'mitosis'.*p_mitosis"):
        ResultsStore(tmp_path, collections.Counter(), tail_frames=3, class_cols=classes,
                     states_engine="my-states")  # fmt: skip
    assert not (tmp_path / "cells.csv").exists()


def test_classes_learned_from_the_first_field_are_checked_too(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, collections.Counter(), tail_frames=3)
    try:
        with pytest.raises(LivescopeError, match="'mitosis'"):
            store.store(*_field(("interphase", "mitosis", "prophase")))
    finally:
        store.close(header=False)
    assert (tmp_path / "cells.csv").read_text(encoding="utf-8").count("p_mitosis") <= 1


def test_a_classifier_without_mitotic_classes_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``mitotic`` is no class that P(mitosis) sums: it would be 0 for every cell, silently."""
    classes = ("interphase", "mitotic")
    with caplog.at_level(logging.WARNING, logger="livescope"):
        store = ResultsStore(tmp_path, collections.Counter(), tail_frames=3, class_cols=classes)
        store.store(*_field(classes))
        store.store(*_field(classes))
        store.close()
    said = [r for r in caplog.records if "none of the mitotic classes" in r.getMessage()]
    assert len(said) == 1
    assert "P(mitosis)" in said[0].getMessage()
    assert "interphase, mitotic" in said[0].getMessage()  # (its classes, named)
    header = (tmp_path / "cells.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header.count("p_mitosis") == 1


def test_a_classifier_with_mitotic_classes_is_not_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    classes = ("interphase", "prophase", "metaphase", "anaphase", "apoptotic")
    with caplog.at_level(logging.WARNING, logger="livescope"):
        store = ResultsStore(tmp_path, collections.Counter(), tail_frames=3, class_cols=classes)
        store.store(*_field(classes))
        store.close()
    assert "mitotic classes" not in caplog.text
