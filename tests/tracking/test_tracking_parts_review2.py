"""Second review of the tracker's parts: object tables given to the tracker."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from livescope.schema import LivescopeError
from livescope.tracking import ObjectTable, OnlineTracker, measure_objects
from tests.tracking.test_tracker import disks


def _edge_division() -> list[np.ndarray]:
    """A cell at the top edge that divides at frame 5 into two daughters on the edge."""
    cells = [(2.0, 30.0, 6.0), (45.0, 45.0, 5.0)]
    daughters = [(2.0, 24.0, 4.5), (2.0, 36.0, 4.5), (45.0, 45.0, 5.0)]
    return [disks((64, 64), cells) for _ in range(5)] + [disks((64, 64), daughters)] * 3


def _track(tables: list[ObjectTable]) -> None:
    tr = OnlineTracker()
    for t in tables:
        tr.update(t)


def test_an_object_table_with_edge_flags_but_no_frame_shape_is_refused() -> None:
    """``on_border`` without ``shape`` (its default): every object on the edge was taken
    for a cell entering the field, so a division at the edge was never found, silently."""
    tables = [measure_objects(f) for f in _edge_division()]
    tr = OnlineTracker()
    found = [d for t in tables for d in tr.update(t).divisions]
    assert [len(d.daughters) for d in found] == [2]  # with the frame's shape
    tr = OnlineTracker()
    with pytest.raises(LivescopeError, match="on_border is given but the frame's shape is not"):
        tr.update(dataclasses.replace(tables[0], shape=(0, 0)))
    assert tr.frame == -1  # refused before anything changed
    no_edges = dataclasses.replace(tables[0], on_border=None, shape=(0, 0))
    assert len(tr.update(no_edges).track_ids) == 2  # neither known: no edge logic


def test_centroids_off_the_frame_are_refused() -> None:
    """Centroids given as (x, y) on a frame wider than high: the tracker measured their
    distance to the edge in the wrong axes, without a word."""
    lab = np.zeros((40, 100), np.int32)
    lab[18:23, 78:83] = 1  # centre (row 20, col 80)
    objs = measure_objects(lab)
    OnlineTracker().update(objs)
    swapped = dataclasses.replace(objs, centroids=objs.centroids[:, ::-1].copy())
    with pytest.raises(LivescopeError, match=r"centroid of label 1 is \[80\. 20\.\], outside"):
        OnlineTracker().update(swapped)


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param((64,), id="one-number"),
        pytest.param((0, 64), id="zero-rows"),
        pytest.param(None, id="none"),
    ],
)
def test_an_object_table_whose_frame_shape_is_no_shape_is_refused(shape: Any) -> None:
    """With edge flags, a shape of one number or None failed at the first object on the
    edge (IndexError, TypeError); one with 0 rows measured every cell off the edge."""
    tables = [dataclasses.replace(measure_objects(lab), shape=shape) for lab in _edge_division()]
    with pytest.raises(LivescopeError, match="is not the frame's \\(rows, cols\\)"):
        _track(tables)
    table = ObjectTable(np.array([1]), np.array([[10.0, 10.0]]), np.array([20.0]), shape=shape)
    with pytest.raises(LivescopeError, match="is not the frame's \\(rows, cols\\)"):
        OnlineTracker().update(table)  # (without edge flags too)
