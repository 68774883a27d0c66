"""Engine cards: what an ONNX model expects, what it outputs, how it was made.

``engines/<task>/<name>/card.yaml`` sits beside ``model.onnx``; loading an
engine checks the model's sha256 against the card and the model's inputs against
the card's, so a swapped or tampered file is refused with a clear error.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt, ValidationInfo, field_validator

from ._base import FrozenModel
from ._errors import ConfigError

__all__ = [
    "CardInput",
    "CardOutput",
    "DataRef",
    "EngineCard",
    "EngineCardError",
    "Normalisation",
    "PostProcess",
    "Tiling",
    "TrainingRecord",
]

_MAX_CLASS_NAME = 64
"""Most characters of a classifier's class name: the overlay bus carries a cell's class
(its ``state``) as text of at most this many, and viewers refuse a longer one."""


class EngineCardError(ConfigError):
    """An engine card is invalid."""

    kind = "engine card"


class CardInput(FrozenModel):
    """The model's image input."""

    name: str = Field(min_length=1)
    axes: Literal["NCYX"] = "NCYX"
    dtype: Literal["float32"] = "float32"
    channels: PositiveInt = 1
    multiple_of: PositiveInt = Field(default=8, description="H and W must be multiples of it.")


class Normalisation(FrozenModel):
    """How camera counts become model input (always in fp32, before any fp16 cast).

    ``percentile``: per frame, the ``low``/``high`` percentiles map to 0/1 (a frame
    whose two are equal, flat but for a few pixels, is scaled from its minimum to
    its maximum).
    ``fixed``: ``(counts - offset) / scale``.
    ``gamma`` < 1 then raises the result (negatives clipped to 0) to that power:
    0.5, the square root, evens out photon (Poisson) noise across intensities and
    keeps a nucleus 50x dimmer than the brightest one in the frame visible.
    """

    kind: Literal["percentile", "fixed"] = "percentile"
    low: float = Field(default=1.0, ge=0, le=100)
    high: float = Field(default=99.8, ge=0, le=100)
    offset: float = 0.0
    scale: PositiveFloat = 1.0
    gamma: float = Field(default=1.0, gt=0, le=1)


class CardOutput(FrozenModel):
    """One model output and the meaning of each of its channels."""

    name: str = Field(min_length=1)
    channels: tuple[str, ...] = Field(min_length=1)


class PostProcess(FrozenModel):
    """Post-processing to instances (segmentation engines).

    ``distance_watershed``: seeds at the distance map's peaks grow by watershed
    into the foreground (``seed_threshold``, ``seed_h``, ``smooth_px``).
    ``centre_votes``: each foreground pixel votes, along its predicted offset,
    for its nucleus' centre; the peaks of the vote density are the nuclei
    (``min_votes``, ``vote_sigma``, ``peak_radius``; the model's outputs must
    include the channels ``offset_y`` and ``offset_x``).
    ``neighbour_weight`` (distance_watershed, for models that also predict a
    ``neighbour`` map): seeds and watershed use the distance map minus this
    times the neighbour map, so that two touching nuclei part where they meet.
    """

    kind: Literal["distance_watershed", "centre_votes"] = "distance_watershed"
    fg_threshold: float = Field(default=0.5, gt=0, lt=1)
    seed_threshold: float = Field(default=0.5, gt=0, lt=1)
    min_size_px: int = Field(default=12, ge=0)
    seed_h: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Seeds are the distance map's maxima at least this high above the "
        "saddle to any higher one (h-maxima) and above seed_threshold; None: seeds are "
        "the regions above seed_threshold.",
    )
    smooth_px: float = Field(
        default=0.0, ge=0, description="Gaussian sigma (px) on the distance map before seeding."
    )
    min_score: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Objects whose mean foreground probability is below this are dropped.",
    )
    neighbour_weight: float = Field(
        default=0.0,
        ge=0,
        description="distance_watershed: the neighbour map (closeness to a touching "
        "nucleus) times this is taken off the distance map before seeding and growing; "
        "0: the distance map alone. The model's outputs must include channel neighbour.",
    )
    min_votes: float = Field(
        default=2.0,
        gt=0,
        description="centre_votes: the least vote density (votes per pixel, after smoothing) "
        "at a nucleus' centre.",
    )
    vote_sigma: float = Field(
        default=0.2,
        ge=0,
        description="centre_votes: Gaussian sigma on the votes, in units of the frame's "
        "typical nucleus radius (estimated from the offsets).",
    )
    peak_radius: float = Field(
        default=0.25,
        gt=0,
        description="centre_votes: a centre is the densest point within this radius, in units "
        "of the frame's typical nucleus radius (at least 1 px).",
    )

    def label_kwargs(self, scale: float = 1.0) -> dict[str, Any]:
        """Keyword arguments of the labelling function for maps of frames zoomed by ``scale``.

        Sizes are the model's: on maps at the frame's own size they shrink with
        ``scale`` (``labels_from_maps`` for distance_watershed,
        ``labels_from_votes`` for centre_votes).
        """
        common = {
            "fg_threshold": self.fg_threshold,
            "min_size_px": round(self.min_size_px / scale**2),
            "min_score": self.min_score,
        }
        if self.kind == "centre_votes":
            return {  # vote_sigma and peak_radius are relative to the nuclei: no scaling
                **common,
                "min_votes": self.min_votes,
                "vote_sigma": self.vote_sigma,
                "peak_radius": self.peak_radius,
            }
        return {
            **common,
            "seed_threshold": self.seed_threshold,
            "seed_h": self.seed_h,
            "smooth_px": self.smooth_px / scale,
        }


class Tiling(FrozenModel):
    """Frames larger than ``tile_px`` are run in overlapping tiles and stitched."""

    tile_px: PositiveInt = 1024
    overlap_px: int = Field(default=64, ge=0)


class DataRef(FrozenModel):
    """A data set used to train or validate the model."""

    name: str
    split: str = ""
    images: int = Field(default=0, ge=0)
    licence: str = ""


class TrainingRecord(FrozenModel):
    """How the model was trained (the command reproduces it)."""

    command: str
    seed: int = 0
    seconds: float = 0.0
    data: tuple[DataRef, ...] = ()
    augmentation: str = ""


class EngineCard(FrozenModel):
    """A model card. Load with ``EngineCard.from_file``."""

    error_type = EngineCardError

    name: str = Field(min_length=1)
    task: Literal["segmentation", "virtual_stain", "classification"]
    version: str = "1"
    description: str = ""
    model: str = "model.onnx"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    opset: PositiveInt = 17
    input: CardInput
    normalisation: Normalisation = Normalisation()
    outputs: tuple[CardOutput, ...] = Field(min_length=1)
    postprocess: PostProcess | None = None
    tiling: Tiling = Tiling()
    object_radius_px: PositiveFloat | None = Field(
        default=None,
        description="Typical object radius the model segments best, px (frames whose objects "
        "differ are rescaled to it when the user gives their object size).",
    )
    pixel_size_um: PositiveFloat | None = Field(
        default=None, description="Pixel size trained at, µm (None: mixed)."
    )
    target_normalisation: Normalisation | None = Field(
        default=None,
        description="Virtual-stain engines: how the fluorescence targets were normalised, so "
        "outputs are in those units and are scored after the same normalisation.",
    )
    crop_px: PositiveInt | None = Field(
        default=None,
        description="Classification engines: side of the square crop centred on each cell, "
        "px at the card's pixel size.",
    )
    torch_module: str | None = Field(
        default=None, description="'package.module:Class' that rebuilds the model in torch."
    )
    torch_kwargs: dict[str, int | float | str] = Field(default_factory=dict)
    training: TrainingRecord
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)

    @field_validator("outputs")
    @classmethod
    def _class_names_fit_the_overlay(
        cls, outputs: tuple[CardOutput, ...], info: ValidationInfo
    ) -> tuple[CardOutput, ...]:
        # a classifier's first output names its classes, and each cell's class goes
        # to the viewers as its overlay state: a name the overlay decoder refuses
        # (or "", which reads as no state) would lose every overlay message, in
        # every viewer, for the whole run
        if info.data.get("task") == "classification":
            for name in outputs[0].channels:
                if not 1 <= len(name) <= _MAX_CLASS_NAME:
                    raise ValueError(
                        f"the first output's channels name the classes: class name "
                        f"{name[:80]!r} is {len(name)} characters, a class name is 1 to "
                        f"{_MAX_CLASS_NAME} (the overlay sends each cell's to the viewers): "
                        "shorten it"
                    )
        return outputs
