"""The contract every frame consumer (recorder, ground-truth writer, bus) follows."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from numpy.typing import NDArray

from livescope.schema import FrameInfo

__all__ = ["PSink"]


@runtime_checkable
class PSink(Protocol):
    """Consumes acquired frames.

    `write` is called once per frame, in acquisition order, on livescope's writer
    thread (never on the acquisition thread); it returns when the frame is safe
    (e.g. on disk). The image (read-only) and ``info`` are shared by every
    sink: change neither. Once any sink's `write` raises, the run is
    cancelled and no later frame is written (to any sink). `close` is called
    once after the last frame, also after errors (not when the user abandons
    the recording with a second Ctrl+C).
    """

    def write(self, image: NDArray[Any], info: FrameInfo) -> None:
        """Consume one frame."""

    def close(self) -> None:
        """Finish; release files."""
