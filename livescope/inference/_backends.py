"""Inference backends behind one interface, found by providers.

Each backend reports whether it can run here (and why not), and loads an ONNX
model into a session that maps an fp32 (N, C, H, W) array to the model's first
output. Heavy libraries are imported only inside the backend that needs them.

Choice: by argument, then ``$LIVESCOPE_BACKEND``, then priority (lower first);
if none can run, the error lists every backend tried and why.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import io
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from livescope.schema import EngineCard, LivescopeError, write_atomic

__all__ = [
    "BACKENDS",
    "CROP_BATCH",
    "BackendUnavailable",
    "OnnxRuntimeBackend",
    "PBackend",
    "PSession",
    "TensorRTBackend",
    "TensorRTRTXBackend",
    "TorchBackend",
    "available_backends",
    "build_plan",
    "plan_cache_dir",
    "select_backend",
]

CROP_BATCH = (1, 256, 2048)
"""Crops per call of a per-cell classifier's TensorRT plan: least, the one it is tuned
for, most (`CellStateEngine` calls it with at most the last)."""

_TILE_BATCH = (1, 1, 4)
"""Tiles per call of a (tiled) engine's TensorRT plan: least, tuned for, most."""

logger = logging.getLogger("livescope")


class BackendUnavailable(LivescopeError):
    """No requested backend can run here; the message lists each one tried and why."""


class BackendRunError(LivescopeError):
    """A loaded model failed on an input (the runtime's own message, with the input's shape)."""


class _PlanCannotRun(LivescopeError):
    """A TensorRT plan that loads but cannot run here: building it again would not help."""


def _first_line(exc: BaseException) -> str:
    """Return the first line of an exception's message (its type's name if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _run_error(runtime: str, x: NDArray[Any], exc: BaseException) -> str:
    return f"{runtime} failed on input {tuple(x.shape)}: {_first_line(exc)}"


@runtime_checkable
class PSession(Protocol):
    """A loaded model. `run` maps fp32 (N, C, H, W) to the first output, fp32."""

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


# ----------------------------------------------------------------- ONNX Runtime


def _threads() -> int:
    """CPU threads per session: ``LIVESCOPE_THREADS`` if set (e.g. by the supervisor), else all."""
    raw = os.environ.get("LIVESCOPE_THREADS", "")
    if raw.strip():
        try:
            n = int(raw)
        except ValueError:
            raise LivescopeError(f"LIVESCOPE_THREADS must be a whole number, got {raw!r}") from None
        if n >= 1:
            return n
        raise LivescopeError(f"LIVESCOPE_THREADS must be >= 1, got {n}")
    return os.cpu_count() or 1


def _ort_session(model: Path, providers: list[str]) -> Any:
    """Create an ONNX Runtime session with livescope's options (see `_OrtSession`)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = _threads()
    opts.log_severity_level = 3
    if providers[:1] == ["CPUExecutionProvider"]:
        # no memory pattern on the CPU: from a session's second run it holds a
        # block planned for the input shape beside the arena. Without it the demo's
        # worker holds ~1.06 GB instead of ~1.52 GB once its engines have run twice,
        # each engine as fast (stain / segmentation / cell states 486 / 110 / 54 ms
        # per 512² field either way; ONNX Runtime 1.32, one thread, 2026-12-02)
        opts.enable_mem_pattern = False
    printed = io.StringIO()
    try:
        # (ONNX Runtime prints a provider that failed to start, and its own fallback, to
        # stdout: into a command's --json output; logged instead)
        with contextlib.redirect_stdout(printed):
            sess = ort.InferenceSession(str(model), sess_options=opts, providers=providers)
    except Exception as exc:  # (ORT's own error types derive from Exception only)
        raise LivescopeError(
            f"{model}: ONNX Runtime cannot load it as an ONNX model ({str(exc).strip()[:300]})"
        ) from exc
    finally:
        if text := printed.getvalue().strip():
            logger.warning("%s: ONNX Runtime said: %s", model, text)
    # a provider that fails mid-run is an error, not a silent move to the CPU (printed to
    # stdout, the engine still said to run on the GPU): `_OrtSession` falls back at load
    sess.disable_fallback()
    return sess


class _OrtSession:
    def __init__(self, model: Path, providers: list[str]) -> None:
        self._sess = _ort_session(model, providers)
        if providers[0] != "CPUExecutionProvider" and self._sess.get_providers()[0] == (
            "CPUExecutionProvider"
        ):  # the GPU provider did not start (e.g. no cuDNN): said, and run as on the CPU
            logger.warning(
                "%s: ONNX Runtime could not start %s; it runs on the CPU", model, providers[0]
            )
            self._sess = _ort_session(model, ["CPUExecutionProvider"])
        self.backend = "onnxruntime"
        self.device = self._sess.get_providers()[0]
        inp = self._sess.get_inputs()[0]
        self.precision = "fp16" if "float16" in inp.type else "fp32"  # the graph's, as exported
        self.input_name = inp.name
        self.input_rank = len(inp.shape)
        self.output_names = [o.name for o in self._sess.get_outputs()]

    def run(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        from onnxruntime.capi.onnxruntime_pybind11_state import (
            EPFail,
            Fail,
            InvalidArgument,
            RuntimeException,
        )

        try:
            out = self._sess.run(self.output_names[:1], {self.input_name: x})[0]
        # (ORT's errors derive from Exception only; EPFail: a GPU provider failed)
        except (Fail, InvalidArgument, EPFail, RuntimeException) as exc:
            raise BackendRunError(
                f"onnxruntime failed on input {tuple(x.shape)}: {str(exc).strip()}"
            ) from exc
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        del self._sess


class OnnxRuntimeBackend:
    """ONNX Runtime: CPU, or its CUDA execution provider where installed and a driver is.

    Its TensorRT provider is not used (plans are the tensorrt backend's, cached by key).
    """

    name = "onnxruntime"

    def _providers(self) -> list[str]:
        import onnxruntime as ort

        have = ort.get_available_providers()
        # (onnxruntime-gpu lists CUDA where no driver is: it would then run on the CPU)
        wanted = ["CUDAExecutionProvider"] if _cuda_driver() else []
        wanted.append("CPUExecutionProvider")
        return [p for p in wanted if p in have] or ["CPUExecutionProvider"]

    def available(self) -> tuple[bool, str]:
        """Return (True, providers) when onnxruntime imports."""
        if not _has("onnxruntime"):
            return False, "onnxruntime is not installed"
        return True, ", ".join(self._providers())

    def priority(self) -> int:
        """CUDA provider: 20; CPU only: 50."""
        ok, how = self.available()
        return 20 if ok and "CUDA" in how else 50

    def load(
        self,
        model: Path,
        card: EngineCard,
        *,
        precision: str = "fp32",
        shapes: Sequence[tuple[int, int]] = (),
    ) -> PSession:
        """Create an ONNX Runtime session (fp32 graph; precision is the graph's)."""
        return _OrtSession(model, self._providers())


# ----------------------------------------------------------------- torch

_capture_streams: dict[int, Any] = {}  # CUDA device -> the side stream every graph is made on
_capture_lock = threading.Lock()  # one capture at a time (they share the stream and clear below)


def _capture_stream(torch: Any) -> Any:
    """Return the one side stream on which CUDA graphs are warmed up and captured."""
    device = torch.cuda.current_device()
    if device not in _capture_streams:
        _capture_streams[device] = torch.cuda.Stream()
    return _capture_streams[device]


def _drop_cublas_workspaces(torch: Any) -> None:
    """Forget torch's cached cuBLAS workspaces (they are allocated again when next needed).

    cuBLAS keeps a workspace (32 MiB on Hopper) per stream it ran on, for the
    life of the process: each engine warmed up on a stream of its own left one
    behind after ``close()`` (33 MB per cell-state engine, seen on an H200).
    Dropped just before a capture, the graph's own workspace is allocated in
    its private memory pool (and freed with the graph); dropped again just
    after, no cached entry points into that pool, so no later capture or
    clear, ours or another library's, can take it from under the graph. This
    is what torch's own graph trees do. torch has no public call for it.
    """
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)  # noqa: SLF001
    if clear is not None:
        torch.cuda.synchronize()
        clear()


def _torch_module(card: EngineCard) -> Any:
    """Build the card's ``torch_module`` with its ``torch_kwargs``.

    Raises
    ------
    LivescopeError
        naming the card's fields when the class cannot be imported or built.

    """
    spec = str(card.torch_module)
    mod_name, _, cls_name = spec.partition(":")
    if not (mod_name and cls_name):
        raise LivescopeError(
            f"engine {card.name}: torch_module {spec!r} is not 'package.module:Class'"
        )
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise LivescopeError(
            f"engine {card.name}: the card's torch_module {spec} cannot be imported "
            f"({_first_line(exc)})"
        ) from exc
    try:
        return cls(**card.torch_kwargs)
    except (TypeError, ValueError) as exc:  # (arguments the class does not take)
        raise LivescopeError(
            f"engine {card.name}: {spec} cannot be built with the card's torch_kwargs "
            f"{card.torch_kwargs} ({_first_line(exc)})"
        ) from exc


class _TorchSession:
    def __init__(self, model: Path, card: EngineCard, precision: str) -> None:
        import onnx
        import torch
        from onnx import numpy_helper

        if not card.torch_module:
            raise LivescopeError(f"engine {card.name}: the card names no torch_module")
        net = _torch_module(card)
        weights = {
            init.name: torch.from_numpy(numpy_helper.to_array(init).copy())
            for init in onnx.load(str(model)).graph.initializer
        }
        try:
            missing, _ = net.load_state_dict(weights, strict=False)
        except RuntimeError as exc:  # (parameters of other shapes than the ONNX weights)
            raise LivescopeError(
                f"engine {card.name}: the ONNX weights do not fit {card.torch_module} built "
                f"with torch_kwargs {card.torch_kwargs} ({_first_line(exc)})"
            ) from exc
        missing = [m for m in missing if not m.endswith("num_batches_tracked")]
        if missing:
            raise LivescopeError(
                f"engine {card.name}: {card.torch_module} has parameters the ONNX file lacks: "
                f"{missing[:5]}"
            )
        self._torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cpu" and os.environ.get("LIVESCOPE_THREADS", "").strip():
            # (the supervisor's share of the cores, as ONNX Runtime keeps to; torch
            # otherwise takes every core. Its pool is the process's: one setting.)
            torch.set_num_threads(_threads())
        self._half = precision == "fp16" and self.device == "cuda"
        self.precision = "fp16" if self._half else "fp32"  # fp16 on CUDA only
        if precision == "fp16" and self.device == "cpu":  # (it ran fp32 without a word)
            logger.warning(
                "engine %s: torch on the CPU runs fp32, not the %s asked (fp16 runs on a CUDA "
                "GPU only; ask for fp32 to run on the CPU)",
                card.name, precision,
            )  # fmt: skip
        net = net.eval().to(self.device)
        self._net = net.half() if self._half else net
        self.backend = "torch"
        self.input_name = card.input.name
        self.input_rank = 4
        self.output_names = [o.name for o in card.outputs]
        self._graphs: dict[tuple[int, ...], tuple[Any, Any, Any]] = {}
        self._open = True

    def _graph(self, shape: tuple[int, ...]) -> tuple[Any, Any, Any]:
        """Capture a CUDA graph for ``shape`` (static input and output tensors)."""
        with _capture_lock:
            return self._capture(shape)

    def _capture(self, shape: tuple[int, ...]) -> tuple[Any, Any, Any]:
        torch = self._torch
        dtype = torch.float16 if self._half else torch.float32
        static_in = torch.zeros(shape, device="cuda", dtype=dtype)
        stream = _capture_stream(torch)
        stream.wait_stream(torch.cuda.current_stream())
        # fp32 means fp32: no TF32 convolutions (they would break parity with the CPU at
        # 1e-3); cudnn picks the fastest algorithm once, for the captured shape
        cudnn = torch.backends.cudnn.flags(
            enabled=True, benchmark=True, deterministic=False, allow_tf32=self._half
        )
        with cudnn, torch.cuda.stream(stream), torch.no_grad():
            for _ in range(3):  # warm up (and let cudnn choose) before capture
                self._net(static_in)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        cudnn = torch.backends.cudnn.flags(
            enabled=True, benchmark=True, deterministic=False, allow_tf32=self._half
        )
        _drop_cublas_workspaces(torch)  # the graph's own goes into its private pool
        with cudnn, torch.cuda.graph(graph, stream=stream), torch.no_grad():
            static_out = self._net(static_in)
        _drop_cublas_workspaces(torch)
        return graph, static_in, static_out

    def run(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        torch = self._torch
        # normalised in fp32 by the engine; cast to fp16 only here, on the device
        t = torch.from_numpy(np.ascontiguousarray(x))
        try:
            if self.device == "cpu":
                with torch.no_grad():
                    return self._net(t).numpy().astype(np.float32, copy=False)  # type: ignore[no-any-return]
            key = tuple(x.shape)
            if key not in self._graphs:
                self._graphs[key] = self._graph(key)
            graph, static_in, static_out = self._graphs[key]
            static_in.copy_(t.to("cuda", non_blocking=False).to(static_in.dtype))
            graph.replay()
            return static_out.float().cpu().numpy()  # type: ignore[no-any-return]
        except RuntimeError as exc:  # torch's errors (shapes, CUDA, out of memory)
            raise BackendRunError(_run_error(f"torch ({self.device})", x, exc)) from exc

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self._graphs.clear()
        del self._net
        if self.device == "cuda":
            self._torch.cuda.empty_cache()


class TorchBackend:
    """torch: rebuilds the model from the card's ``torch_module`` and the ONNX weights.

    On CUDA it runs fp16 (when asked) with CUDA graphs, for GPUs without TensorRT.
    """

    name = "torch"

    def available(self) -> tuple[bool, str]:
        """Return (True, device) when torch and onnx are installed ("cpu" without a GPU)."""
        if not _has("torch"):
            return False, "torch is not installed (the train extra)"
        if not _has("onnx"):
            return False, "onnx is not installed (the train extra)"
        ok, how = _cuda_device()
        return True, how if ok else "cpu"

    def priority(self) -> int:
        """CUDA: 15; CPU: 60 (behind ONNX Runtime)."""
        return 15 if _cuda_device()[0] else 60

    def load(
        self,
        model: Path,
        card: EngineCard,
        *,
        precision: str = "fp32",
        shapes: Sequence[tuple[int, int]] = (),
    ) -> PSession:
        """Rebuild the torch module and load the ONNX initialisers into it."""
        return _TorchSession(model, card, precision)


# ----------------------------------------------------------------- TensorRT (and -RTX)


def _user_cache_root() -> Path:
    """Return the folder this OS keeps users' caches in (the one its cleaners know).

    %LOCALAPPDATA% on Windows (~/AppData/Local without it), ~/Library/Caches on
    macOS, else ``$XDG_CACHE_HOME`` or ~/.cache (a relative ``$XDG_CACHE_HOME`` is
    ignored, as the XDG spec says: it would move with the working directory).
    """
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        return Path(local) if local else Path.home() / "AppData" / "Local"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"


def plan_cache_dir() -> Path:
    """Where compiled plans are cached: ``plans`` in ``$LIVESCOPE_CACHE`` or the user's cache.

    The user's cache is a ``livescope`` folder in the OS's cache folder: in
    %LOCALAPPDATA% on Windows, ~/Library/Caches/livescope on macOS,
    ``$XDG_CACHE_HOME/livescope`` or ~/.cache/livescope elsewhere.
    """
    root = os.environ.get("LIVESCOPE_CACHE") or _user_cache_root() / "livescope"
    return Path(root) / "plans"


_PLAN_NAME_MAX = 120
"""Most characters of a plan cache file's name. Windows refuses a path over 260
characters (MAX_PATH) unless long paths are enabled, and TensorRT's error then
does not say why; a deep user profile's cache folder takes some 80 of them."""


def plan_file(*parts: str, suffix: str = ".plan") -> Path:
    """Return the plan cache's file named by ``parts``, joined by "-".

    Each part keeps ASCII letters, digits, ".", "_" and "-" only (others become
    "_"): an engine's name or a GPU's is not a path ("nuclei/v2", "..", ":"). A
    name over `_PLAN_NAME_MAX` characters (an engine's name is as long as its card
    says) keeps its beginning and ends in a hash of the whole name, so that names
    that differ only past the cut are still two files.
    """
    safe = ("".join(ch if ch.isascii() and (ch.isalnum() or ch in "._-") else "_"
                    for ch in part).strip(".") or "_" for part in parts)  # fmt: skip
    name = "-".join(safe) + suffix
    if len(name) > _PLAN_NAME_MAX:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        keep = _PLAN_NAME_MAX - len(suffix) - len(digest) - 1
        name = f"{name[:keep]}-{digest}{suffix}"
    return plan_cache_dir() / name


def _plan_key(
    card: EngineCard,
    gpu: str,
    trt_version: str,
    precision: str,
    shapes: Sequence[tuple[int, int]],
    *,
    library: str = "tensorrt",
) -> str:
    """Hash everything a plan depends on: the model, GPU, TensorRT, precision, profile.

    The precision is the one the plan is built in: ``precision`` (the one asked)
    where ``library`` (the TensorRT module's name) builds in it, not where it
    takes the ONNX graph's (`_takes_graph_precision`), which the model's sha256
    already fixes: fp16 and fp32 asked of TensorRT-RTX built two identical plans,
    minutes each. (Plans cached by TensorRT >= 11 or TensorRT-RTX before this
    were keyed by the precision asked: each is built once more.)

    The profile is the (min, opt, max) input shapes the plan is built for
    (`input_profile`), not what they were made from: the frames' tile shapes (as
    ints: numpy's or a YAML list give the same key), or, with none, the card's
    ``tiling.tile_px`` and ``input.multiple_of``; for a classifier its card's
    ``crop_px`` and the batch sizes (not the frames' shapes: its crops are the
    same whatever the frame's). None of the card's fields is in the ONNX file:
    a key without them loaded a stale plan after the card was edited.
    """
    profile = repr((card.input.name, input_profile(card, shapes)))
    built = "graph" if _takes_graph_precision(library, trt_version) else precision
    text = "|".join([card.sha256, gpu, trt_version, built, profile])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _store(path: Path, data: bytes) -> bool:
    """Write a cache file whole (a reader never sees half of it); warn and go on if it cannot."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
    except OSError as exc:
        logger.warning("cannot write %s (%s); it is not cached", path, _first_line(exc))
        return False
    return True


_S = TypeVar("_S")


def _cached_plan(path: Path, build: Callable[[], bytes], load: Callable[[bytes], _S]) -> _S:
    """Load the plan cached at ``path``, else (or if it does not load) build, cache, load it.

    A cached plan that does not load (half written by a process that died, or
    left by another build) is built again and replaced; a cache that cannot be
    written is warned about, and the plan built is loaded all the same. A plan
    that loads but cannot run here (`_PlanCannotRun`: no GPU memory, a tensor
    type without a buffer) is not built again: a new one would fail the same way.
    """
    plan = None
    with contextlib.suppress(OSError):  # (not there, or a cache that cannot be read)
        plan = path.read_bytes()
    if plan is not None:
        try:
            return load(plan)
        except _PlanCannotRun:
            raise
        except LivescopeError as exc:
            logger.warning("%s does not load (%s); building it again", path, _first_line(exc))
    plan = build()
    _store(path, plan)
    return load(plan)


Shape4 = tuple[int, int, int, int]


def input_profile(card: EngineCard, shapes: Sequence[tuple[int, int]]) -> tuple[Shape4, ...]:
    """Return the (min, opt, max) input shapes (N, C, H, W) a plan is built for.

    A classifier takes its card's crops, many per call. A frame engine takes
    batches of tiles of ``shapes`` (the tiles of the frames it will see, see
    `TilePlan.tile_shapes`); without them (no frame shape given), every tile
    `Engine` can make: from the model's pooling grid to a whole tile (the last
    tile of a row runs up to ``multiple_of`` px longer), at its best for a tile.
    """
    c = card.input.channels
    if card.crop_px is not None:  # a per-cell classifier: fixed crops, many per call
        s = card.crop_px
        lo, opt, hi = CROP_BATCH
        return (lo, c, s, s), (opt, c, s, s), (hi, c, s, s)
    if shapes:
        hs, ws = [int(s[0]) for s in shapes], [int(s[1]) for s in shapes]
        return (
            (_TILE_BATCH[0], c, min(hs), min(ws)),
            (_TILE_BATCH[1], c, max(hs), max(ws)),
            (_TILE_BATCH[2], c, max(hs), max(ws)),
        )
    a, tile = card.input.multiple_of, card.tiling.tile_px
    top = -(-(tile + a - 1) // a) * a  # (the longest last tile, padded to the grid)
    return (
        (_TILE_BATCH[0], c, a, a),
        (_TILE_BATCH[1], c, -(-tile // a) * a, -(-tile // a) * a),
        (_TILE_BATCH[2], c, top, top),
    )


_GRAPH_PRECISION = {"FLOAT": "fp32", "HALF": "fp16", "BF16": "bf16"}
"""The precision of an ONNX graph, by the TensorRT type (`DataType` name) of its input."""


def _dtype_precision(dtype: Any) -> str:
    """Return the precision of a TensorRT `DataType` (an ONNX graph's input, or a plan's)."""
    return _GRAPH_PRECISION.get(getattr(dtype, "name", ""), str(dtype))


def _takes_graph_precision(library: str, version: str) -> bool:
    """Return whether a TensorRT module (name, version) builds in the ONNX graph's precision.

    TensorRT 10 builds fp16 kernels when asked (a builder flag); TensorRT >= 11
    and TensorRT-RTX take precision from the graph (strongly typed), whatever is
    asked: an fp16 plan needs a model exported in fp16.
    """
    return library.startswith("tensorrt_rtx") or int(version.split(".")[0]) >= 11


def _plan_precision(
    card: EngineCard, library: str, version: str, asked: str, graph: str, *, warn: bool = True
) -> str:
    """Return the precision a plan is built in, warning (if ``warn``) when it is not the one asked.

    Called by `build_plan` once the ONNX graph is parsed, and by `_TrtSession` for
    the plan it loads (cached, or just built: then not warned twice); ``library``
    and ``version`` are the TensorRT module's name and version, ``graph`` the graph
    input's precision (`_takes_graph_precision` says which of the two is built).
    """
    built = graph if _takes_graph_precision(library, version) else asked
    if warn and built != asked:  # (it was built in the graph's precision without a word)
        logger.warning(
            "engine %s: %s %s builds its plan in %s, not the %s asked: it takes precision "
            "from the ONNX model, which is %s (export the model in %s for a plan in %s)",
            card.name, library, version, built, asked, graph, asked, asked,
        )  # fmt: skip
    return built


def build_plan(
    trt: Any,
    model: Path,
    card: EngineCard,
    *,
    precision: str,
    shapes: Sequence[tuple[int, int]],
    compute_capabilities: Sequence[str] = (),
    timing_cache: Path | None = None,
) -> bytes:
    """Build a serialized plan from ONNX with one optimisation profile covering ``shapes``.

    ``trt`` is the ``tensorrt`` or ``tensorrt_rtx`` module. TensorRT >= 11 (and
    TensorRT-RTX) take precision from the ONNX graph (strongly typed); TensorRT 10
    enables fp16 kernels with a builder flag. A plan built in another precision
    than ``precision`` is warned about (`_plan_precision`). ``compute_capabilities``
    (RTX only, e.g. ``["SM89"]``) builds ahead of time without a GPU.

    Raises
    ------
    LivescopeError
        naming the parser's errors or the failed build.

    """
    logger_ = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger_)
    major = int(str(trt.__version__).split(".")[0])
    is_rtx = trt.__name__.startswith("tensorrt_rtx")
    flags = 0
    if not is_rtx and major >= 11 and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger_)
    if not parser.parse_from_file(str(model)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise LivescopeError(f"engine {card.name}: {trt.__name__} cannot parse {model}: {errors}")
    graph = _dtype_precision(network.get_input(0).dtype)
    _plan_precision(card, trt.__name__, str(trt.__version__), precision, graph)
    config = builder.create_builder_config()
    if not is_rtx and major < 11 and precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    if compute_capabilities:
        known = [n for n in dir(trt.ComputeCapability) if n.startswith("SM")]
        if unknown := [cc for cc in compute_capabilities if cc not in known]:
            raise LivescopeError(
                f"engine {card.name}: unknown compute capability {', '.join(unknown)}; "
                f"{trt.__name__} {trt.__version__} knows {', '.join(known)}"
            )
        config.num_compute_capabilities = len(compute_capabilities)
        for i, cc in enumerate(compute_capabilities):
            config.set_compute_capability(getattr(trt.ComputeCapability, cc), i)
    if is_rtx:  # (its timing-cache calls are deprecated no-ops that warn)
        timing_cache = None
    if timing_cache is not None and hasattr(config, "create_timing_cache"):
        blob = b""
        with contextlib.suppress(OSError):
            blob = timing_cache.read_bytes()
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    profile.set_shape(card.input.name, *input_profile(card, shapes))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise LivescopeError(f"engine {card.name}: {trt.__name__} failed to build a plan")
    if timing_cache is not None and hasattr(config, "get_timing_cache"):
        _store(timing_cache, bytes(config.get_timing_cache().serialize()))  # (the plan is kept)
    return bytes(plan)


class _TrtSession:
    """Runs a plan with ``execute_async_v3``; I/O buffers are torch CUDA tensors.

    ``precision`` is the one asked; the session's ``precision`` is the one its plan
    was built in (`_plan_precision`, warned about when another unless not ``warn``).
    """

    def __init__(
        self,
        trt: Any,
        plan: bytes,
        card: EngineCard,
        backend: str,
        *,
        precision: str = "fp32",
        warn: bool = True,
    ) -> None:
        import torch

        self._torch = torch
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise LivescopeError(f"engine {card.name}: cannot deserialize the {backend} plan")
        self._context = self._engine.create_execution_context()
        if self._context is None:  # (None, not an error: the first run then failed on None)
            raise _PlanCannotRun(
                f"engine {card.name}: {backend} cannot make an execution context for its plan "
                "(most often no GPU memory left for its activations; TensorRT's log says why)"
            )
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_name = next(n for n in names if self._engine.get_tensor_mode(n) == mode)
        self.output_names = [n for n in names if self._engine.get_tensor_mode(n) != mode]
        self.input_rank = len(self._engine.get_tensor_shape(self.input_name))
        # (the plan's input has the ONNX graph's type: where the library builds in the
        # graph's precision, the plan is in it, cached or just built; the Engine said
        # the one asked until now)
        graph = _dtype_precision(self._engine.get_tensor_dtype(self.input_name))
        version = str(trt.__version__)
        self.precision = _plan_precision(card, trt.__name__, version, precision, graph, warn=warn)
        self.backend = backend
        self.device = torch.cuda.get_device_name(torch.cuda.current_device())
        self._stream = torch.cuda.Stream()
        self._dtypes = {n: self._torch_dtype(trt, self._engine.get_tensor_dtype(n)) for n in names}

    def _torch_dtype(self, trt: Any, dt: Any) -> Any:
        """Return the torch dtype of a plan's tensor (a buffer of another would be misread)."""
        torch = self._torch
        names = ("float32", "float16", "bfloat16", "int32", "int64", "int8", "uint8", "bool")
        table = {getattr(trt, n): getattr(torch, n) for n in names if hasattr(trt, n)}
        if dt not in table:
            raise _PlanCannotRun(f"a TensorRT plan's tensor of type {dt} has no torch buffer type")
        return table[dt]

    def run(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        torch = self._torch
        ctx = self._context
        # (checked before the input goes to the GPU: a refused input costs no copy)
        if not ctx.set_input_shape(self.input_name, tuple(int(n) for n in x.shape)):
            lo, _, hi = self._engine.get_tensor_profile_shape(self.input_name, 0)
            raise BackendRunError(
                f"{self.backend}: input {tuple(x.shape)} is outside the plan's optimisation "
                f"profile, {tuple(lo)} to {tuple(hi)} (N, C, H, W): the shapes it was built for"
            )
        try:
            inp = torch.from_numpy(np.ascontiguousarray(x)).to("cuda")
            inp = inp.to(self._dtypes[self.input_name])  # fp32 normalised first, cast on device
            ctx.set_tensor_address(self.input_name, inp.data_ptr())
            outs = {}
            for name in self.output_names:
                shape = tuple(ctx.get_tensor_shape(name))
                outs[name] = torch.empty(shape, device="cuda", dtype=self._dtypes[name])
                ctx.set_tensor_address(name, outs[name].data_ptr())
            # (the input's copy and cast, and the outputs, were made on the current stream)
            self._stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self._stream):
                if not ctx.execute_async_v3(self._stream.cuda_stream):
                    raise BackendRunError(
                        f"{self.backend}: execute_async_v3 failed on input {tuple(x.shape)}"
                    )
            self._stream.synchronize()
            return outs[self.output_names[0]].float().cpu().numpy()  # type: ignore[no-any-return]
        except RuntimeError as exc:  # CUDA errors, out of memory
            raise BackendRunError(_run_error(self.backend, x, exc)) from exc

    def close(self) -> None:
        del self._context, self._engine, self._runtime
        self._torch.cuda.empty_cache()


class TensorRTBackend:
    """NVIDIA TensorRT: plans built on the target GPU from ONNX, cached by key."""

    name = "tensorrt"
    module = "tensorrt"
    extra = "gpu"
    """The livescope extra that installs it (said where it is missing)."""

    def installed(self) -> bool:
        """Return True if the library is importable (a GPU may still be missing)."""
        return _has(self.module)

    def available(self) -> tuple[bool, str]:
        """Return (True, GPU) when the library loads and a CUDA GPU is present.

        Raises
        ------
        ImportError, OSError
            if the library is installed but does not load (e.g. a CUDA library it
            needs is missing): `_can_run` names it a backend that cannot run.

        """
        if not _has(self.module):
            return False, f"{self.module} is not installed (the {self.extra} extra)"
        ok, how = _cuda_device()
        if ok:  # (imported here, not first in load: one that does not load is passed over)
            importlib.import_module(self.module)
        return ok, how

    def priority(self) -> int:
        """TensorRT first when it can run."""
        return 10

    def load(
        self,
        model: Path,
        card: EngineCard,
        *,
        precision: str = "fp32",
        shapes: Sequence[tuple[int, int]] = (),
    ) -> PSession:
        """Build (or reuse from the cache) a plan for this GPU and load it.

        The session's ``precision`` is the plan's, which with TensorRT >= 11 and
        TensorRT-RTX is the ONNX graph's whatever is asked (`_plan_precision`).
        """
        trt = importlib.import_module(self.module)
        import torch

        gpu = torch.cuda.get_device_name(torch.cuda.current_device())  # (the one it runs on)
        version = str(trt.__version__)
        key = _plan_key(card, gpu, version, precision, shapes, library=trt.__name__)
        cache = plan_file(card.name, self.name, key)
        # (a timing cache of another TensorRT version is refused: one per version)
        timing = plan_file("timing", self.name, version, gpu, suffix=".cache")
        built = False

        def build() -> bytes:
            nonlocal built
            built = True
            return build_plan(
                trt, model, card, precision=precision, shapes=shapes, timing_cache=timing
            )

        # (a plan just built was warned about by build_plan; a cached one, maybe built
        # for another precision asked (one key for both), is warned about on loading)
        return _cached_plan(
            cache,
            build,
            lambda plan: _TrtSession(
                trt, plan, card, self.name, precision=precision, warn=not built
            ),
        )


class TensorRTRTXBackend(TensorRTBackend):
    """NVIDIA TensorRT-RTX (from PyPI): runs on RTX-class GPUs; builds ahead of time anywhere."""

    name = "tensorrt-rtx"
    module = "tensorrt_rtx"
    extra = "rtx"

    def available(self) -> tuple[bool, str]:
        """Return (True, GPU) when the library loads and the GPU is one it can build for.

        TensorRT-RTX is for RTX-class GPUs: it has no kernels for others (e.g. no
        Hopper, SM90: an H100 or H200), whose plan would fail to build where torch
        could run the engine.
        """
        ok, how = super().available()
        if not ok:
            return ok, how
        trt = importlib.import_module(self.module)
        sm, known = _gpu_sm(), [n for n in dir(trt.ComputeCapability) if n.startswith("SM")]
        if sm not in known:
            return False, (
                f"{how} ({sm}) is not a GPU {self.module} {trt.__version__} builds for "
                f"({', '.join(known)})"
            )
        return True, how

    def priority(self) -> int:
        """Behind TensorRT."""
        return 12

    def build_ahead_of_time(
        self,
        model: Path,
        card: EngineCard,
        shapes: Sequence[tuple[int, int]],
        compute_capabilities: Sequence[str] = ("SM80", "SM86", "SM89"),
        *,
        precision: str = "fp32",
    ) -> bytes:
        """Build a plan for the given GPU generations without a GPU (e.g. in CI).

        The plan's precision is the ONNX graph's: another ``precision`` is warned
        about (`_plan_precision`), not built.
        """
        if not _has(self.module):
            raise BackendUnavailable(f"{self.module} is not installed")
        trt = importlib.import_module(self.module)
        return build_plan(
            trt, model, card, precision=precision, shapes=shapes,
            compute_capabilities=compute_capabilities,
        )  # fmt: skip


BACKENDS: tuple[PBackend, ...] = (
    TensorRTBackend(),
    TensorRTRTXBackend(),
    TorchBackend(),
    OnnxRuntimeBackend(),
)


def _can_run(b: PBackend) -> tuple[bool, str, int]:
    """Return (can run here, why / on what, priority) of a backend.

    A library that is installed but fails to load (e.g. torch or TensorRT missing a
    CUDA library) is a backend that cannot run, named with its error, not an error
    that keeps every other backend from being chosen.
    """
    try:
        ok, why = b.available()
        return ok, why, b.priority()
    except (ImportError, OSError, RuntimeError) as exc:
        return False, f"it fails to load: {type(exc).__name__}: {_first_line(exc)}", sys.maxsize


def backend_status() -> list[tuple[PBackend, bool, str]]:
    """(backend, can run here, why / on what) for every known backend, in `BACKENDS` order.

    A backend whose library fails to load cannot run (`_can_run`).
    """
    return [(b, *_can_run(b)[:2]) for b in BACKENDS]


def available_backends() -> list[tuple[str, bool, str]]:
    """(name, can run here, why / on what) for every known backend."""
    return [(b.name, ok, why) for b, ok, why in backend_status()]


def select_backend(name: str | None = None) -> PBackend:
    """Pick a backend: ``name``, else ``$LIVESCOPE_BACKEND``, else the best available.

    Raises
    ------
    BackendUnavailable
        listing each backend tried and why it cannot run.

    """
    by_name = {b.name: b for b in BACKENDS}
    # (stripped: a value read from a file may end in a space or a Windows line end)
    if name is not None and not name.strip():  # `--backend ''`: not the default unsaid
        raise BackendUnavailable(
            f"an empty backend name; known: {', '.join(by_name)} (leave it out for the best "
            "available)"
        )
    wanted = (name or os.environ.get("LIVESCOPE_BACKEND", "")).strip() or None
    if wanted is not None:
        where = "" if name else " (from the LIVESCOPE_BACKEND environment variable)"
        if wanted not in by_name:
            raise BackendUnavailable(
                f"unknown backend {wanted!r}{where}; known: {', '.join(by_name)}"
            )
        ok, why, _ = _can_run(by_name[wanted])
        if not ok:
            raise BackendUnavailable(f"backend {wanted!r}{where} cannot run here: {why}")
        return by_name[wanted]
    tried = []
    for b, (ok, why, _) in sorted(
        ((b, _can_run(b)) for b in BACKENDS), key=lambda item: item[1][2]
    ):
        if ok:
            return b
        tried.append(f"{b.name}: {why}")
    raise BackendUnavailable("no inference backend can run here:\n  " + "\n  ".join(tried))
