"""Cases found by the schema review: each failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import useq
import yaml

from livescope.schema import (
    HardwareProfile,
    HeaderError,
    PlanError,
    ProfileError,
    check_plan,
    decode_header,
    load_plan,
)

ROOT = Path(__file__).resolve().parents[2]
_PLAN = (
    "channels:\n  - {config: DAPI, exposure: 50}\n"
    "stage_positions:\n  - {x: 0, y: 0, z: 0}\n"
    "time_plan: {interval: 1, loops: 2}\n"
)


def _load(tmp_path: Path, text: str) -> useq.MDASequence:
    f = tmp_path / "plan.yaml"
    f.write_text(text)
    return load_plan(f)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "{x: 0, y: 0, z: 0}",
            "{x: 0, y: 0, z: 0, sequence: {chanels: [DAPI]}}",
            "stage_positions.0.sequence.chanels: unknown field",
            id="position-sequence-key",
        ),
        pytest.param(
            "{x: 0, y: 0, z: 0}",
            "{x: 0, y: 0, z: 0, sequence: {channels: [{config: DAPI, exposre: 5}]}}",
            "stage_positions.0.sequence.channels.0.exposre: unknown field",
            id="position-sequence-channel-key",
        ),
        pytest.param(
            "{x: 0, y: 0, z: 0}",
            "{x: 0, y: 0, z: 0, sequence: {z_plan: {range: 10, stepp: 1}}}",
            "stage_positions.0.sequence.z_plan.stepp: unknown field",
            id="position-sequence-z-plan-key",
        ),
        pytest.param(
            "time_plan:",
            "autofocus_plan: {autofocus_device_name: Z, autofocus_motor_ofset: 5, axes: [t]}\n"
            "time_plan:",
            "autofocus_plan.autofocus_motor_ofset: unknown field",
            id="autofocus-plan-key",
        ),
    ],
)
def test_a_misspelt_key_inside_a_position_or_autofocus_plan_is_named(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    # (useq dropped it silently: the position ran without its channels, exposure or z plan)
    with pytest.raises(PlanError) as info:
        _load(tmp_path, _PLAN.replace(old, new))
    assert any(expected in p for p in info.value.problems), info.value.problems


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param("z_plan: {range: 10, step: .nan}\n", "z_plan.step: nan µm", id="step-nan"),
        pytest.param("z_plan: {range: 10, step: .inf}\n", "z_plan.step: inf µm", id="step-inf"),
        pytest.param("z_plan: {range: .inf, step: 1}\n", "z_plan.range: inf µm", id="range-inf"),
        pytest.param(
            "z_plan: {top: 10, bottom: 0, step: 0.000000001}\n",
            "z_plan: 10000000001 planes (more than 100000)",
            id="step-nm",
        ),
        pytest.param(
            "z_plan: {above: 5, below: 5, step: -1}\n",
            "z_plan.step: -1 µm gives no planes",
            id="step-negative",
        ),
    ],
)
def test_a_z_plan_that_cannot_be_expanded_is_a_plan_error(
    tmp_path: Path, sim_profile: HardwareProfile, extra: str, expected: str
) -> None:
    # (ValueError 'arange: cannot compute length', a MemoryError, or a plan of no frames)
    with pytest.raises(PlanError) as info:
        _load(tmp_path, _PLAN + extra)
    assert any(expected in p for p in info.value.problems), info.value.problems
    seq = useq.MDASequence.model_validate(
        {"channels": ["DAPI"], "stage_positions": [{"x": 0, "y": 0, "z": 0}]}
    )
    with pytest.raises(PlanError):  # (a plan made in code, not read from a file)
        check_plan(seq.replace(z_plan=yaml.safe_load(extra)["z_plan"]), sim_profile)


def test_an_interval_of_zero_with_a_duration_is_a_plan_error(
    tmp_path: Path, sim_profile: HardwareProfile
) -> None:
    # (check_plan raised ZeroDivisionError from useq)
    text = _PLAN.replace("{interval: 1, loops: 2}", "{interval: 0, duration: 100}")
    with pytest.raises(PlanError, match=r"time_plan\.interval: 0 with a duration"):
        _load(tmp_path, text)
    seq = useq.MDASequence.model_validate(
        {"channels": ["DAPI"], "time_plan": {"interval": 0, "duration": 100}}
    )
    with pytest.raises(PlanError, match=r"time_plan\.interval: 0 with a duration"):
        check_plan(seq, sim_profile)


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        pytest.param("exposure_max_ms: 2000", "exposure_max_ms: .inf",
                     "channels.presets.1.exposure_max_ms", id="exposure-max-inf"),
        pytest.param("z_range_um: [-200, 200]", "z_range_um: [-.inf, .inf]",
                     "stages.z.z_range_um.0", id="z-range-inf"),
        pytest.param("x_range_um: [-1400, 1400]", "x_range_um: [-1400, inf]",
                     "stages.xy.x_range_um.1", id="x-range-inf-as-text"),
        pytest.param("latency_budget_ms: 500", "latency_budget_ms: .inf",
                     "compute.latency_budget_ms", id="latency-inf"),
        pytest.param("drift_um_per_min: [0.3, 0.5]", "drift_um_per_min: [.nan, 0.5]",
                     "simulation.drift_um_per_min.0", id="drift-nan"),
    ],
)  # fmt: skip
def test_a_profile_number_that_is_not_finite_is_refused(
    tmp_path: Path, old: str, new: str, field: str
) -> None:
    # (an infinite limit turned its check off: a 10-hour exposure or any z was accepted)
    text = (ROOT / "hardware_profiles" / "sim.yaml").read_text()
    assert old in text
    f = tmp_path / "p.yaml"
    f.write_text(text.replace(old, new))
    with pytest.raises(ProfileError) as info:
        HardwareProfile.from_file(f)
    assert any(p.startswith(f"{field}: Input should be a finite number") for p in
               info.value.problems), info.value.problems  # fmt: skip


@pytest.mark.parametrize("v", [True, 1.0])
def test_a_header_version_must_be_the_integer_1(v: object) -> None:
    header = {
        "v": v, "run_id": "r", "seq": 0, "index": {"t": 0}, "channel": "DAPI",
        "position": "p0", "x_um": 0, "y_um": 0, "z_um": 0, "exposure_ms": 50,
        "pixel_size_um": 0.65, "t_camera_ns": 1, "t_agent_ns": 1, "t_sent_ns": 1,
        "shape": [4, 4], "dtype": "uint16", "payload": "inline", "shm": None,
    }  # fmt: skip
    with pytest.raises(HeaderError, match="protocol version"):
        decode_header(json.dumps(header).encode(), 32)
