"""Inference backends behind one interface, found by providers.

Each backend reports whether it can run here (and why not), and loads an ONNX
model into a session that maps an fp32 (N, C, H, W) array to the output its
card names. Heavy libraries are imported only inside the backend that needs them.

Choice: by argument, then ``$LIVESCOPE_BACKEND``, then priority (lower first);
if none can run, the error lists every backend tried and why.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livescope.schema import EngineCard, LivescopeError

# (the GPU probes are called through `_backend_base`, not imported by name: tests patch
# them there, for every backend at once. Names other modules import from here are
# re-exported explicitly ("as"): `_engine` imports `BackendRunError`, `_has` and
# `_input_problem`.)
from . import _backend_base
from ._backend_base import BackendRunError as BackendRunError
from ._backend_base import (
    BackendUnavailable,
    PBackend,
    PSession,
    _first_line,
    _run_error,
    logger,
)
from ._backend_base import _cuda_driver as _cuda_driver
from ._backend_base import _has as _has
from ._backend_base import _input_problem as _input_problem
from ._tensorrt import (  # noqa: F401  (re-exported: callers and tests import them from here)
    _GRAPH_PRECISION,
    _PLAN_NAME_MAX,
    _TILE_BATCH,
    CROP_BATCH,
    Shape4,
    TensorRTBackend,
    TensorRTRTXBackend,
    _cached_plan,
    _dtype_precision,
    _plan_key,
    _plan_precision,
    _PlanCannotRun,
    _store,
    _takes_graph_precision,
    _TrtSession,
    _user_cache_root,
    build_plan,
    input_profile,
    plan_cache_dir,
)
from ._tensorrt import plan_file as plan_file  # (explicit: __init__ imports it)

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


_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}
"""Graph input types ONNX Runtime is fed (from numpy), by ONNX Runtime's name for them."""


def _channels(shape: Sequence[Any]) -> int | None:
    """Size of a (N, C, ...) tensor's C axis where the graph fixes it (None: dynamic, or no C)."""
    c = shape[1] if len(shape) > 1 else None
    # (ONNX Runtime names a dynamic axis by a string, or None; ONNX by a dim_value of 0)
    return c if isinstance(c, int) and not isinstance(c, bool) and c > 0 else None


class _OrtSession:
    """An ONNX Runtime session giving ``output`` (the card's; None: the model's first).

    An fp16 graph (exported in half precision, as TensorRT >= 11 and TensorRT-RTX
    need for an fp16 plan) is fed the fp32-normalised batch cast to fp16, as the
    TensorRT session casts it on the device.
    """

    def __init__(self, model: Path, providers: list[str], output: str | None = None) -> None:
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
        # (a type ONNX Runtime cannot be fed from numpy keeps its own name: refused at load)
        self.input_type = _ORT_TYPES.get(inp.type, inp.type)
        self.input_casts = ("float16",)
        self.precision = "fp16" if self.input_type == "float16" else "fp32"  # the graph's
        self.input_name = inp.name
        self.input_rank = len(inp.shape)
        outputs = self._sess.get_outputs()
        self.output_names = [o.name for o in outputs]
        self.output = output or self.output_names[0]
        # (what the graph fixes, for `Engine` to hold against the card at load: a card
        # naming other channel counts loaded, and every frame was refused for it)
        self.input_channels = _channels(inp.shape)
        self.output_channels = next(
            (_channels(o.shape) for o in outputs if o.name == self.output), None
        )

    def run(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        from onnxruntime.capi.onnxruntime_pybind11_state import (
            EPFail,
            Fail,
            InvalidArgument,
            RuntimeException,
        )

        feed: NDArray[Any] = x
        if self.input_type in self.input_casts:  # (normalised in fp32 by the engine, cast here)
            feed = x.astype(self.input_type)
        try:
            out = self._sess.run([self.output], {self.input_name: feed})[0]
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
    ``cpu_only``: the CPU provider alone, wherever CUDA is (the reference `engines
    check` compares every backend with).
    """

    name = "onnxruntime"

    def __init__(self, *, cpu_only: bool = False) -> None:
        self.cpu_only = cpu_only

    def _providers(self) -> list[str]:
        import onnxruntime as ort

        if self.cpu_only:
            return ["CPUExecutionProvider"]
        have = ort.get_available_providers()
        # (onnxruntime-gpu lists CUDA where no driver is: it would then run on the CPU)
        wanted = ["CUDAExecutionProvider"] if _backend_base._cuda_driver() else []  # noqa: SLF001
        wanted.append("CPUExecutionProvider")
        return [p for p in wanted if p in have] or ["CPUExecutionProvider"]

    def available(self) -> tuple[bool, str]:
        """Return (True, providers) when onnxruntime imports."""
        if not _backend_base._has("onnxruntime"):  # noqa: SLF001
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
        """Create an ONNX Runtime session giving the card's output (precision is the graph's)."""
        return _OrtSession(model, self._providers(), card.outputs[0].name)


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


def _torch_card_problem(card: EngineCard) -> str | None:
    """Say why torch cannot run ``card``'s engine (None: the card names its module)."""
    if not card.torch_module:
        return (
            "the card names no torch_module (torch rebuilds the model from that class; "
            "another backend runs the ONNX model as it is)"
        )
    return None


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


def _onnx_dims(value: Any) -> list[int]:
    """Dimensions of an ONNX graph input or output (0 where dynamic, as ONNX says)."""
    return [int(d.dim_value) for d in value.type.tensor_type.shape.dim]


class _TorchSession:
    """The card's ``torch_module`` with the ONNX weights: it gives one output, its ``forward``'s.

    That output is taken to be the card's (the module is the one the graph was
    exported from; which of several graph outputs it is cannot be told).
    ``output_names`` are the ONNX graph's, so that `Engine` refuses at load a
    card naming an output the model lacks, as for the other backends.
    """

    def __init__(self, model: Path, card: EngineCard, precision: str) -> None:
        import onnx
        import torch
        from onnx import numpy_helper

        if problem := _torch_card_problem(card):
            raise LivescopeError(f"engine {card.name}: {problem}")
        net = _torch_module(card)
        graph = onnx.load(str(model)).graph
        weights = {
            init.name: torch.from_numpy(numpy_helper.to_array(init).copy())
            for init in graph.initializer
        }
        outputs = [o.name for o in graph.output]
        inp = next((i for i in graph.input if i.name == card.input.name), None)
        in_channels = None if inp is None else _channels(_onnx_dims(inp))
        out_channels = {o.name: _channels(_onnx_dims(o)) for o in graph.output}
        del graph  # (its weights are copied)
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
        self.output_names = outputs  # the graph's (the card's is checked among them at load)
        # (the graph's, which the module was exported from: held against the card at load)
        self.input_channels = in_channels
        self.output_channels = out_channels.get(card.outputs[0].name)
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
        if not _backend_base._has("torch"):  # noqa: SLF001
            return False, "torch is not installed (the train extra)"
        if not _backend_base._has("onnx"):  # noqa: SLF001
            return False, "onnx is not installed (the train extra)"
        ok, how = _backend_base._cuda_device()  # noqa: SLF001
        return True, how if ok else "cpu"

    def priority(self) -> int:
        """CUDA: 15; CPU: 60 (behind ONNX Runtime)."""
        return 15 if _backend_base._cuda_device()[0] else 60  # noqa: SLF001

    def card_problem(self, card: EngineCard) -> str | None:
        """Say why this backend cannot run ``card``'s engine (None: it can).

        torch rebuilds the model from the card's ``torch_module``, which the
        schema leaves optional: a card without one is for the other backends.
        """
        return _torch_card_problem(card)

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


def _card_problem(b: PBackend, card: EngineCard) -> str | None:
    """Say why backend ``b`` cannot run ``card``'s engine, though it can run here (None: it can).

    A backend says so by a ``card_problem(card)`` method (torch: a card without
    ``torch_module``); one without it (not part of `PBackend`) runs any card.
    """
    ask = getattr(b, "card_problem", None)
    problem: str | None = None if ask is None else ask(card)
    return problem


def select_backend(name: str | None = None, *, card: EngineCard | None = None) -> PBackend:
    """Pick a backend: ``name``, else ``$LIVESCOPE_BACKEND``, else the best available.

    With ``card``, the backend must also be able to run that card's engine
    (`_card_problem`): one named that cannot is refused; left to the choice,
    one that cannot is passed over (logged) for the next by priority.

    Raises
    ------
    BackendUnavailable
        naming the backend asked for and why it cannot run (here, or this card);
        with none asked, listing each backend tried and why it cannot.

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
        if card is not None and (problem := _card_problem(by_name[wanted], card)):
            raise BackendUnavailable(f"backend {wanted!r}{where} cannot run this engine: {problem}")
        return by_name[wanted]
    tried = []
    for b, (ok, why, _) in sorted(
        ((b, _can_run(b)) for b in BACKENDS), key=lambda item: item[1][2]
    ):
        if ok and card is not None and (problem := _card_problem(b, card)):
            # (torch, first on a CUDA GPU without TensorRT, refused a card without
            # torch_module at load, where ONNX Runtime would have run it)
            logger.info("engine %s: backend %s passed over: %s", card.name, b.name, problem)
            ok, why = False, f"cannot run this engine: {problem}"
        if ok:
            return b
        tried.append(f"{b.name}: {why}")
    raise BackendUnavailable("no inference backend can run here:\n  " + "\n  ".join(tried))
