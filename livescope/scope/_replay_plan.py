"""What a replay asks for: the dataset's channels on the profile, and a plan of its frames."""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import useq

from livescope.record import Dataset, DatasetError, RecordedFrame
from livescope.schema import HardwareProfile

from ._fanout import position_name

__all__ = ["frames_in_plan", "map_channels", "replay_sequence"]


def map_channels(
    dataset: Dataset, profile: HardwareProfile, channel_map: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Return {dataset channel: profile channel} for every channel of ``dataset``.

    A channel keeps its name unless ``channel_map`` renames it (any channel, one
    the profile lacks or not). A dataset of one channel the profile does not know
    is imaged as the profile's first fluorescence channel (a warning is added to
    the dataset).

    Raises
    ------
    DatasetError
        naming the channels the profile lacks and how to map them (each to a
        profile channel no other dataset channel takes, `_map_hint`), or that the
        profile has too few channels for them; also if ``channel_map`` names a
        channel the dataset lacks or the profile lacks, or two dataset channels
        end up on one profile channel. (Not a plain `LivescopeError`: a cluster
        retried those, and this fails the same way each time.)

    """
    names = [c.name for c in profile.channels.presets]
    given = dict(channel_map or {})
    if stray := sorted(set(given) - set(dataset.channels)):
        raise DatasetError(
            f"{dataset.path}: --channel-map names channel(s) {stray} the dataset does not have "
            f"(its channels: {', '.join(dataset.channels)})"
        )
    if bad := sorted({t for t in given.values() if t not in names}):
        raise DatasetError(
            f"{dataset.path}: --channel-map maps to {bad}, not channels of profile "
            f"{profile.name!r} (known: {', '.join(names)})"
        )
    out: dict[str, str] = {}
    unknown: list[str] = []
    for ch in dataset.channels:
        target = given.get(ch, ch)
        if target in names:
            out[ch] = target
        else:
            unknown.append(ch)
    if unknown and len(dataset.channels) == 1:
        fluo = [c.name for c in profile.channels.presets if c.kind == "fluorescence"]
        if fluo:
            out[unknown[0]] = fluo[0]
            dataset.warnings.append(
                f"{dataset.path}: channel {unknown[0]!r} is replayed as {fluo[0]!r} "
                f"(a fluorescence channel of profile {profile.name!r}; pass --channel-map "
                f"{unknown[0]}=NAME for another)"
            )
            unknown = []
    if unknown:
        said = (
            f"{dataset.path}: channel(s) {', '.join(repr(c) for c in unknown)} not in profile "
            f"{profile.name!r} (known: {', '.join(names)})"
        )
        hint = _map_hint(unknown, profile, taken=set(out.values()))
        if hint is None:  # (a hint of one target for several channels led to a refusal)
            free = [n for n in names if n not in out.values()]
            raise DatasetError(
                f"{said}; the profile has {len(free)} channel(s) free "
                f"({', '.join(free) or 'none'}) for the dataset's {len(unknown)}: each dataset "
                "channel needs a channel of its own; replay on a profile with more "
                "(--profile)"
            )
        raise DatasetError(f"{said}; pass {hint}")
    targets = list(out.values())
    if dup := sorted({t for t in targets if targets.count(t) > 1}):
        raise DatasetError(f"{dataset.path}: two dataset channels map to {dup}")
    return out


_LABEL_FREE_NAMES = frozenset({"bf", "brightfield", "phase", "dic", "phc", "tl", "trans"})
"""Words that name a label-free (transmitted light) channel: ``BF``, ``Phase``, ``DIC-40x``."""


def _looks_label_free(name: str) -> bool:
    """Whether a dataset channel's name says it is brightfield, phase or DIC."""
    words = re.findall(r"[a-z]+", name.lower())
    return any(w in _LABEL_FREE_NAMES for w in words) or "".join(words) == "brightfield"


def _map_hint(unknown: Sequence[str], profile: HardwareProfile, taken: set[str]) -> str | None:
    """Return ``--channel-map`` options giving each of ``unknown`` a free profile channel.

    A brightfield- or phase-like name (`_looks_label_free`) gets the profile's
    first free label-free channel, any other its first free fluorescence
    channel; failing that, any free channel (each target once: a hint of one
    target for two channels led to their refusal). None when the profile has
    fewer free channels than ``unknown``.
    """
    free = [c for c in profile.channels.presets if c.name not in taken]
    if len(free) < len(unknown):
        return None
    options = []
    for ch in unknown:
        kind = "label_free" if _looks_label_free(ch) else "fluorescence"
        preset = next((c for c in free if c.kind == kind), free[0])
        free.remove(preset)
        # (double quotes where a name has a space: cmd.exe takes no single quotes)
        pair = f"{ch}={preset.name}"
        options.append(f'--channel-map "{pair}"' if " " in pair else f"--channel-map {pair}")
    return " ".join(options)


def replay_sequence(
    dataset: Dataset, profile: HardwareProfile, channels: Mapping[str, str]
) -> useq.MDASequence:
    """Build a plan asking for every frame of ``dataset`` (time points, positions, channels, z).

    For datasets that were not recorded by livescope (a livescope recording
    replays its own ``plan.yaml``). Time points and z planes are numbered as in
    the dataset (a gap in its numbering is a time point or plane whose frames are
    absent, and skipped). Positions and planes go where the dataset recorded
    them (a plane without a recorded z: its index in µm above plane 0); a
    position that moved between time points is visited at its first frame's
    x/y throughout, and each frame is served with the place it was recorded at
    (`ReplayEngine`). The interval is the median step between time points'
    first frames (1 s when the dataset has one time point or records no times).
    """
    frames = dataset.frames
    first: dict[str, RecordedFrame] = {}
    for f in frames:
        first.setdefault(f.key.position, f)
    ts = sorted({f.key.t for f in frames})
    # the interval from each time point's first frame (a real rig's frames each carry
    # their own time: the median gap between any two frames is one channel's switch)
    began: dict[int, float] = {}
    for f in frames:
        if f.sample_time_s is not None:
            began[f.key.t] = min(began.get(f.key.t, f.sample_time_s), f.sample_time_s)
    tb = sorted(began)
    steps = np.diff([began[t] for t in tb]) / np.diff(tb) if len(tb) > 1 else np.asarray([])
    interval = float(np.median(steps)) if steps.size else 1.0
    zs = sorted({f.key.z for f in frames})
    group = profile.channels.config_group
    chans = []
    for ch in dataset.channels:
        preset = profile.channels.get(channels[ch])
        exp = next((f.exposure_ms for f in frames if f.key.channel == ch and f.exposure_ms), None)
        exposure = preset.clamp_exposure(exp) if exp else preset.default_exposure_ms
        chans.append(useq.Channel(config=preset.name, group=group, exposure=exposure))
    z_plan: Any = None
    # an event's z index is the frame's (a plane recorded alone at index 2 is asked for as
    # plane 2 of a stack: as plane 0 it was never found); the stage goes where each plane
    # was recorded, where the dataset says (the planes were sent to 0, 1, 2 ... µm)
    if max(zs) > 0:
        z_plan = useq.ZRelativePositions(relative=_z_offsets(frames, max(zs) + 1))
    base = {
        f.key.position: f.z_um
        for f in reversed(frames)
        if f.z_um is not None and (z_plan is None or f.key.z == 0)
    }  # (the position's first frame (of plane 0 in a stack) with a recorded z)
    return useq.MDASequence(
        stage_positions=[
            useq.Position(x=f.x_um, y=f.y_um, z=base.get(p), name=p) for p, f in first.items()
        ],
        channels=chans,
        z_plan=z_plan,
        time_plan=useq.TIntervalLoops(interval=max(interval, 1e-3), loops=max(ts) + 1),
        axis_order="tpcz",
    )


def _z_offsets(frames: Iterable[RecordedFrame], planes: int) -> list[float]:
    """Return each z plane's offset (µm) from plane 0: the recorded one, else its index.

    Per plane, the median over the stacks (position, time point, channel) that
    recorded both its z and plane 0's.
    """
    stacks: dict[tuple[str, int, str], dict[int, float]] = {}
    for f in frames:
        if f.z_um is not None:
            stacks.setdefault((f.key.position, f.key.t, f.key.channel), {})[f.key.z] = f.z_um
    seen: dict[int, list[float]] = {}
    for stack in stacks.values():
        if 0 in stack:
            for z, z_um in stack.items():
                seen.setdefault(z, []).append(z_um - stack[0])
    return [float(np.median(seen[z])) if z in seen else float(z) for z in range(planes)]


def frames_in_plan(
    sequence: useq.MDASequence | Iterable[useq.MDAEvent],
) -> dict[tuple[str, int], int]:
    """Frames each field (position, time index) of a plan (or its expanded events) has.

    Only events that take an image count: an autofocus event takes none (counted,
    every field of a plan with an ``autofocus_plan`` waited for a frame that
    never came).
    """
    out: collections.Counter[tuple[str, int]] = collections.Counter()
    for event in sequence:
        if not isinstance(event.action, useq.AcquireImage | None):
            continue
        out[(position_name(event), int(event.index.get("t", 0)))] += 1
    return dict(out)
