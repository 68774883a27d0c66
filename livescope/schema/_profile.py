"""Hardware profiles: one YAML file per rig, validated here.

A profile says what the rig is (camera, objectives, channels, stages), what the
sample may be exposed to (light-dose budget, stage travel), and what the analysis
side may use (GPU, precision, latency budget). Units are in the field names.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path, PureWindowsPath
from typing import Annotated, Literal, Self

from pydantic import ConfigDict, Field, PositiveFloat, PositiveInt, field_validator, model_validator

from ._base import BACKSLASH_HINT, FrozenModel, read_yaml
from ._errors import ProfileError, StageLimitError

__all__ = [
    "UNTURNED",
    "Camera",
    "Channel",
    "ChannelSet",
    "Compute",
    "Guardrails",
    "HardwareProfile",
    "LightDoseBudget",
    "Objective",
    "Range",
    "Simulation",
    "Stages",
    "XYStage",
    "ZStage",
    "builtin_profile_path",
    "builtin_profiles",
    "load_profile",
]

UNTURNED: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 1.0)
"""`Camera.orientation` of a camera not turned or mirrored against the stage."""

Range = Annotated[tuple[float, float], Field(description="(low, high), low < high")]


class _RigModel(FrozenModel):
    """A part of a hardware profile: every number finite.

    A limit of ``.inf`` (or ``inf``, which YAML reads as a string and pydantic
    as a float) would turn its check off without a word, and NaN passes no
    comparison; a limit that does not apply is left out (None), not infinite.
    """

    model_config = ConfigDict(allow_inf_nan=False)


def _check_range(name: str, r: tuple[float, float]) -> None:
    if not r[0] < r[1]:
        raise ValueError(f"{name} must be (low, high) with low < high, got {r}")


class Camera(_RigModel):
    """The camera: sensor geometry, digitisation and noise (as on its datasheet)."""

    name: str = Field(min_length=1, description="Micro-Manager camera device label.")
    sensor_shape_px: tuple[PositiveInt, PositiveInt] = Field(description="(height, width) px.")
    sensor_pixel_um: PositiveFloat = Field(description="Physical pixel pitch on the chip, µm.")
    bit_depth: int = Field(ge=8, le=16, description="ADC bits; counts saturate at 2**bit_depth-1.")
    max_fps: PositiveFloat = Field(description="Full-frame rate limit, frames per second.")
    read_noise_e: float = Field(ge=0, default=1.6, description="RMS read noise, electrons.")
    gain_adu_per_e: PositiveFloat = Field(default=0.5, description="Counts per electron.")
    offset_adu: int = Field(ge=0, default=100, description="Dark offset, counts.")
    full_well_e: PositiveFloat = Field(default=30000, description="Full-well capacity, electrons.")
    orientation: tuple[float, float, float, float] = Field(
        default=UNTURNED,
        description="The stage directions of the frame's columns and rows, (a, b, c, d): a "
        "cell dcol columns and drow rows from the centre is at stage x + px·(a·dcol + b·drow), "
        "y + px·(c·dcol + d·drow). (1, 0, 0, 1): columns along +x, rows along +y; (-1, 0, 0, "
        "1): mirrored in x; (0, 1, 1, 0): transposed. A run on Micro-Manager takes it from "
        "the pixel size affine where one is set.",
    )

    @model_validator(mode="after")
    def _orientation_is_a_turn_or_mirror(self) -> Camera:
        a, b, c, d = self.orientation
        # columns of unit length at right angles (a calibrated affine is a few % off)
        if not (abs(a * a + c * c - 1) <= 0.1 and abs(b * b + d * d - 1) <= 0.1
                and abs(a * b + c * d) <= 0.1):  # fmt: skip
            raise ValueError(
                f"camera.orientation {self.orientation} is not a turn or mirror (its "
                "columns must be unit vectors at right angles, e.g. (1, 0, 0, 1) or (-1, 0, 0, 1))"
            )
        return self


class Objective(_RigModel):
    """An objective and the pixel size it gives on this camera."""

    name: str = Field(min_length=1, description="Preset name in the Objective group.")
    magnification: PositiveFloat
    na: float = Field(gt=0, le=1.7, description="Numerical aperture.")
    pixel_size_um: PositiveFloat = Field(description="Sample-plane pixel size at binning 1, µm.")

    def gives(self, pixel_size_um: float, binning: int = 1) -> bool:
        """Whether a frame's pixel size (µm) is this objective's at ``binning``, within 3 %."""
        own = self.pixel_size_um * binning
        return abs(own - pixel_size_um) <= 0.03 * own


class Channel(_RigModel):
    """One preset of the channel config group."""

    name: str = Field(min_length=1, description="Preset name in the channel config group.")
    kind: Literal["label_free", "fluorescence"]
    light_source: str = Field(min_length=1, description="Lamp, LED line or laser driving it.")
    target: str | None = Field(
        default=None,
        description="What the channel shows, e.g. 'nuclei'. The pipeline segments a fluorescence "
        "channel whose target is 'nuclei', else one with no target; never one showing another.",
    )
    exposure_min_ms: PositiveFloat = 1.0
    exposure_max_ms: PositiveFloat = 1000.0
    default_exposure_ms: PositiveFloat = 50.0

    @model_validator(mode="after")
    def _exposures_ordered(self) -> Channel:
        if not self.exposure_min_ms <= self.default_exposure_ms <= self.exposure_max_ms:
            raise ValueError(
                "need exposure_min_ms <= default_exposure_ms <= exposure_max_ms, got "
                f"{self.exposure_min_ms} / {self.default_exposure_ms} / {self.exposure_max_ms}"
            )
        return self

    def clamp_exposure(self, exposure_ms: float) -> float:
        """Return ``exposure_ms`` held to ``[exposure_min_ms, exposure_max_ms]``, in ms.

        Called when a replay builds its plan (`replay_sequence`, and a recorded
        plan whose channels are renamed), whose recorded exposures need not suit
        this rig: a frame recorded at 2000 ms is asked for at the preset's
        maximum rather than refused. The light-dose cap
        (``light_dose.max_exposure_ms_per_frame``) is not applied: `check_plan`
        refuses a fluorescence exposure over it. Elsewhere (a plan's check, an
        ``acquire`` decision) an exposure outside the limits is an error, never
        clamped.
        """
        return min(max(float(exposure_ms), self.exposure_min_ms), self.exposure_max_ms)


class ChannelSet(_RigModel):
    """The channel config group and its presets."""

    config_group: str = Field(default="Channel", min_length=1)
    presets: tuple[Channel, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> ChannelSet:
        names = [c.name for c in self.presets]
        if dups := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"channel preset names must be unique; repeated: {dups}")
        return self

    def get(self, name: str) -> Channel:
        """Return the preset called ``name``.

        Raises
        ------
        KeyError
            naming the unknown channel and the ones that exist.

        """
        for c in self.presets:
            if c.name == name:
                return c
        raise KeyError(
            f"unknown channel {name!r} in group {self.config_group!r}; "
            f"this profile has: {', '.join(c.name for c in self.presets)}"
        )


class XYStage(_RigModel):
    """XY stage travel and speed."""

    name: str = Field(default="XY", min_length=1)
    x_range_um: Range
    y_range_um: Range
    max_speed_um_s: PositiveFloat = 5000.0

    @model_validator(mode="after")
    def _ranges(self) -> XYStage:
        _check_range("x_range_um", self.x_range_um)
        _check_range("y_range_um", self.y_range_um)
        return self


class ZStage(_RigModel):
    """Focus drive travel and speed."""

    name: str = Field(default="Z", min_length=1)
    z_range_um: Range
    max_speed_um_s: PositiveFloat = 1000.0

    @model_validator(mode="after")
    def _range(self) -> ZStage:
        _check_range("z_range_um", self.z_range_um)
        return self


class Stages(_RigModel):
    """The stages the rig moves the sample and focus with."""

    xy: XYStage
    z: ZStage


class LightDoseBudget(_RigModel):
    """How much excitation light the sample may receive (guardrails enforce it)."""

    max_exposure_ms_per_frame: PositiveFloat = Field(
        default=1000.0, description="Longest single fluorescence exposure, ms."
    )
    max_fluorescence_s_per_position: PositiveFloat = Field(
        default=60.0, description="Total fluorescence exposure per position over a run, s."
    )
    max_extra_frames_per_run: int = Field(
        ge=0, default=500, description="Frames that decisions may add to a plan."
    )
    max_fluorescence_s_per_channel: PositiveFloat | None = Field(
        default=None,
        description="Fluorescence exposure per position and channel over a run, s "
        "(None: only the per-position total applies).",
    )


class Guardrails(_RigModel):
    """Limits on what policies may ask of the rig (checked before a decision is sent)."""

    min_interval_s: PositiveFloat = Field(
        default=1.0, description="Shortest time-lapse interval a decision may set, s."
    )
    max_decisions_per_min: PositiveFloat = Field(
        default=60.0, description="Decisions sent per minute of run time (all rules)."
    )
    max_decision_age_s: PositiveFloat | None = Field(
        default=None,
        description=(
            "Refuse a close-up, move or interval change that answers a frame taken longer "
            "ago than this, s (wall-clock time on a real rig, pauses included; the sample's "
            "time on a simulated one): when the analysis has fallen behind, a cell seen then "
            "may no longer show what fired it. Checked by the agent, which knows when each "
            "frame was taken; stops are never refused, replays not checked. A rule's firing "
            "refused so is given back (no cooldown): it may fire on a fresher field. "
            "None: no limit."
        ),
    )
    max_added_span_s: PositiveFloat | None = Field(
        default=21600.0,
        description=(
            "Latest start of the frames a decision adds, s after the agent applies it (its "
            "delay_s plus its last event's min_start_time): a close-up reaching further is "
            "refused, and a rule whose every close-up would is refused at load. A run ends "
            "when its added frames are done, so a delay or interval written in the wrong unit "
            "(ms for s) would keep it going for hours. None: no limit."
        ),
    )


class Compute(_RigModel):
    """The analysis side: GPU, engine precision and the latency target."""

    gpu: str | None = Field(default=None, description="GPU model expected, None for CPU only.")
    precision: Literal["fp32", "fp16", "bf16", "int8"] = "fp16"
    latency_budget_ms: PositiveFloat = Field(
        default=500.0, description="Frame-to-decision latency target (p99), ms."
    )


class Simulation(_RigModel):
    """Parameters of the simulated sample (only for ``kind: simulated``)."""

    seed: int = Field(ge=0, default=0)
    sample_size_um: tuple[PositiveFloat, PositiveFloat] = Field(
        default=(3000.0, 3000.0), description="(height, width) of the dish area with cells, µm."
    )
    cell_density_per_mm2: PositiveFloat = Field(default=400.0)
    nucleus_radius_um: PositiveFloat = Field(default=6.0)
    cycle_time_s: PositiveFloat = Field(
        default=5400.0, description="Mean time from birth to mitosis onset, s (sample time)."
    )
    mitosis_duration_s: PositiveFloat = Field(default=1800.0)
    death_rate_per_h: float = Field(ge=0, default=0.02)
    speed_um_per_min: float = Field(ge=0, default=1.5, description="RMS random speed.")
    drift_um_per_min: tuple[float, float] = Field(default=(0.3, 0.5), description="(y, x).")
    focus_tilt_um_per_mm: tuple[float, float] = Field(default=(0.4, -0.3), description="(y, x).")
    bleach_per_exposure_s: float = Field(
        ge=0, default=0.05, description="Fluorescence lost per second of excitation (fraction)."
    )
    time_acceleration: PositiveFloat = Field(
        default=600.0,
        allow_inf_nan=False,  # (inf: every wait NaN, the run would hang)
        description="Sample seconds per wall-clock second: waits in a plan are divided by it.",
    )


_YAML_INVISIBLE = frozenset("\u0085\u00a0\u2028\u2029")
"""What YAML's double-quoted escapes (backslash N, _, L, P) make of a Windows path."""


def _yaml_escaped(c: str) -> bool:
    """Return True for a character a YAML escape leaves in a path (a control one, or invisible)."""
    return ord(c) < 32 or c in _YAML_INVISIBLE


class HardwareProfile(_RigModel):
    """A microscope rig, validated. Load with `load_profile` or `HardwareProfile.from_file`."""

    error_type = ProfileError

    name: str = Field(min_length=1)
    description: str = ""
    kind: Literal["simulated", "replay", "micromanager"]
    micromanager_config: Path | None = Field(
        default=None,
        description="Micro-Manager .cfg file (required for kind: micromanager); a relative "
        "path is read from the profile file's folder.",
    )
    camera: Camera
    objectives: tuple[Objective, ...] = Field(min_length=1)
    default_objective: str
    channels: ChannelSet
    stages: Stages
    light_dose: LightDoseBudget = LightDoseBudget()
    guardrails: Guardrails = Guardrails()
    compute: Compute = Compute()
    simulation: Simulation | None = None

    @field_validator("micromanager_config")
    @classmethod
    def _no_control_characters(cls, path: Path | None) -> Path | None:
        # (no file name holds one: a Windows path in double quotes was read with "\r",
        # "\t"... turned into them, and "not found" later printed it broken over lines;
        # "\P", "\L", "\N", "\_" become U+2029, U+2028, U+0085, U+00A0, unseen: those
        # four only, as a folder's name may hold other spaces, U+3000 or U+200C)
        if path is not None and (bad := sorted({c for c in str(path) if _yaml_escaped(c)})):
            raise ValueError(
                f"holds control or invisible character(s) {', '.join(repr(c) for c in bad)}: "
                f"{BACKSLASH_HINT}"
            )
        return path

    @model_validator(mode="after")
    def _consistent(self) -> HardwareProfile:
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objective names must be unique, got {names}")
        if self.default_objective not in names:
            raise ValueError(f"default_objective {self.default_objective!r} is not one of {names}")
        if self.kind == "micromanager" and self.micromanager_config is None:
            raise ValueError("kind 'micromanager' needs micromanager_config (path to a .cfg file)")
        if self.kind == "simulated" and self.simulation is None:
            raise ValueError("kind 'simulated' needs a simulation section")
        if self.kind == "simulated" and self.camera.orientation != UNTURNED:
            raise ValueError(
                f"camera.orientation {self.camera.orientation}: the simulated microscope's "
                "camera is not turned against its stage; leave it (1, 0, 0, 1)"
            )
        if self.kind != "simulated" and self.simulation is not None:
            raise ValueError(
                f"a simulation section only applies to kind 'simulated', not {self.kind!r}"
            )
        cam = self.camera
        if cam.offset_adu >= 2**cam.bit_depth - 1:
            raise ValueError(
                f"camera.offset_adu {cam.offset_adu} is at or above the largest count of a "
                f"{cam.bit_depth}-bit camera ({2**cam.bit_depth - 1})"
            )
        for i, o in enumerate(self.objectives if self.kind != "replay" else ()):
            # (a replay profile's objective is a placeholder: each dataset sets its pixel size)
            expected = cam.sensor_pixel_um / o.magnification
            if not 0.25 <= o.pixel_size_um / expected <= 4:  # adapters: 0.5x-2x, and more
                raise ValueError(
                    f"objectives.{i} ({o.name}): pixel_size_um {o.pixel_size_um:g} is "
                    f"{o.pixel_size_um / expected:.3g}x the {expected:.3g} µm of the camera's "
                    f"{cam.sensor_pixel_um:g} µm pitch through a {o.magnification:g}x objective "
                    "(a unit slip? more than a 4x relay or adapter either way is refused)"
                )
        return self

    def check_stage_travel(
        self, x_um: float | None, y_um: float | None, z_um: float | None, what: str
    ) -> None:
        """Raise `StageLimitError` naming ``what`` if a coordinate is outside the travel."""
        xy, z = self.stages.xy, self.stages.z
        for axis, value, (lo, hi), field in (
            ("x", x_um, xy.x_range_um, "stages.xy.x_range_um"),
            ("y", y_um, xy.y_range_um, "stages.xy.y_range_um"),
            ("z", z_um, z.z_range_um, "stages.z.z_range_um"),
        ):
            if value is not None and not lo <= value <= hi:
                raise StageLimitError(
                    f"{what}: {axis} = {value:g} µm is outside the stage travel "
                    f"[{lo:g}, {hi:g}] µm (hardware profile: {field})"
                )

    def with_square_sensor(self, size_px: int) -> HardwareProfile:
        """Return the same rig with a ``size_px`` × ``size_px`` camera sensor.

        For benchmarks and simulated data at other frame sizes; validated again.
        """
        return self.replace(
            camera=self.camera.replace(sensor_shape_px=(size_px, size_px)).model_dump()
        )

    @property
    def objective(self) -> Objective:
        """The default objective."""
        return next(o for o in self.objectives if o.name == self.default_objective)

    @property
    def field_of_view_um(self) -> tuple[float, float]:
        """(y, x) extent on the stage of what the camera sees through the default objective, µm.

        The frame's (height, width) as the camera's `Camera.orientation` lays it
        on the stage (a transposed or turned camera's, swapped).
        """
        h, w = self.camera.sensor_shape_px
        px = self.objective.pixel_size_um
        a, b, c, d = self.camera.orientation
        return (abs(c) * w + abs(d) * h) * px, (abs(a) * w + abs(b) * h) * px

    @classmethod
    def from_file(cls, path: str | Path) -> Self:
        """Load and validate a profile's YAML file; a relative ``micromanager_config`` is beside it.

        The config's path is made absolute against the file's folder, so that the
        rig is found whichever folder a command runs from, and a run's copy of the
        profile names it in full. A profile made in code keeps the path it is given.

        Raises
        ------
        ProfileError
            listing every problem with its field path.

        """
        profile = super().from_file(path)
        cfg = profile.micromanager_config
        if cfg is None or _anchored(cfg):
            return profile
        # (validated already: only the path changes)
        return profile.model_copy(
            update={"micromanager_config": Path(path).absolute().parent / cfg}
        )


def _anchored(path: Path) -> bool:
    """Return True for a path that does not depend on the current folder, on any platform.

    ``D:/rigs/ti2.cfg`` is one on Linux too, where pathlib takes it as relative: a
    Windows rig's profile checked elsewhere keeps its path as written. (A rooted
    ``/...`` or drive-relative ``D:...`` path counts as anchored too.)
    """
    return bool(PureWindowsPath(str(path)).anchor)


def builtin_profiles() -> dict[str, Path]:
    """Return the shipped profiles by name (``sim``, ``replay``, ...)."""
    candidates = [
        Path(str(resources.files("livescope") / "_hardware_profiles")),
        Path(__file__).resolve().parents[2] / "hardware_profiles",  # source checkout
    ]
    for folder in candidates:
        if folder.is_dir():
            return {p.stem: p for p in sorted(folder.glob("*.yaml"))}
    return {}


def builtin_profile_path(name: str) -> Path:
    """Return the path of a shipped profile, by its file's stem or the ``name`` it gives.

    A run's summary records the profile's ``name`` (``widefield-2048``), which may
    differ from its file's (``widefield-2048-scmos``): either finds it.

    Raises
    ------
    ProfileError
        if no shipped profile has that name.

    """
    found = builtin_profiles()
    if name in found:
        return found[name]
    for path in found.values():
        try:
            data = read_yaml(path, ProfileError)
        except ProfileError:
            continue  # (a broken file is reported when it is loaded by its own name)
        if isinstance(data, dict) and data.get("name") == name:
            return path
    raise ProfileError(name, [f"no shipped profile called {name!r}; have {sorted(found)}"])


def load_profile(path_or_name: str | Path | None = None) -> HardwareProfile:
    """Load a profile from a YAML path, or a shipped one by name (default ``sim``).

    A bare name without a suffix is a shipped profile unless a file of that
    name exists (a folder does not count: an output folder called ``sim`` or
    ``replay`` in the working directory hid the shipped profile).

    Raises
    ------
    ProfileError
        naming the file and every problem, or the unknown shipped name.

    """
    if path_or_name is None:
        path_or_name = "sim"
    p = Path(path_or_name)
    if not p.suffix and len(p.parts) == 1 and not p.is_file():
        p = builtin_profile_path(str(path_or_name))
    return HardwareProfile.from_file(p)
