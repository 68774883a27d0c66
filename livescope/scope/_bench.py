"""Benchmarks of the simulated camera and the recorder (``livescope bench camera|record``)."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import useq

from livescope.bus import machine_info
from livescope.record import CODECS, OmeZarrWriter
from livescope.schema import FrameInfo, HardwareProfile, LivescopeError

from ._fanout import frame_info
from ._sim import SimulatedMicroscope

__all__ = ["CAMERA_TARGETS_FPS", "bench_camera", "bench_record"]

CAMERA_TARGETS_FPS = {512: 100.0, 2048: 10.0}
"""Targets (frames per second on one core) by sensor side length."""


def _machine(threads: int) -> dict[str, Any]:
    return {**machine_info(), "threads_used": threads}


def _profiles(profile: HardwareProfile, sizes: tuple[int, ...]) -> list[HardwareProfile]:
    """Return the profile at each sensor size, all made (so checked) before any is measured."""
    if profile.simulation is None:
        raise LivescopeError(
            f"profile {profile.name!r} is not a simulated profile; this benchmark runs on the "
            "simulated microscope (e.g. --profile sim)"
        )
    if not sizes or not all(s >= 1 for s in sizes):
        raise LivescopeError(
            f"benchmark sizes must be sensor sides of >= 1 pixel (at least one), got {sizes}"
        )
    return [profile.with_square_sensor(s) for s in sizes]


def bench_camera(
    profile: HardwareProfile,
    sizes: tuple[int, ...] = (512, 2048),
    seconds: float = 3.0,
    channels: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Measure simulated-camera frames per second through the real core path.

    For each sensor size and channel, the camera is set to that sensor size, and
    ``snapImage`` + ``getImage`` run for about ``seconds`` after a warm-up (in
    this process, on this thread: one core). Each result carries its ratio to the
    target in `CAMERA_TARGETS_FPS`, measured in the same run.

    Raises
    ------
    LivescopeError
        for a profile that is not simulated, no sizes or one < 1, ``seconds``
        not a finite number > 0, or a channel the profile lacks; checked before
        anything runs.

    """
    profs = _profiles(profile, sizes)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise LivescopeError(f"seconds per case must be a finite number > 0, got {seconds}")
    names = [c.name for c in profile.channels.presets]
    chans = channels or tuple(names)
    if unknown := [c for c in chans if c not in names]:
        raise LivescopeError(
            f"no channel {', '.join(map(repr, unknown))} in profile {profile.name!r}; "
            f"it has: {', '.join(names)}"
        )
    results: list[dict[str, Any]] = []
    for size, prof in zip(sizes, profs, strict=True):
        with SimulatedMicroscope(prof) as sim:
            core = sim.core
            core.setShutterOpen(True)
            for ch in chans:
                preset = prof.channels.get(ch)
                core.setConfig(prof.channels.config_group, ch)
                core.setExposure(preset.default_exposure_ms)
                sim.set_time(600.0)
                core.snapImage()
                core.getImage()  # warm-up
                n = 0
                t0 = time.perf_counter()
                while (elapsed := time.perf_counter() - t0) < seconds or n < 3:
                    core.snapImage()
                    core.getImage()
                    n += 1
                fps = n / elapsed
                target = CAMERA_TARGETS_FPS.get(size)
                results.append(
                    {
                        "shape": [size, size],
                        "channel": ch,
                        "kind": preset.kind,
                        "exposure_ms": preset.default_exposure_ms,
                        "frames": n,
                        "fps": round(fps, 2),
                        "ms_per_frame": round(1000 * elapsed / n, 3),
                        "target_fps": target,
                        "ratio_to_target": round(fps / target, 3) if target else None,
                        "meets_target": None if target is None else bool(fps >= target),
                    }
                )
    met = [r["meets_target"] for r in results if r["meets_target"] is not None]
    return {
        "bench": "camera",
        "profile": profile.name,
        "results": results,
        "all_targets_met": all(met) if met else None,  # (None: no size measured has a target)
        "machine": _machine(1),
    }


def _sim_frames(profile: HardwareProfile, size: int, n: int) -> list[tuple[str, np.ndarray]]:
    """``n`` simulated frames per channel at ``size``², at different sample times."""
    prof = profile.with_square_sensor(size)
    out = []
    with SimulatedMicroscope(prof, seed=0) as sim:
        core = sim.core
        core.setShutterOpen(True)
        for preset in prof.channels.presets:
            core.setConfig(prof.channels.config_group, preset.name)
            core.setExposure(preset.default_exposure_ms)
            for k in range(n):
                sim.set_time(600.0 + 120.0 * k)
                core.snapImage()
                out.append((preset.name, np.asarray(core.getImage()).copy()))
    return out


def _info(seq: int, channel: str, t: int, c: int, img: np.ndarray) -> FrameInfo:
    """Return the frame's record as a run makes it (position p0)."""
    event = useq.MDAEvent(index={"t": t, "c": c}, channel={"config": channel}, pos_name="p0")
    return frame_info(seq, img, event, {})


def _chunk_bytes(folder: Path) -> int:
    """Bytes of the frame chunks under an array's folder (zarr v3 keeps them under ``c/``)."""
    return sum(
        p.stat().st_size
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).parts[0] == "c"
    )


def _write_all(
    imgs: list[tuple[str, np.ndarray]], names: list[str], codec: str
) -> tuple[float, float, int]:
    """Write the frames once with ``codec``: wall s, CPU s, bytes of chunks stored."""
    with tempfile.TemporaryDirectory(prefix="livescope-bench-") as tmp:
        run = Path(tmp) / "run"
        with OmeZarrWriter(run, channels=names, pixel_size_um=1.0, codec=codec) as w:
            # warm-up: zarr's threads, and the position's series and array created
            w.write(imgs[0][1], _info(0, imgs[0][0], 0, 0, imgs[0][1]))
            counts = dict.fromkeys(names, 1)  # the warm-up frame took t=0 of one channel
            wall, cpu = time.perf_counter(), time.process_time()
            for seq, (ch, img) in enumerate(imgs, start=1):
                t = counts[ch]
                counts[ch] += 1
                w.write(img, _info(seq, ch, t, names.index(ch), img))
            wall = time.perf_counter() - wall
            cpu = time.process_time() - cpu
        stored = _chunk_bytes(run / "data.ome.zarr" / "0" / "0")
    return wall, cpu, stored


def _write_all_through_zarr(
    imgs: list[tuple[str, np.ndarray]], names: list[str]
) -> tuple[float, float, int]:
    """Write the frames through zarr's own array writes, default codec: wall s, CPU s, bytes.

    What the recorder did until 2026-11-30 (and any zarr writer does): the array
    assigned frame by frame (sized ahead, so no metadata is rewritten; the
    recorder's own path rewrites it when the t axis grows).
    """
    import zarr

    per = {ch: sum(1 for c, _ in imgs if c == ch) + 1 for ch in names}
    shape_yx = imgs[0][1].shape
    with tempfile.TemporaryDirectory(prefix="livescope-bench-") as tmp:
        run = Path(tmp) / "run"
        with OmeZarrWriter(run, channels=names, pixel_size_um=1.0) as w:  # the codec, as ours
            w.write(imgs[0][1], _info(0, imgs[0][0], 0, 0, imgs[0][1]))
        compressors = zarr.open_array(run / "data.ome.zarr" / "0" / "0", mode="r").compressors
        arr = zarr.create_array(
            run / "via-zarr", shape=(max(per.values()), len(names), 1, *shape_yx),
            chunks=(1, 1, 1, *shape_yx), dtype=imgs[0][1].dtype, fill_value=0,
            compressors=compressors,
        )  # fmt: skip
        arr[0, names.index(imgs[0][0]), 0] = imgs[0][1]  # warm-up: zarr's threads
        counts = dict.fromkeys(names, 1)
        wall, cpu = time.perf_counter(), time.process_time()
        for ch, img in imgs:
            t = counts[ch]
            counts[ch] += 1
            arr[t, names.index(ch), 0] = img
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        stored = _chunk_bytes(run / "via-zarr")
    return wall, cpu, stored


def bench_record(
    profile: HardwareProfile,
    sizes: tuple[int, ...] = (512, 2048),
    frames: int = 20,
    codecs: tuple[str, ...] = CODECS,
    repeats: int = 3,
) -> dict[str, Any]:
    """Measure the recorder's cost per frame for each codec, side by side.

    Simulated frames (``frames`` per channel at each size) are rendered first,
    then written through `OmeZarrWriter` (chunk, metadata, frame log: the
    recorder's whole path) into a temporary folder for each codec, in this
    process. CPU time counts every thread (zarr encodes and writes on its own),
    which is what the recorder takes from the cores the acquisition shares.
    The codecs take turns, ``repeats`` rounds; each figure is the median round.
    ``cpu_vs_zstd`` is each codec's CPU time per frame over zarr's default
    codec's (``zstd``), measured in the same run. One more row per size
    (``path: zarr``) writes the same frames with the default codec through
    zarr's own array writes, which the recorder bypasses (it encodes and writes
    each chunk itself); the default codec's row gives ``cpu_vs_zarr_path``.

    Raises
    ------
    LivescopeError
        for a profile that is not simulated, no sizes or one < 1, no codecs or
        one that is not in `CODECS`, or ``repeats`` or ``frames`` < 1; checked
        before anything runs.

    """
    _profiles(profile, sizes)
    if not codecs or not set(codecs) <= set(CODECS):
        # (none: the JSON would hold zarr's path alone, nothing of the recorder measured)
        raise LivescopeError(
            f"benchmark codecs must be one or more of {', '.join(CODECS)}, got {codecs}"
        )
    if repeats < 1 or frames < 1:
        raise LivescopeError(f"repeats and frames must be >= 1, got {repeats} and {frames}")
    results: list[dict[str, Any]] = []
    for size in sizes:
        imgs = _sim_frames(profile, size, frames)
        names = list(dict.fromkeys(c for c, _ in imgs))
        runs: dict[str, list[tuple[float, float, int]]] = {c: [] for c in codecs}
        via_zarr: list[tuple[float, float, int]] = []
        for _ in range(repeats):
            for codec in codecs:
                runs[codec].append(_write_all(imgs, names, codec))
            via_zarr.append(_write_all_through_zarr(imgs, names))
        rows: dict[str, dict[str, Any]] = {}
        n = len(imgs)
        measured = sum(a.nbytes for _, a in imgs)
        raw = measured + imgs[0][1].nbytes  # what is stored holds the warm-up frame too
        for codec, got in [*runs.items(), ("zarr", via_zarr)]:
            wall = float(np.median([g[0] for g in got]))
            cpu = float(np.median([g[1] for g in got]))
            stored = got[-1][2]
            rows[codec] = {
                "shape": [size, size],
                "codec": CODECS[0] if codec == "zarr" else codec,
                "path": "zarr" if codec == "zarr" else "livescope",
                "frames": n,
                "rounds": len(got),
                "fps": round(n / wall, 1),
                "ms_per_frame": round(1000 * wall / n, 3),
                "cpu_ms_per_frame": round(1000 * cpu / n, 3),
                "compression": round(raw / stored, 3) if stored else None,
                "mb_per_s": round(measured / wall / 1e6, 1),
            }
        base = rows.get("zstd", {}).get("cpu_ms_per_frame")
        zarr_cpu = rows["zarr"]["cpu_ms_per_frame"]
        for codec, row in rows.items():
            row["cpu_vs_zstd"] = round(row["cpu_ms_per_frame"] / base, 3) if base else None
            if codec == CODECS[0]:
                row["cpu_vs_zarr_path"] = (
                    round(row["cpu_ms_per_frame"] / zarr_cpu, 3) if zarr_cpu else None
                )
            results.append(row)
    return {
        "bench": "record",
        "profile": profile.name,
        "default_codec": CODECS[0],
        "results": results,
        "machine": _machine(0),  # 0: zarr's own threads, not limited
    }
