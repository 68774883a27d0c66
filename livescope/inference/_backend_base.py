"""What every inference backend builds on: errors, the session and backend contracts, GPU probes.

`_backends` (ONNX Runtime, torch, the choice of backend) and `_tensorrt`
(TensorRT and TensorRT-RTX) both import from here, and from nowhere else in this
package, so neither imports the other's module while it is half loaded.

The probes (`_has`, `_cuda_driver`, `_cuda_device`, `_gpu_sm`) are called through
this module (``_backend_base._has(...)``), not imported by name: a test that
patches one here patches it for every backend at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.metadata
import importlib.util
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from livescope.schema import EngineCard, LivescopeError

__all__ = ["BackendRunError", "BackendUnavailable", "PBackend", "PSession"]

logger = logging.getLogger("livescope")


class BackendUnavailable(LivescopeError):
    """No requested backend can run here; the message lists each one tried and why."""


class BackendRunError(LivescopeError):
    """A loaded model failed on an input (the runtime's own message, with the input's shape)."""


def _first_line(exc: BaseException) -> str:
    """Return the first line of an exception's message (its type's name if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _run_error(runtime: str, x: NDArray[Any], exc: BaseException) -> str:
    return f"{runtime} failed on input {tuple(x.shape)}: {_first_line(exc)}"


def _input_problem(
    card: EngineCard, name: str, rank: int, channels: int | None = None
) -> str | None:
    """Say how a model's input differs from its card's (None: it matches the card).

    ``name`` and ``rank`` are the model's input's; ``channels`` its size along the
    card's ``C`` axis (None: not known, or dynamic). Called by `Engine` on a loaded
    session and by `build_plan` on the parsed ONNX network, before a build that
    would only say it failed: both say a mismatch in the same words.
    """
    want = card.input
    if name != want.name:
        return (
            f"the card's input is {want.name!r}, the model's is {name!r} (card and model do "
            "not match)"
        )
    if rank != len(want.axes):
        return (
            f"the card's input has axes {want.axes}, the model's input has rank {rank} (card "
            "and model do not match)"
        )
    if channels is not None and channels != want.channels:
        return (
            f"the card's input {want.name!r} has {want.channels} channel(s), the model's has "
            f"{channels} (card and model do not match)"
        )
    return None


@runtime_checkable
class PSession(Protocol):
    """A loaded model. `run` maps fp32 (N, C, H, W) to the card's output, fp32.

    The output is the one the card names (``outputs[0]``), not the model's first:
    an export may give more (logits before probabilities). A session may also say
    its graph input's element type (``input_type``, e.g. ``"float16"``) and the
    types it casts the fp32 batch to (``input_casts``); `Engine` refuses at load a
    graph whose input the session cannot feed.
    """

    backend: str
    device: str
    input_name: str
    input_rank: int
    output_names: list[str]

    def run(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """Run one batch (called from one thread at a time)."""

    def close(self) -> None:
        """Free the session and its device memory."""


@runtime_checkable
class PBackend(Protocol):
    """A provider of sessions."""

    name: str

    def available(self) -> tuple[bool, str]:
        """Return (can run here, why not / on what)."""

    def priority(self) -> int:
        """Lower runs first when no backend is named."""

    def load(
        self,
        model: Path,
        card: EngineCard,
        *,
        precision: str = "fp32",
        shapes: Sequence[tuple[int, int]] = (),
    ) -> PSession:
        """Load ``model`` for frames (tiles) of ``shapes`` (H, W)."""


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@functools.cache
def _cuda_driver() -> bool:
    """Return whether NVIDIA's CUDA driver library loads here (no GPU is touched).

    Checked before torch is imported to ask for a GPU: where there is no driver,
    importing torch only to hear "no GPU" cost a CPU-only worker ~0.18 GB of
    memory and its import time. A ROCm build of torch (AMD GPUs, no CUDA
    driver) is always asked.
    """
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        if "rocm" in importlib.metadata.version("torch"):
            return True
    names = {"win32": ("nvcuda.dll",), "darwin": ()}.get(sys.platform, ("libcuda.so.1",))
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


def _cuda_device() -> tuple[bool, str]:
    """Return whether torch sees a CUDA GPU (torch allocates the device buffers)."""
    if not _has("torch"):
        return False, "torch is not installed (needed for CUDA device buffers)"
    if not _cuda_driver():
        return False, "no NVIDIA CUDA driver on this machine (no GPU for torch)"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA GPU visible to torch"
    return True, torch.cuda.get_device_name(0)


def _gpu_sm() -> str:
    """Return the current CUDA GPU's compute capability as TensorRT names it (e.g. "SM89")."""
    import torch

    major, minor = torch.cuda.get_device_capability(torch.cuda.current_device())
    return f"SM{major}{minor}"
