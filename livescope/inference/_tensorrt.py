"""TensorRT and TensorRT-RTX: plans built from ONNX on the target GPU, cached by key.

Where plans are cached (`plan_cache_dir`, `plan_file`), what a plan's key holds
(`_plan_key`), the input shapes it is built for (`input_profile`), the precision
it is built in (`_plan_precision`), how it is built (`build_plan`) and run
(`_TrtSession`), and the two backends (`TensorRTBackend`, `TensorRTRTXBackend`).

It builds on `_backend_base` (errors, `PSession`, the GPU probes) only;
`_backends` imports it to list its backends in `BACKENDS` and re-exports its names.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from livescope.schema import EngineCard, LivescopeError, write_atomic

# (the GPU probes `_has`, `_cuda_device` and `_gpu_sm` are called through the module,
# not imported by name: tests patch them on `_backend_base`, for every backend at once)
from . import _backend_base
from ._backend_base import (
    BackendRunError,
    BackendUnavailable,
    PSession,
    _first_line,
    _input_problem,
    _run_error,
    logger,
)

__all__ = [
    "CROP_BATCH",
    "TensorRTBackend",
    "TensorRTRTXBackend",
    "build_plan",
    "input_profile",
    "plan_cache_dir",
    "plan_file",
]

CROP_BATCH = (1, 256, 2048)
"""Crops per call of a per-cell classifier's TensorRT plan: least, the one it is tuned
for, most (`CellStateEngine` calls it with at most the last)."""

_TILE_BATCH = (1, 1, 4)
"""Tiles per call of a (tiled) engine's TensorRT plan: least, tuned for, most."""


class _PlanCannotRun(LivescopeError):
    """A TensorRT plan that loads but cannot run here: building it again would not help."""


def _user_cache_root() -> Path:
    """Return the folder this OS keeps users' caches in (the one its cleaners know).

    %LOCALAPPDATA% on Windows (~/AppData/Local without it), ~/Library/Caches on
    macOS, else ``$XDG_CACHE_HOME`` or ~/.cache (a relative ``$XDG_CACHE_HOME`` is
    ignored, as the XDG spec says: it would move with the working directory).
    """
    # (if/elif/else: code after a platform check is unreachable to mypy on the others)
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        root = Path(local) if local else Path.home() / "AppData" / "Local"
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Caches"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return root


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


_NO_TF32 = "fp32-without-tf32"
"""In every plan key: plans built since fp32 means fp32 (not TF32) in `build_plan`."""


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

    `_NO_TF32` marks plans whose fp32 layers are built without TF32 (`build_plan`):
    one cached before, with TF32, is not loaded (each is built once more).
    """
    profile = repr((card.input.name, input_profile(card, shapes)))
    built = "graph" if _takes_graph_precision(library, trt_version) else precision
    text = "|".join([card.sha256, gpu, trt_version, built, profile, _NO_TF32])
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


_ELEMENT_TYPE = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16"}
"""A plan's input element type (named as `Engine` and ONNX Runtime's session name it), by
its `DataType` name."""


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
    than ``precision`` is warned about (`_plan_precision`); one built in fp32 is
    built without TF32 (as torch runs fp32). ``compute_capabilities``
    (RTX only, e.g. ``["SM89"]``) builds ahead of time without a GPU.

    Raises
    ------
    LivescopeError
        naming the parser's errors, an input that does not match the card's
        (name, rank, channels: in `Engine`'s words) or the failed build.

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
    # (checked before the build: the profile is set on the card's input, and a card that
    # does not match the model only failed "to build a plan", TensorRT's log saying why)
    inp = network.get_input(0)
    dims = [int(n) for n in inp.shape]
    c = card.input.axes.index("C")
    channels = dims[c] if len(dims) == len(card.input.axes) and dims[c] > 0 else None
    if problem := _input_problem(card, str(inp.name), len(dims), channels):
        raise LivescopeError(f"engine {card.name}: {problem}")
    graph = _dtype_precision(inp.dtype)
    built = _plan_precision(card, trt.__name__, str(trt.__version__), precision, graph)
    config = builder.create_builder_config()
    if not is_rtx and major < 11 and precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    if built == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        # (on by default: on Ampere and later an fp32 plan ran its convolutions and
        # matrix products in TF32, a 10-bit mantissa, and missed the 1e-4 parity the
        # torch backend keeps with TF32 off)
        config.clear_flag(trt.BuilderFlag.TF32)
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
    It gives the card's output (``output``), whatever the plan's order of outputs.
    """

    input_casts = ("float16", "bfloat16")
    """Input types the fp32 batch is cast to (on the device) for a plan in half precision."""

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
        dtype = self._engine.get_tensor_dtype(self.input_name)
        name = str(getattr(dtype, "name", dtype))
        self.input_type = _ELEMENT_TYPE.get(name, name.lower())
        self.output = card.outputs[0].name  # (`Engine` refuses a plan without it)
        graph = _dtype_precision(dtype)
        version = str(trt.__version__)
        self.precision = _plan_precision(card, trt.__name__, version, precision, graph, warn=warn)
        self.backend = backend
        self._dtypes = {
            n: self._torch_dtype(
                trt, self._engine.get_tensor_dtype(n),
                tensor=f"engine {card.name}: the {backend} plan's tensor {n!r}",
            )
            for n in names
        }  # fmt: skip
        self.device = torch.cuda.get_device_name(torch.cuda.current_device())
        self._stream = torch.cuda.Stream()

    def _torch_dtype(self, trt: Any, dt: Any, *, tensor: str = "a TensorRT plan's tensor") -> Any:
        """Return the torch dtype of a plan's tensor (a buffer of another would be misread).

        ``tensor`` names it (its engine, backend and name) in the error.
        """
        torch = self._torch
        names = ("float32", "float16", "bfloat16", "int32", "int64", "int8", "uint8", "bool")
        table = {getattr(trt, n): getattr(torch, n) for n in names if hasattr(trt, n)}
        if dt not in table:
            raise _PlanCannotRun(
                f"{tensor} is of type {getattr(dt, 'name', dt)}, which has no torch buffer "
                f"type (the plan's inputs and outputs must be one of {', '.join(names)}: "
                "export the model with those)"
            )
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
            return outs[self.output].float().cpu().numpy()  # type: ignore[no-any-return]
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
        return _backend_base._has(self.module)  # noqa: SLF001

    def available(self) -> tuple[bool, str]:
        """Return (True, GPU) when the library loads and a CUDA GPU is present.

        Raises
        ------
        ImportError, OSError
            if the library is installed but does not load (e.g. a CUDA library it
            needs is missing): `_can_run` names it a backend that cannot run.

        """
        if not _backend_base._has(self.module):  # noqa: SLF001
            return False, f"{self.module} is not installed (the {self.extra} extra)"
        ok, how = _backend_base._cuda_device()  # noqa: SLF001
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
        sm = _backend_base._gpu_sm()  # noqa: SLF001
        known = [n for n in dir(trt.ComputeCapability) if n.startswith("SM")]
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
        if not _backend_base._has(self.module):  # noqa: SLF001
            raise BackendUnavailable(f"{self.module} is not installed")
        trt = importlib.import_module(self.module)
        return build_plan(
            trt, model, card, precision=precision, shapes=shapes,
            compute_capabilities=compute_capabilities,
        )  # fmt: skip
