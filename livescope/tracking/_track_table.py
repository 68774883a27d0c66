"""The tracker's live tracks as a table of columns (`TrackTable`), for vectorised linking."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livescope.schema import LivescopeError

__all__ = ["TrackTable", "row_median"]


def row_median(areas: NDArray[np.float64]) -> NDArray[np.float64]:
    """Median of each row, ignoring NaN (every row has at least one number)."""
    s = np.sort(areas, axis=1)  # NaN sorts last
    n = np.count_nonzero(~np.isnan(areas), axis=1)
    i = np.arange(len(s))
    med: NDArray[np.float64] = (s[i, (n - 1) // 2] + s[i, n // 2]) / 2
    return med


class TrackTable:
    """The live tracks (not divided, seen within ``max_gap`` frames), one row each, oldest first.

    Columns are arrays, so a frame's linking and bookkeeping are vectorised over all
    tracks. Each row keeps its recent positions and areas right-aligned in ``hist``
    columns (frame -1 / NaN where empty), the newest ``keep`` of them (a daughter that
    takes over its parent's last frames after a late split gets fewer than that).
    """

    COLUMNS = ("id", "last_seen", "seen", "vel", "border", "ended", "hf", "hp", "ha", "med")

    def __init__(self, hist: int) -> None:
        self.hist = hist
        self.id = np.zeros(0, np.int64)
        self.last_seen = np.zeros(0, np.int64)
        self.seen = np.zeros(0, np.int64)
        self.vel = np.zeros((0, 2))
        self.border = np.zeros(0, bool)
        self.ended = np.zeros(0, bool)
        self.hf = np.zeros((0, hist), np.int64)  # frames of the recent positions
        self.hp = np.zeros((0, hist, 2))  # recent positions (row, col)
        self.ha = np.zeros((0, hist))  # recent areas
        self.med = np.zeros(0)  # median of the recent areas

    def __len__(self) -> int:
        return int(self.id.size)

    def take(self, keep: NDArray[np.bool_]) -> None:
        for c in self.COLUMNS:
            setattr(self, c, getattr(self, c)[keep])

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Add tracks at the end.

        Each is a dict with id, last_seen, seen, border, optionally vel,
        and its history as lists ``frames``, ``pos``, ``areas`` (oldest first).
        """
        if not rows:
            return
        n, k = len(rows), self.hist
        hf, hp, ha = np.full((n, k), -1, np.int64), np.zeros((n, k, 2)), np.full((n, k), np.nan)
        for r, row in enumerate(rows):
            m = min(len(row["frames"]), k)
            hf[r, k - m :] = row["frames"][-m:]
            hp[r, k - m :] = row["pos"][-m:]
            ha[r, k - m :] = row["areas"][-m:]
        new = {
            "id": np.array([r["id"] for r in rows], np.int64),
            "last_seen": np.array([r["last_seen"] for r in rows], np.int64),
            "seen": np.array([r["seen"] for r in rows], np.int64),
            "vel": np.array([r.get("vel", (0.0, 0.0)) for r in rows], np.float64),
            "border": np.array([r["border"] for r in rows], bool),
            "ended": np.zeros(n, bool),
            "hf": hf, "hp": hp, "ha": ha, "med": row_median(ha),
        }  # fmt: skip
        for c in self.COLUMNS:
            setattr(self, c, np.concatenate([getattr(self, c), new[c]]))

    def recent(self, k: int, first: int, t: int) -> list[tuple[int, float, float]]:
        """Row ``k``'s (frame, row, col) in frames ``first..t-1`` (``first`` >= 0), oldest first."""
        f = self.hf[k]
        keep = (f >= first) & (f < t)
        return [(int(a), float(y), float(x)) for a, (y, x) in zip(f[keep], self.hp[k][keep],
                                                                   strict=True)]  # fmt: skip

    def saved_columns(self) -> dict[str, NDArray[Any]]:
        """Return copies of the columns a saved state keeps (`load_columns` reads them back).

        Empty history slots hold frame -1 and area 0. Divided tracks are never in
        it between frames, so nothing says which track ended.
        """
        saved = [c for c in self.COLUMNS if c not in ("ended", "med", "ha")]
        out = {c: getattr(self, c).copy() for c in saved}
        out["ha"] = np.where(self.hf >= 0, self.ha, 0.0)
        return out

    def load_columns(self, cols: Mapping[str, Any]) -> None:
        """Replace the table by saved columns (`saved_columns`, as JSON lists or arrays)."""
        try:
            n = len(cols["id"])
            types = {"id": np.int64, "last_seen": np.int64, "seen": np.int64,
                     "vel": np.float64, "border": bool, "hf": np.int64, "hp": np.float64,
                     "ha": np.float64}  # fmt: skip
            new = {c: np.asarray(cols[c], dt) for c, dt in types.items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise LivescopeError(f"tracker state: bad track table ({exc})") from exc
        shapes = {
            "vel": (n, 2),
            "hf": (n, self.hist),
            "hp": (n, self.hist, 2),
            "ha": (n, self.hist),
        }
        for c, arr in new.items():
            want = shapes.get(c, (n,))
            if arr.shape != want and not (n == 0 and arr.size == 0):
                raise LivescopeError(
                    f"tracker state: track column {c} has shape {arr.shape}, not {want}"
                )
            setattr(self, c, arr.reshape(want))
        if n and not (self.hf[:, -1] >= 0).all():
            raise LivescopeError("tracker state: a track has no last position")
        # (a NaN position or velocity broke every later frame; an area <= 0 or NaN gave
        # a NaN gate, and a last_seen other than its last position's frame a wrong gap: the
        # track never linked again)
        filled = self.hf >= 0
        good_area = (self.ha > 0) & np.isfinite(self.ha)
        bad: dict[str, Any] = {  # one flag per track
            "a position that is not finite": (~np.isfinite(self.hp).all(2) & filled).any(1),
            "a velocity that is not finite": ~np.isfinite(self.vel).all(1),
            "an area that is not finite and > 0": (~good_area & filled).any(1),
            "a last_seen other than its last position's frame": self.last_seen != self.hf[:, -1],
        }
        for what, rows in bad.items():
            if rows.any():
                r = int(np.flatnonzero(rows)[0])
                raise LivescopeError(f"tracker state: track {int(self.id[r])} has {what}")
        self.ha = np.where(self.hf >= 0, self.ha, np.nan)
        self.ended = np.zeros(n, bool)
        self.med = row_median(self.ha) if n else np.zeros(0)
