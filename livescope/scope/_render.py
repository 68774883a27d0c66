"""Render the simulated sample as a camera sees it, and its ground-truth masks.

Images are photon rates (electrons per millisecond per pixel) before noise; the
camera turns them into counts. Nuclei are ellipses with a smooth edge whose width
grows with defocus; the ground-truth mask of a nucleus is its ellipse (the edge at
half maximum), so each rendered nucleus lies under its mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ._sample import CellState, SampleState

__all__ = ["FieldOfView", "Optics", "render_fluorescence", "render_labels", "render_phase"]

FLUO_RATE_E_PER_MS = 30.0
"""Peak nuclear-stain signal of a typical in-focus nucleus, electrons/ms."""
FLUO_BACKGROUND_E_PER_MS = 0.4
PHASE_RATE_E_PER_MS = 100.0
"""Transmitted-light background of the label-free channel, electrons/ms."""


@dataclass(frozen=True)
class FieldOfView:
    """What the camera sees: centre (stage position), pixel size, shape, focus.

    ``shape`` is (rows, cols); row 0 is at the smallest y. ``wrap_um`` is the
    (height, width) of the sample torus.
    """

    center_y_um: float
    center_x_um: float
    pixel_um: float
    shape: tuple[int, int]
    z_um: float
    wrap_um: tuple[float, float]


@dataclass(frozen=True)
class Optics:
    """Objective NA, emission wavelength and the focal-plane tilt of the dish."""

    na: float
    wavelength_um: float = 0.46
    tilt_um_per_mm: tuple[float, float] = (0.0, 0.0)

    @property
    def psf_sigma_um(self) -> float:
        """Gaussian sigma of the in-focus point-spread function, µm."""
        return 0.21 * self.wavelength_um / self.na


@dataclass(frozen=True)
class _Cell:
    k: int  # index into the state arrays
    ry: float  # position relative to the field centre, µm
    rx: float
    a: float  # semi-axes, µm
    b: float
    cos: float
    sin: float
    defocus: float  # µm


def _visible(state: SampleState, fov: FieldOfView, reach: float, optics: Optics) -> list[_Cell]:
    # Known, kept (every simulated frame the shipped engines were trained on was rendered
    # so, and their training must reproduce them; change with a retrain): the margin does
    # not grow with defocus, so a defocused cell just outside the field sends no light in
    # (overlapping fields differ along their edges); a field wider than the sample shows
    # each cell once, at its copy nearest the centre.
    h, w = fov.wrap_um
    ry = (state.y_um - fov.center_y_um + h / 2) % h - h / 2
    rx = (state.x_um - fov.center_x_um + w / 2) % w - w / 2
    half_y = fov.shape[0] * fov.pixel_um / 2 + reach * state.radius_um.max(initial=0) + 10
    half_x = fov.shape[1] * fov.pixel_um / 2 + reach * state.radius_um.max(initial=0) + 10
    ks = np.flatnonzero((np.abs(ry) < half_y) & (np.abs(rx) < half_x))
    ty, tx = optics.tilt_um_per_mm
    out = []
    for k in ks.tolist():
        r, asp, ang = state.radius_um[k], state.aspect[k], state.angle_rad[k]
        sq = math.sqrt(asp)
        focus = (ty * state.y_um[k] + tx * state.x_um[k]) / 1000.0
        out.append(
            _Cell(
                k=k,
                ry=float(ry[k]),
                rx=float(rx[k]),
                a=float(r * sq),
                b=float(r / sq),
                cos=math.cos(ang),
                sin=math.sin(ang),
                defocus=float(fov.z_um - focus),
            )
        )
    return out


def _patch(
    cell: _Cell, fov: FieldOfView, extent_um: float
) -> tuple[tuple[slice, slice], NDArray[np.float32], NDArray[np.float32]] | None:
    """Return the image slices around a cell and (u, v) in the cell's frame, µm."""
    px = fov.pixel_um
    rows, cols = fov.shape
    r_c = cell.ry / px + (rows - 1) / 2
    c_c = cell.rx / px + (cols - 1) / 2
    ext = extent_um / px
    r0, r1 = max(0, int(r_c - ext)), min(rows, int(r_c + ext) + 2)
    c0, c1 = max(0, int(c_c - ext)), min(cols, int(c_c + ext) + 2)
    if r0 >= r1 or c0 >= c1:
        return None
    dy = ((np.arange(r0, r1, dtype=np.float32) - np.float32(r_c)) * np.float32(px))[:, None]
    dx = ((np.arange(c0, c1, dtype=np.float32) - np.float32(c_c)) * np.float32(px))[None, :]
    cs, sn = np.float32(cell.cos), np.float32(cell.sin)
    u = dx * cs + dy * sn
    v = dy * cs - dx * sn
    return (slice(r0, r1), slice(c0, c1)), u, v


def _norm_radius(
    u: NDArray[np.float32], v: NDArray[np.float32], a: float, b: float
) -> NDArray[np.float32]:
    out: NDArray[np.float32] = np.sqrt((u * np.float32(1 / a)) ** 2 + (v * np.float32(1 / b)) ** 2)
    return out


def render_labels(state: SampleState, fov: FieldOfView, optics: Optics) -> NDArray[np.uint32]:
    """Ground-truth instance mask: each pixel holds the id of the nucleus covering it (0: none).

    Where two nuclei overlap (rare: they repel), the later one in the state wins.
    """
    out = np.zeros(fov.shape, np.uint32)
    for cell in _visible(state, fov, 1.0, optics):
        got = _patch(cell, fov, max(cell.a, cell.b) + fov.pixel_um)
        if got is None:
            continue
        sl, u, v = got
        inside = _norm_radius(u, v, cell.a, cell.b) <= 1.0
        out[sl][inside] = state.ids[cell.k]
    return out


def _texture(
    u: NDArray[np.float32], v: NDArray[np.float32], phases: NDArray[np.float64], period_um: float
) -> NDArray[np.float32]:
    k = np.float32(2 * math.pi / period_um)
    p = phases.astype(np.float32)
    out: NDArray[np.float32] = np.cos(u * k + p[0]) * np.cos(
        v * (k * np.float32(1.3)) + p[1]
    ) + np.float32(0.5) * np.cos((u + v) * (k * np.float32(0.7)) + p[2])
    return out


_FLUO_TEXTURE = {  # state: (amplitude at start, amplitude gained with progress, period µm)
    CellState.INTERPHASE: (0.10, 0.0, 3.0),
    CellState.PROPHASE: (0.15, 0.45, 1.6),
    CellState.METAPHASE: (0.25, 0.0, 1.2),
    CellState.ANAPHASE: (0.25, -0.15, 1.4),
    CellState.APOPTOTIC: (0.30, 0.55, 2.0),
}


def render_fluorescence(
    state: SampleState,
    fov: FieldOfView,
    optics: Optics,
    bleach_of: Callable[[int], float] | None = None,
) -> NDArray[np.float32]:
    """Nuclear-stain image as a photon rate (electrons/ms/pixel).

    ``bleach_of(cell_id)`` gives the remaining fluorescence fraction of a cell;
    None means unbleached.
    """
    img = np.full(fov.shape, FLUO_BACKGROUND_E_PER_MS, np.float32)
    psf = optics.psf_sigma_um
    for cell in _visible(state, fov, 2.0, optics):
        k = cell.k
        blur = 0.5 * abs(cell.defocus) * optics.na
        soft = math.sqrt(0.25**2 + psf**2 + blur**2)
        got = _patch(cell, fov, max(cell.a, cell.b) + 3 * soft)
        if got is None:
            continue
        sl, u, v = got
        r_eff = math.sqrt(cell.a * cell.b)
        signed = (np.float32(1.0) - _norm_radius(u, v, cell.a, cell.b)) * np.float32(r_eff)
        profile = np.float32(0.5) * (np.float32(1.0) + np.tanh(signed * np.float32(1 / soft)))
        amp0, gain, period = _FLUO_TEXTURE[CellState(int(state.state[k]))]
        amp = amp0 + gain * float(state.progress[k])
        tex = np.float32(1.0) + np.float32(amp / 1.5) * _texture(u, v, state.texture[k], period)
        level = FLUO_RATE_E_PER_MS * float(state.brightness[k])
        level *= r_eff**2 / (r_eff**2 + 2 * blur**2)  # light spread out of focus
        if bleach_of is not None:
            level *= bleach_of(int(state.ids[k]))
        img[sl] += np.float32(level) * profile * tex
    return img


def _ramp(d: NDArray[np.float32], width: float) -> NDArray[np.float32]:
    """Edge profile: 1 inside (d < 1), 0 outside, a linear ramp ``width`` wide (units of d)."""
    out: NDArray[np.float32] = np.float32(1.0) - d
    out *= np.float32(1.0 / width)
    out += np.float32(0.5)
    np.clip(out, np.float32(0.0), np.float32(1.0), out=out)
    return out


def render_phase(state: SampleState, fov: FieldOfView, optics: Optics) -> NDArray[np.float32]:
    """Label-free (phase-contrast) image as a photon rate (electrons/ms/pixel).

    Interphase cells are dark, spread bodies with a bright halo; mitotic cells
    round up and turn phase-bright; apoptotic cells are dark, compact and blebbing.
    """
    rel = np.ones(fov.shape, np.float32)
    for cell in _visible(state, fov, 2.6, optics):
        k = cell.k
        st = CellState(int(state.state[k]))
        prog = float(state.progress[k])
        contrast = 1.0 / (1.0 + (cell.defocus / 8.0) ** 2)
        soft = math.sqrt(0.4**2 + (0.5 * abs(cell.defocus) * optics.na) ** 2)
        r_eff = math.sqrt(cell.a * cell.b)
        if st == CellState.INTERPHASE:
            scale, body_w, nuc_w, halo_w = 2.1, -0.22, -0.12, 0.18
        elif st == CellState.APOPTOTIC:
            scale, body_w, nuc_w, halo_w = 1.6 - 0.3 * prog, -0.35, -0.10, 0.25
        else:  # mitotic: rounded, phase-bright
            scale = 1.6 if st != CellState.ANAPHASE else 1.35 + 0.5 * prog
            body_w, nuc_w, halo_w = 0.45, -0.15, 0.25
        body_r = scale * r_eff
        reach = (scale * max(cell.a, cell.b) if st == CellState.INTERPHASE else body_r) + 2.5
        got = _patch(cell, fov, reach + 3 * soft)
        if got is None:
            continue
        sl, u, v = got
        d_nuc = _norm_radius(u, v, cell.a, cell.b)
        if st == CellState.INTERPHASE:  # the body is the nucleus' ellipse, scaled
            d_body = d_nuc * np.float32(1.0 / scale)
        else:  # rounded body
            d_body = np.hypot(u, v)
            d_body *= np.float32(1.0 / body_r)
        # edge ramps ~2 soft widths wide; halo a 1.2 µm band just outside the body
        delta = _ramp(d_body, 2 * soft / body_r)
        delta *= np.float32(body_w)
        nuc = _ramp(d_nuc, 2 * soft / r_eff)
        nuc *= np.float32(nuc_w)
        delta += nuc
        halo = d_body - np.float32(1.05)
        np.abs(halo, out=halo)
        halo *= np.float32(-body_r / 1.2)
        halo += np.float32(1.0)
        np.maximum(halo, np.float32(0.0), out=halo)
        halo *= np.float32(halo_w)
        delta += halo
        if st == CellState.APOPTOTIC:
            delta *= np.float32(1.0) + np.float32(0.6 * prog) * _texture(
                u, v, state.texture[k], 2.5
            )
        delta *= np.float32(contrast)
        rel[sl] += delta
    np.maximum(rel, np.float32(0.05), out=rel)
    rel *= np.float32(PHASE_RATE_E_PER_MS)
    return rel
