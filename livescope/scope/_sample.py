"""The simulated sample: a population of nuclei that move, grow, divide and die.

The sample lives in stage coordinates (µm; the field of view is centred on the XY
stage position) on a torus of ``sample_size_um``, bigger than any field of view,
so cells enter and leave fields as they move. Time is *sample time* in seconds;
the state advances in fixed steps of `STEP_S` with one seeded random generator,
so the state at a given time depends only on the seed (not on wall-clock time or
on when it was asked for).

Cell cycle (times in sample seconds, per cell):

* interphase from birth until ``cycle_s`` has passed (the nucleus grows);
* mitosis onset: prophase (the nucleus rounds up, chromatin condenses and
  brightens), then metaphase (a bright plate), each a fixed share of
  ``mitosis_duration_s``;
* division at anaphase: the mother ends and two daughters begin (Cell Tracking
  Challenge semantics: the mother's track ends the step before the daughters'
  begin), first as small, bright, separating chromatin masses (anaphase /
  telophase), then interphase;
* occasionally apoptosis: the nucleus shrinks and condenses, then disappears;
* contact inhibition: no cell enters mitosis while the dish holds twice its
  starting cells; the cells it held back then start as deaths make room.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from livescope.schema import Simulation

__all__ = ["ANAPHASE_SHARE", "STEP_S", "CellRecord", "CellState", "SampleState", "SimulatedSample"]

STEP_S = 10.0
"""Sample-time step of the simulation, seconds."""

_PROPHASE_SHARE = 0.45  # of mitosis_duration_s, from onset to metaphase
_METAPHASE_SHARE = 0.25  # then metaphase until anaphase (division)
_ANAPHASE_SHARE = 0.30  # daughters' separation and decondensation after division
ANAPHASE_SHARE = _ANAPHASE_SHARE
"""Share of ``mitosis_duration_s`` the daughters spend in anaphase/telophase after division."""
_APOPTOSIS_S = 2400.0
_VELOCITY_MEMORY_S = 600.0  # persistence time of random motion
_HISTORY_STEPS = 720  # steps behind the newest served without simulating from t=0 (2 h)
_RECENT_STEPS = 60  # newest states kept whole (10 min: frames' truth drawn a little behind)
_CHECKPOINT_STEPS = 30  # the dynamics are kept every this many steps, to replay from
_REPLAYED_STATES = 4  # states replayed from a checkpoint, kept for the next ask


class CellState(IntEnum):
    """What a nucleus is doing; drives how it is rendered."""

    INTERPHASE = 0
    PROPHASE = 1
    METAPHASE = 2
    ANAPHASE = 3
    APOPTOTIC = 4


@dataclass
class CellRecord:
    """Lineage entry of one cell (every cell that ever existed in the sample).

    Times are sample seconds; ``end_s`` is None while the cell lives. ``fate`` is
    ``"alive"``, ``"divided"`` or ``"died"``. ``mitosis_onset_s`` is the start of
    prophase (None if the cell never entered mitosis).
    """

    cell_id: int
    parent_id: int
    birth_s: float
    end_s: float | None = None
    fate: str = "alive"
    mitosis_onset_s: float | None = None
    apoptosis_onset_s: float | None = None


@dataclass(frozen=True)
class SampleState:
    """The population at one step (arrays of equal length, one entry per cell)."""

    time_s: float
    ids: NDArray[np.int64]
    y_um: NDArray[np.float64]
    x_um: NDArray[np.float64]
    radius_um: NDArray[np.float64]
    """Equivalent radius of the nucleus (its mask has this area)."""
    aspect: NDArray[np.float64]
    """Major/minor axis ratio of the nucleus ellipse (>= 1)."""
    angle_rad: NDArray[np.float64]
    brightness: NDArray[np.float64]
    """Relative nuclear-stain brightness (includes condensation in mitosis)."""
    state: NDArray[np.int8]
    progress: NDArray[np.float64]
    """Progress (0..1) through the current state, for rendering."""
    texture: NDArray[np.float64]
    """(n, 4) per-cell texture phases, radians."""

    def __len__(self) -> int:
        return int(self.ids.size)


class _Checkpoint(NamedTuple):
    """The dynamics after one step: enough to simulate on from it exactly."""

    cells: dict[str, NDArray[Any]]
    rng_state: Mapping[str, Any]
    next_id: int


class _ScratchLineage(dict[int, CellRecord]):
    """The lineage of a replay: takes its writes and drops them.

    A replay only simulates steps already simulated, whose records the real
    lineage holds.
    """

    def __missing__(self, cell_id: int) -> CellRecord:
        record = CellRecord(cell_id, 0, math.nan)
        self[cell_id] = record
        return record


class SimulatedSample:
    """A deterministic cell population.

    Parameters
    ----------
    params
        The profile's ``simulation`` section.
    seed
        Overrides ``params.seed``.

    Notes
    -----
    Not thread-safe: the simulated microscope calls it under its own lock.

    Memory: the newest `_RECENT_STEPS` states are kept whole, and the dynamics
    every `_CHECKPOINT_STEPS` steps back to `_HISTORY_STEPS` behind the newest;
    a state in between is simulated again from the checkpoint before it (the
    same state: the step is deterministic). Keeping all 720 states whole took
    ~400 MB at the default density, ~5 GB at ten times it.

    """

    def __init__(self, params: Simulation, seed: int | None = None) -> None:
        self.params = params
        self.seed = params.seed if seed is None else int(seed)
        self._ahead: tuple[int, dict[int, CellRecord]] | None = None
        """The furthest step simulated and its lineage, while an earlier time is simulated
        again (the lineage then keeps every cell simulated so far)."""
        self._reset()

    # ----------------------------------------------------------------- setup

    def _reset(self) -> None:
        p = self.params
        self._rng = np.random.default_rng([self.seed, 0x5A3F])
        rng = self._rng
        h, w = p.sample_size_um
        n = max(1, round(p.cell_density_per_mm2 * h * w / 1e6))
        self._n0 = n
        self._next_id = 1
        self.lineage: dict[int, CellRecord] = {}
        ids = self._new_ids(n)
        cycle = self._draw_cycle(n)
        # ages spread over the whole cycle, including mitosis, so that divisions
        # happen from the first minutes on
        mito = p.mitosis_duration_s * (_PROPHASE_SHARE + _METAPHASE_SHARE)
        age = rng.uniform(0.0, 1.0, n) * (cycle + mito)
        self._t_step = 0
        self._c: dict[str, NDArray[Any]] = {
            "ids": ids,
            "parent": np.zeros(n, np.int64),
            "y": rng.uniform(-h / 2, h / 2, n),
            "x": rng.uniform(-w / 2, w / 2, n),
            "vy": np.zeros(n),
            "vx": np.zeros(n),
            "birth": -age,
            "cycle": cycle,
            "r0": p.nucleus_radius_um * rng.uniform(0.8, 1.05, n),
            "aspect0": rng.uniform(1.05, 1.6, n),
            "angle": rng.uniform(0, np.pi, n),
            "bright0": rng.lognormal(0.0, 0.2, n),
            "state": np.zeros(n, np.int8),
            "since": np.zeros(n),  # sample time the current state began
            "texture": rng.uniform(0, 2 * np.pi, (n, 4)),
        }
        for cid, b in zip(ids.tolist(), (-age).tolist(), strict=True):
            self.lineage[cid] = CellRecord(cid, 0, float(b))
        # cells already past onset at t=0 start in mitosis
        onset = self._c["birth"] + cycle
        in_mitosis = onset <= 0.0
        self._c["state"][in_mitosis] = CellState.PROPHASE
        self._c["since"][in_mitosis] = onset[in_mitosis]
        for cid, t in zip(ids[in_mitosis].tolist(), onset[in_mitosis].tolist(), strict=True):
            self.lineage[cid].mitosis_onset_s = float(t)
        self._advance_states(0.0)
        for _ in range(20):  # relax initial overlaps
            self._repel()
        self._history: OrderedDict[int, SampleState] = OrderedDict()
        self._checkpoints: OrderedDict[int, _Checkpoint] = OrderedDict()
        self._replayed: OrderedDict[int, SampleState] = OrderedDict()
        self._cursor: tuple[int, dict[str, NDArray[Any]], np.random.Generator, int] | None = None
        """The dynamics where the last replay (`_replay`) ended: the next, later, goes on."""
        self._remember()

    def _new_ids(self, n: int) -> NDArray[np.int64]:
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        return ids

    def _draw_cycle(self, n: int) -> NDArray[np.float64]:
        return self.params.cycle_time_s * self._rng.lognormal(0.0, 0.15, n)

    # -------------------------------------------------------------- dynamics

    @property
    def time_s(self) -> float:
        """Sample time of the newest simulated step, seconds."""
        return self._t_step * STEP_S

    def state_at(self, time_s: float) -> SampleState:
        """Return the population at sample time ``time_s`` (>= 0).

        The state is piecewise constant between steps of `STEP_S`. Times up to
        two hours behind the newest step are served from memory (the last ten
        minutes at once, older ones simulated again from a checkpoint of at most
        `_CHECKPOINT_STEPS` steps before, or on from the last such replay, when
        asked in time order); older ones are simulated again from the seed (same
        result, slower).
        """
        if not (time_s >= 0 and math.isfinite(time_s)):
            raise ValueError(f"sample time must be a finite number of s >= 0, got {time_s}")
        step = math.floor(time_s / STEP_S + 1e-9)
        if step in self._history:
            return self._history[step]
        if step in self._replayed:
            self._replayed.move_to_end(step)
            return self._replayed[step]
        if self._checkpoints and next(iter(self._checkpoints)) <= step < self._t_step:
            return self._replay(step)
        if step < self._t_step:
            if self._ahead is None or self._ahead[0] < self._t_step:
                self._ahead = (self._t_step, self.lineage)
            self._reset()
        while self._t_step < step:
            self._step()
        return self._history[step]

    def _replay(self, step: int) -> SampleState:
        """Simulate ``step`` (older than the whole states kept) again from a checkpoint.

        The sample's own dynamics and lineage are put back afterwards.
        """
        base = max(k for k in self._checkpoints if k <= step)
        cursor, self._cursor = self._cursor, None  # (used up here, or left behind)
        saved = (self._c, self._rng, self._t_step, self._next_id, self.lineage)
        try:
            if cursor is not None and base <= cursor[0] <= step:
                # on from the last replay (asks in time order: the truth of frames drawn
                # behind the camera), not from the checkpoint again each time
                self._t_step, self._c, self._rng, self._next_id = cursor
            else:
                cp = self._checkpoints[base]
                self._c = {k: v.copy() for k, v in cp.cells.items()}
                self._rng = np.random.Generator(np.random.PCG64())
                self._rng.bit_generator.state = cp.rng_state
                self._t_step, self._next_id = base, cp.next_id
            self.lineage = _ScratchLineage()
            while self._t_step < step:
                self._advance()
            snap = self._snapshot()
            self._cursor = (self._t_step, self._c, self._rng, self._next_id)
        finally:
            self._c, self._rng, self._t_step, self._next_id, self.lineage = saved
        self._replayed[step] = snap
        while len(self._replayed) > _REPLAYED_STATES:
            self._replayed.popitem(last=False)
        return snap

    def _step(self) -> None:
        self._advance()
        self._remember()
        if self._ahead is not None and self._t_step >= self._ahead[0]:
            self._ahead = None  # (the lineage simulated again is the same, and as far)

    def _advance(self) -> None:
        """Simulate one step on (the sample's dynamics and lineage; no state kept)."""
        p, c, rng = self.params, self._c, self._rng
        self._t_step += 1
        t = self.time_s
        n = c["ids"].size
        # persistent random motion (Ornstein-Uhlenbeck velocity) plus drift
        sigma = p.speed_um_per_min / 60.0
        decay = math.exp(-STEP_S / _VELOCITY_MEMORY_S)
        kick = sigma * math.sqrt(1 - decay**2)
        c["vy"] = c["vy"] * decay + kick * rng.standard_normal(n)
        c["vx"] = c["vx"] * decay + kick * rng.standard_normal(n)
        moving = c["state"] == CellState.INTERPHASE
        dy, dx = (v / 60.0 for v in p.drift_um_per_min)
        c["y"] += (c["vy"] * moving + dy) * STEP_S
        c["x"] += (c["vx"] * moving + dx) * STEP_S
        self._repel()
        h, w = p.sample_size_um
        c["y"] = (c["y"] + h / 2) % h - h / 2
        c["x"] = (c["x"] + w / 2) % w - w / 2
        # apoptosis starts at random in interphase
        p_death = p.death_rate_per_h * STEP_S / 3600.0
        dying = (c["state"] == CellState.INTERPHASE) & (rng.uniform(size=n) < p_death)
        c["state"][dying] = CellState.APOPTOTIC
        c["since"][dying] = t
        for cid in c["ids"][dying].tolist():
            self.lineage[cid].apoptosis_onset_s = t
        self._advance_states(t)

    def _advance_states(self, t: float) -> None:
        """Apply state transitions due at sample time ``t``."""
        p, c = self.params, self._c
        mito = p.mitosis_duration_s
        state, since = c["state"], c["since"]
        # onset of mitosis (paused while the dish is crowded: contact inhibition)
        n, cap = c["ids"].size, 2 * self._n0
        if n < cap:
            birth, cycle = c["birth"], c["cycle"]
            onset = (state == CellState.INTERPHASE) & (t - birth >= cycle)
            # Cells due at the step before too were held back by the full dish (while there
            # is room each starts on the step it is due). They start only as deaths make
            # room: at most as many a step as the dish lacks, counting each mitosis under
            # way as the two cells it becomes; the most overdue first, ties by id. (All of
            # them started in one step, hours after the dish filled, and the population
            # doubled past the cap.) No random draw and no change until a cell is held:
            # every step before the dish first fills is as it was (the shipped engines
            # were trained on frames of it).
            held = onset & ((t - STEP_S) - birth >= cycle)
            if held.any():
                mitotic = (state == CellState.PROPHASE) | (state == CellState.METAPHASE)
                room = max(0, cap - n - int(np.count_nonzero(mitotic)))
                if np.count_nonzero(onset) > room:
                    idx = np.flatnonzero(onset)
                    first = idx[np.lexsort((c["ids"][idx], birth[idx] + cycle[idx]))[:room]]
                    onset[:] = False
                    onset[first] = True
            state[onset] = CellState.PROPHASE
            since[onset] = t
            for cid in c["ids"][onset].tolist():
                self.lineage[cid].mitosis_onset_s = t
        meta = (state == CellState.PROPHASE) & (t - since >= _PROPHASE_SHARE * mito)
        state[meta] = CellState.METAPHASE
        since[meta] = t
        decond = (state == CellState.ANAPHASE) & (t - since >= _ANAPHASE_SHARE * mito)
        state[decond] = CellState.INTERPHASE
        since[decond] = t
        dividing = (state == CellState.METAPHASE) & (t - since >= _METAPHASE_SHARE * mito)
        dead = (state == CellState.APOPTOTIC) & (t - since >= _APOPTOSIS_S)
        for cid in c["ids"][dead].tolist():
            rec = self.lineage[cid]
            rec.end_s, rec.fate = t, "died"
        if dividing.any():
            self._divide(np.flatnonzero(dividing), t)
            dead = np.concatenate([dead, np.zeros(c["ids"].size - dead.size, bool)])
            dividing = np.concatenate([dividing, np.zeros(c["ids"].size - dividing.size, bool)])
        gone = dead | dividing
        if gone.any():
            keep = ~gone
            for k in c:
                c[k] = c[k][keep]

    def _divide(self, idx: NDArray[np.intp], t: float) -> None:
        """Append two daughters for each mother in ``idx`` (mothers removed by caller)."""
        c, rng = self._c, self._rng
        m = idx.size
        mothers = c["ids"][idx]
        daughters = self._new_ids(2 * m)
        for k, mid in enumerate(mothers.tolist()):
            rec = self.lineage[mid]
            rec.end_s, rec.fate = t, "divided"
            for d in daughters[2 * k : 2 * k + 2].tolist():
                self.lineage[d] = CellRecord(d, mid, t)
        rep = np.repeat(idx, 2)
        sign = np.tile([1.0, -1.0], m)
        ang = c["angle"][rep]
        r = self._radius(rep, t)
        # daughters start on either side of the metaphase plate, along its normal
        off = 0.6 * r
        new: dict[str, NDArray[Any]] = {
            "ids": daughters,
            "parent": np.repeat(mothers, 2),
            "y": c["y"][rep] + sign * off * np.cos(ang),
            "x": c["x"][rep] - sign * off * np.sin(ang),
            "vy": sign * np.cos(ang) * 0.002,
            "vx": -sign * np.sin(ang) * 0.002,
            "birth": np.full(2 * m, t),
            "cycle": self._draw_cycle(2 * m),
            "r0": c["r0"][rep] * rng.uniform(0.9, 1.0, 2 * m),
            "aspect0": rng.uniform(1.05, 1.6, 2 * m),
            "angle": ang + np.pi / 2,
            "bright0": c["bright0"][rep] * rng.lognormal(0.0, 0.05, 2 * m),
            "state": np.full(2 * m, CellState.ANAPHASE, np.int8),
            "since": np.full(2 * m, t),
            "texture": rng.uniform(0, 2 * np.pi, (2 * m, 4)),
        }
        for key in c:
            c[key] = np.concatenate([c[key], new[key]])

    def _radius(self, idx: NDArray[np.intp] | slice, t: float) -> NDArray[np.float64]:
        c = self._c
        age = np.clip((t - c["birth"][idx]) / c["cycle"][idx], 0.0, 1.0)
        return np.asarray(c["r0"][idx] * (1.0 + age) ** (1 / 3), dtype=np.float64)

    def _repel(self) -> None:
        """Push overlapping nuclei apart (one relaxation pass).

        Not across the sample's edge (a known fault, kept as the shipped engines'
        training data was made with it): two nuclei on either side of it may overlap.
        """
        from scipy.spatial import cKDTree

        c = self._c
        if c["ids"].size < 2:
            return
        r = self._radius(slice(None), self.time_s) * 1.35  # cell bodies keep nuclei apart
        pts = np.column_stack([c["y"], c["x"]])
        pairs = cKDTree(pts).query_pairs(float(2 * r.max()), output_type="ndarray")
        if pairs.size == 0:
            return
        i, j = pairs[:, 0], pairs[:, 1]
        d = pts[j] - pts[i]
        dist = np.hypot(d[:, 0], d[:, 1])
        overlap = r[i] + r[j] - dist
        hit = overlap > 0
        if not hit.any():
            return
        i, j, d, dist, overlap = i[hit], j[hit], d[hit], dist[hit], overlap[hit]
        unit = d / np.maximum(dist, 1e-6)[:, None]
        push = 0.5 * overlap[:, None] * unit
        dy = np.zeros_like(pts)
        np.add.at(dy, i, -push)
        np.add.at(dy, j, push)
        c["y"] += dy[:, 0]
        c["x"] += dy[:, 1]

    # -------------------------------------------------------------- snapshot

    def _remember(self) -> None:
        """Keep the newest step's state, and its dynamics if a checkpoint falls on it."""
        step = self._t_step
        self._history[step] = self._snapshot()
        while len(self._history) > _RECENT_STEPS:
            self._history.popitem(last=False)
        if step % _CHECKPOINT_STEPS == 0:
            self._checkpoints[step] = _Checkpoint(
                {k: v.copy() for k, v in self._c.items()},
                self._rng.bit_generator.state,
                self._next_id,
            )
        # the checkpoint before the oldest step served from memory stays
        oldest = step - _HISTORY_STEPS + 1
        while len(self._checkpoints) > 1 and list(self._checkpoints)[1] <= oldest:
            self._checkpoints.popitem(last=False)

    def _snapshot(self) -> SampleState:
        """Return the population at the newest step, for rendering."""
        c, t, mito = self._c, self.time_s, self.params.mitosis_duration_s
        state = c["state"]
        elapsed = t - c["since"]
        r = self._radius(slice(None), t)
        aspect = c["aspect0"].copy()
        bright = c["bright0"].copy()
        progress = np.zeros_like(r)

        pro = state == CellState.PROPHASE
        f = np.clip(elapsed / (_PROPHASE_SHARE * mito), 0, 1)
        progress[pro] = f[pro]
        aspect[pro] = 1 + (aspect[pro] - 1) * (1 - f[pro])  # rounding up
        bright[pro] *= 1 + 0.8 * f[pro]  # condensing chromatin
        r[pro] *= 1 - 0.15 * f[pro]

        met = state == CellState.METAPHASE
        f = np.clip(elapsed / (_METAPHASE_SHARE * mito), 0, 1)
        progress[met] = f[met]
        aspect[met] = 3.2
        bright[met] *= 2.4
        r[met] *= 0.75

        ana = state == CellState.ANAPHASE
        f = np.clip(elapsed / (_ANAPHASE_SHARE * mito), 0, 1)
        progress[ana] = f[ana]
        aspect[ana] = 1.6 - 0.5 * f[ana]
        bright[ana] *= 2.2 - 1.2 * f[ana]
        r[ana] *= 0.7 + 0.25 * f[ana]

        apo = state == CellState.APOPTOTIC
        f = np.clip(elapsed / _APOPTOSIS_S, 0, 1)
        progress[apo] = f[apo]
        aspect[apo] = 1.05
        bright[apo] *= 1 + 1.5 * np.sqrt(f[apo])
        r[apo] *= 1 - 0.5 * f[apo]

        return SampleState(
            time_s=t,
            ids=c["ids"].copy(),
            y_um=c["y"].copy(),
            x_um=c["x"].copy(),
            radius_um=r,
            aspect=aspect,
            angle_rad=c["angle"].copy(),
            brightness=bright,
            state=state.copy(),
            progress=progress,
            texture=c["texture"].copy(),
        )

    def records(self) -> list[CellRecord]:
        """Return the lineage of every cell simulated so far, by id.

        Simulating an earlier time again (`state_at`) does not forget the cells of
        later times already simulated.
        """
        lineage = self.lineage if self._ahead is None else self._ahead[1]
        return [lineage[k] for k in sorted(lineage)]
