"""The simulated microscope: a real UniMMCore with Python devices, checked against its truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from livescope.schema import HardwareProfile, StageLimitError
from livescope.scope import SimulatedMicroscope


def snap(sim: SimulatedMicroscope, channel: str, exposure_ms: float = 50.0) -> np.ndarray:
    core = sim.core
    core.setConfig("Channel", channel)
    core.setExposure(exposure_ms)
    core.setShutterOpen(True)
    core.snapImage()
    return np.asarray(core.getImage()).copy()


def test_core_is_a_configured_micromanager_rig(sim: SimulatedMicroscope) -> None:
    core = sim.core
    assert core.getCameraDevice() == "Camera"
    assert core.getChannelGroup() == "Channel"
    assert set(core.getAvailableConfigs("Channel")) == {"Phase", "DAPI"}
    assert core.getPixelSizeUm() == pytest.approx(0.65)
    core.setConfig("Objective", "20x")
    assert core.getPixelSizeUm() == pytest.approx(0.325)
    assert (core.getImageHeight(), core.getImageWidth()) == (512, 512)
    assert core.getImageBitDepth() in (12, 16)


def test_each_nucleus_lies_under_its_mask(sim: SimulatedMicroscope) -> None:
    sim.set_time(1200.0)
    sim.core.setXYPosition(150.0, -80.0)
    img = snap(sim, "DAPI").astype(float)
    truth = sim.ground_truth()
    labels = truth.labels
    assert len(truth.cell_ids) > 15
    background = np.median(img[labels == 0])
    # every labelled nucleus is bright inside its mask, and its brightest point is inside
    smooth = ndimage.uniform_filter(img, 3)
    checked = 0
    for cid in truth.cell_ids:
        mask = labels == cid
        if mask.sum() < 40:  # cut by the field edge
            continue
        inside = img[mask].mean()
        ring = ndimage.binary_dilation(mask, iterations=4) & ~ndimage.binary_dilation(
            mask, iterations=2
        )
        ring &= labels == 0
        assert inside > background + 300, cid
        if ring.any():
            assert inside > img[ring].mean() + 200, cid
        rows, cols = np.nonzero(ndimage.binary_dilation(mask, iterations=3))
        window = np.zeros_like(mask)
        window[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
        window &= (labels == 0) | mask
        peak = np.unravel_index(np.argmax(np.where(window, smooth, -1)), img.shape)
        assert mask[peak], cid
        checked += 1
    assert checked > 15
    # and (almost) every bright pixel belongs to a nucleus
    bright = img > background + 400
    near = ndimage.binary_dilation(labels > 0, iterations=1)
    assert (bright & near).sum() / bright.sum() > 0.98


def test_same_seed_bit_identical_frames(sim_profile: HardwareProfile) -> None:
    def acquire(seed: int) -> list[np.ndarray]:
        with SimulatedMicroscope(sim_profile, seed=seed) as s:
            out = []
            for t in (0.0, 600.0):
                s.set_time(t)
                for ch in ("Phase", "DAPI"):
                    out.append(snap(s, ch))
            s.core.setXYPosition(-300.0, 200.0)
            out.append(snap(s, "DAPI"))
            return out

    a, b, c = acquire(7), acquire(7), acquire(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_closed_shutter_gives_dark_frame(sim: SimulatedMicroscope) -> None:
    core = sim.core
    core.setConfig("Channel", "DAPI")
    core.setAutoShutter(False)
    core.setShutterOpen(False)
    core.snapImage()
    dark = np.asarray(core.getImage()).astype(float)
    offset = sim.profile.camera.offset_adu
    assert abs(dark.mean() - offset) < 2
    assert dark.std() < 3


def test_signal_scales_with_exposure_and_saturates(sim: SimulatedMicroscope) -> None:
    sim.set_time(600.0)
    offset = sim.profile.camera.offset_adu
    short = snap(sim, "Phase", 5.0).astype(float) - offset
    long = snap(sim, "Phase", 10.0).astype(float) - offset
    assert np.median(long) / np.median(short) == pytest.approx(2.0, rel=0.05)
    saturated = snap(sim, "DAPI", 2000.0)
    assert saturated.max() == 2**sim.profile.camera.bit_depth - 1


def test_noise_is_shot_plus_read_noise(sim: SimulatedMicroscope) -> None:
    cam = sim.profile.camera
    img = snap(sim, "Phase", 10.0).astype(float)
    truth = sim.ground_truth()
    bg = img[ndimage.binary_dilation(truth.labels > 0, iterations=40) == 0]
    electrons = (bg.mean() - cam.offset_adu) / cam.gain_adu_per_e
    expected_std = cam.gain_adu_per_e * np.sqrt(electrons + cam.read_noise_e**2)
    assert bg.std() == pytest.approx(expected_std, rel=0.1)


def test_defocus_blurs(sim: SimulatedMicroscope) -> None:
    sim.set_time(600.0)
    sharp = snap(sim, "DAPI").astype(float)
    sim.core.setPosition(40.0)
    blurred = snap(sim, "DAPI").astype(float)

    def edge_energy(a: np.ndarray) -> float:
        a = ndimage.gaussian_filter(a, 1.0)
        return float(np.mean(np.hypot(*np.gradient(a))))

    assert edge_energy(blurred) < 0.6 * edge_energy(sharp)


def test_fluorescence_bleaches_label_free_does_not(sim: SimulatedMicroscope) -> None:
    sim.set_time(600.0)
    labels = sim.ground_truth().labels > 0
    exposure_ms, n_between = 100.0, 40

    def nuclear_signal() -> float:
        img = snap(sim, "DAPI", exposure_ms).astype(float)
        return float(img[labels].mean() - np.median(img[~labels]))

    first = nuclear_signal()
    for _ in range(n_between - 1):
        snap(sim, "DAPI", exposure_ms)
    later = nuclear_signal()
    rate = sim.params.bleach_per_exposure_s
    assert later / first == pytest.approx(np.exp(-rate * n_between * exposure_ms / 1000), rel=0.03)
    p1 = snap(sim, "Phase", 10.0).astype(float).mean()
    for _ in range(8):
        snap(sim, "Phase", 10.0)
    assert snap(sim, "Phase", 10.0).astype(float).mean() == pytest.approx(p1, rel=0.01)


def test_sequence_acquisition_advances_sample_time(sim: SimulatedMicroscope) -> None:
    core = sim.core
    core.setConfig("Channel", "DAPI")
    core.setExposure(100.0)
    core.setShutterOpen(True)
    sim.set_time(300.0)
    core.startSequenceAcquisition(6, 0, True)
    frames, times = [], []
    while core.isSequenceRunning() or core.getRemainingImageCount():
        if core.getRemainingImageCount():
            img, md = core.popNextImageAndMD()
            frames.append(np.asarray(img).copy())
            times.append(float(md["livescope.sample_time_s"]))
    assert len(frames) == 6
    assert np.allclose(np.diff(times), 0.1)
    assert times[0] == pytest.approx(300.0)
    assert not np.array_equal(frames[0], frames[1])  # new noise (and bleaching) each frame


@pytest.mark.parametrize(
    ("move", "message"),
    [
        pytest.param(lambda c: c.setXYPosition(5000.0, 0.0), "stages.xy.x_range_um", id="x"),
        pytest.param(lambda c: c.setXYPosition(0.0, -2000.0), "stages.xy.y_range_um", id="y"),
        pytest.param(lambda c: c.setPosition(500.0), "stages.z.z_range_um", id="z"),
    ],
)
def test_stage_refuses_moves_outside_profile(sim: SimulatedMicroscope, move, message: str) -> None:  # type: ignore[no-untyped-def]
    before = sim.core.getXYPosition(), sim.core.getPosition()
    with pytest.raises(StageLimitError, match=message):
        move(sim.core)
    assert (sim.core.getXYPosition(), sim.core.getPosition()) == before


def test_unknown_channel_is_refused(sim: SimulatedMicroscope) -> None:
    with pytest.raises(ValueError, match="Cy5"):
        sim.core.setConfig("Channel", "Cy5")


def test_ground_truth_follows_stage(sim: SimulatedMicroscope) -> None:
    a = sim.ground_truth(600.0, 0.0, 0.0)
    b = sim.ground_truth(600.0, 100.0, 0.0)  # 100 µm to the right = 153.8 px
    shift = round(100.0 / 0.65)
    overlap_a = a.labels[:, shift:]
    overlap_b = b.labels[:, : 512 - shift]
    agree = np.mean(overlap_a == overlap_b)
    assert agree > 0.97


def test_shot_noise_drawn_in_chunks_is_the_same_draw() -> None:
    # numpy's Poisson sampler holds the GIL for a whole call: chunks let the agent's
    # other threads run, and must not change a seed's frames
    from livescope.scope._sim import _poisson

    lam = np.random.default_rng(1).uniform(0, 10, 10_000).astype(np.float32)
    expected = np.random.default_rng([7, 1]).poisson(lam).astype(np.float32)
    assert np.array_equal(_poisson(np.random.default_rng([7, 1]), lam), expected)
