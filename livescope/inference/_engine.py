"""Engines: an ONNX model, its card, a backend session, tiling and post-processing.

An engine is a folder ``engines/<task>/<name>/`` with ``model.onnx`` and
``card.yaml``. Loading checks the model's sha256 against the card and the
model's input against the card's; inference validates the frame, normalises it
in fp32, runs it (in overlapping tiles when it is larger than the card's tile)
and stitches the tiles by cutting in the middle of each overlap, so that no seam
is left where the overlap covers the model's receptive field.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Self

import numpy as np
from numpy.typing import NDArray

from livescope.schema import EngineCard, HardwareProfile, LivescopeError

from ._backend_base import _first_line
from ._backends import (
    BackendRunError,
    BackendUnavailable,
    PBackend,
    PSession,
    _has,
    _input_problem,
    select_backend,
)
from ._onnx_scan import _external_data
from ._postprocess import apply_gamma, apply_normalisation, as_working_float, instance_labels

logger = logging.getLogger("livescope")

__all__ = [
    "Engine",
    "EngineError",
    "SegmentationEngine",
    "SegmentationResult",
    "TilePlan",
    "builtin_engines",
    "find_engine",
    "sha256_file",
]


MAX_RESCALE = 8.0
"""Largest zoom (either way) an engine applies to match its card's pixel size."""


class EngineError(LivescopeError):
    """An engine cannot be loaded or run; the message names the engine and the problem."""


class _EngineBackendUnavailable(EngineError, BackendUnavailable):
    """No backend can run an engine: `select_backend`'s refusal, with the engine's name.

    Both an `EngineError` (what loading an engine raises) and a `BackendUnavailable`
    (what it raised before it named the engine, and callers may catch).
    """


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def builtin_engines() -> dict[str, Path]:
    """Shipped engines by name (folders holding a card.yaml).

    Raises
    ------
    EngineError
        if two tasks' engines have the same folder name (`_engines_in`).

    """
    for root in (
        Path(str(resources.files("livescope") / "_engines")),
        Path(__file__).resolve().parents[2] / "engines",  # source checkout
    ):
        if root.is_dir():
            return _engines_in(root)
    return {}


def _engines_in(root: Path) -> dict[str, Path]:
    """Engines under ``root`` (``<task>/<name>/card.yaml``) by folder name.

    Raises
    ------
    EngineError
        naming both folders if two tasks hold an engine of the same name: a name
        finds one engine (the second silently took the first's place).

    """
    found: dict[str, Path] = {}
    for card in sorted(root.glob("*/*/card.yaml")):
        folder = card.parent
        if (first := found.setdefault(folder.name, folder)) != folder:
            raise EngineError(
                f"two engines are named {folder.name!r}: {first} and {folder}; an engine's "
                "folder name must be unique across tasks (rename one of them)"
            )
    return found


_CUPY_PROBE: list[str | None] = []  # (its answer, once per process)
_CUDA_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
_CUDA_BACKENDS = ("tensorrt", "tensorrt-rtx")


def _on_cuda(session: object) -> bool:
    """Whether a session's outputs come from an NVIDIA GPU (cupy can post-process them there).

    Each backend names its device its own way: torch the device type (``cuda``),
    ONNX Runtime the provider it runs on, TensorRT the GPU (only the first was
    taken for a GPU, so TensorRT, the backend a GPU runs first, post-processed on
    the CPU).
    """
    device = getattr(session, "device", None)
    return (
        device == "cuda"
        or device in _CUDA_PROVIDERS
        or getattr(session, "backend", None) in _CUDA_BACKENDS
    )


def cupy_problem() -> str | None:
    """Why cupy cannot run here (None: it can), found out once: an import and a tiny kernel.

    Said once as a warning, with the post-processing left to the CPU.
    """
    if not _CUPY_PROBE:
        try:
            import cupy

            int(cupy.arange(4).sum())  # (compiles and runs a kernel: NVRTC, the driver)
            problem = None
        except Exception as exc:  # noqa: BLE001 (import, CUDA and compile errors all count)
            problem = f"{type(exc).__name__}: {exc}"
            logger.warning("cupy is installed but cannot run here (%s): post-processing on "
                           "the CPU", problem)  # fmt: skip
        _CUPY_PROBE.append(problem)
    return _CUPY_PROBE[0]


def find_engine(name_or_path: str | Path) -> Path:
    """Folder of an engine, given a path (folder or card) or a shipped engine's name."""
    p = Path(name_or_path)
    if p.is_file() and p.name == "card.yaml":
        return p.parent
    if (p / "card.yaml").is_file():
        return p
    found = builtin_engines()
    if str(name_or_path) in found:
        return found[str(name_or_path)]
    raise EngineError(
        f"no engine {str(name_or_path)!r}: not a folder with card.yaml, and not a shipped "
        f"engine (shipped: {', '.join(sorted(found)) or 'none'})"
    )


@dataclass(frozen=True)
class TilePlan:
    """How a frame of ``shape`` is cut into tiles of ``tile`` px overlapping by ``overlap`` px."""

    shape: tuple[int, int]
    tile: int
    overlap: int
    align: int = 8

    @classmethod
    def for_profile(cls, profile: HardwareProfile, card: EngineCard) -> TilePlan:
        """Return the tile plan of a rig's full frame for an engine."""
        h, w = profile.camera.sensor_shape_px
        return cls((h, w), card.tiling.tile_px, card.tiling.overlap_px, card.input.multiple_of)

    def spans(self, n: int) -> list[tuple[int, int]]:
        """(start, size) of the tiles along an axis of length ``n``.

        Starts are multiples of ``align`` (the model's pooling grid), so a tile
        computes exactly what the whole frame would; the last tile runs to the
        edge (up to ``align - 1`` px longer than the others).
        """
        if n <= self.tile:
            return [(0, n)]
        step = max(self.align, (self.tile - self.overlap) // self.align * self.align)
        last = (n - self.tile) // self.align * self.align
        starts = [*range(0, last, step), last]
        return [(s, self.tile if s != last else n - s) for s in starts]

    def tile_shapes(self) -> list[tuple[int, int]]:
        """Return the distinct (h, w) of the tiles as run (what a compiled plan must accept).

        Each is padded to a multiple of ``align``, as `Engine` pads a tile for the model.
        """
        a = self.align
        hs = {-(-size // a) * a for _, size in self.spans(self.shape[0])}
        ws = {-(-size // a) * a for _, size in self.spans(self.shape[1])}
        return sorted((h, w) for h in hs for w in ws)

    def regions(self) -> list[tuple[tuple[slice, slice], tuple[slice, slice]]]:
        """For each tile: (its slice in the frame, the part of it kept in the output)."""
        out = []
        axes = []
        for n in self.shape:
            spans = self.spans(n)
            cuts = [0] + [
                (spans[i + 1][0] + spans[i][0] + spans[i][1]) // 2 for i in range(len(spans) - 1)
            ]
            cuts.append(n)
            axes.append([(s, size, cuts[i], cuts[i + 1]) for i, (s, size) in enumerate(spans)])
        for ys, yh, y0, y1 in axes[0]:
            for xs, xw, x0, x1 in axes[1]:
                src = (slice(ys, ys + yh), slice(xs, xs + xw))
                keep = (slice(y0 - ys, y1 - ys), slice(x0 - xs, x1 - xs))
                out.append((src, keep))
        return out


def _float_problem(frame: NDArray[Any]) -> str | None:
    """Say what makes a float frame unfit for fp32 normalisation (NaN, inf, beyond it), or None."""
    if frame.dtype.kind != "f" or frame.size == 0:
        return None
    if not np.isfinite(frame).all():
        return "holds NaN or infinite values"
    limit = float(np.finfo(np.float32).max)
    if frame.dtype.itemsize > 4 and (peak := float(np.abs(frame).max())) > limit:
        # cast to fp32 they would be inf, the maps NaN, and the frame empty of objects
        return (
            f"holds values up to {peak:.3g}, beyond float32 (±{limit:.3g}), in which it is "
            "normalised (scale the frame first)"
        )
    return None


_SIZE_MISMATCH = (
    "concat axis dimensions",  # ONNX Runtime: a skip connection's Concat
    "broadcast",  # ONNX Runtime: an Add or Mul of two sizes
    "sizes of tensors must match",  # torch: torch.cat
    "must match the size of tensor",  # torch: an elementwise op
    "in multiples of",  # livescope's own models (torch), e.g. NucleiUNet
)
"""What runtimes say when a model's layers disagree on a size (a tile the pooling cannot halve)."""


def _size_mismatch(message: str) -> bool:
    """Return whether a runtime's error is one that padding to another multiple may cure."""
    text = message.lower()
    return any(phrase in text for phrase in _SIZE_MISMATCH)


class Engine:
    """An engine ready to run.

    Parameters
    ----------
    name_or_path
        A shipped engine's name or an engine folder.
    backend
        Backend name (default: ``$LIVESCOPE_BACKEND``, then the best available
        that can run this card: `select_backend`).
    precision
        ``fp32`` or ``fp16`` (where the backend supports it; `runtime` says which
        it runs in).
    frame_shape
        Frame (H, W) the engine will see, for compiled backends' shape profiles
        (None: a profile for any frame's tiles, at its best for whole tiles). The
        profile is for the frame as the model sees it: zoomed, where the engine
        zooms every frame (`SegmentationEngine`'s ``object_diameter_px``); for
        any frame's tiles where the zoom comes with each call (a card with a
        pixel size: `pixel_scale`). `profile_shapes` says which tile shapes the
        backend was asked for ([]: any).

    Raises
    ------
    EngineError
        if the model is missing, its sha256 does not match the card, it keeps
        weights in files beside it (which the sha256 does not cover), its
        input or output does not match the card (name, rank, type, and channel
        counts where the backend knows the graph's), or no backend can run it (the
        backend named cannot run here or cannot run this card, or none can): that
        error is also a `BackendUnavailable`, with `select_backend`'s as its cause;
        or if the backend fails to load it (a RuntimeError or OSError of its
        library, e.g. CUDA out of memory: the cause).

    """

    def __init__(
        self,
        name_or_path: str | Path,
        *,
        backend: str | PBackend | None = None,
        precision: str = "fp32",
        frame_shape: tuple[int, int] | None = None,
    ) -> None:
        self.folder = find_engine(name_or_path)
        self.card = EngineCard.from_file(self.folder / "card.yaml")
        self.name = self.card.name
        if precision not in ("fp32", "fp16"):
            raise EngineError(
                f"engine {self.name}: precision must be fp32 or fp16, not {precision!r}"
            )
        self._check_card()
        self.model_path = self.folder / self.card.model
        if not self.model_path.is_file():
            raise EngineError(f"engine {self.name}: model file {self.model_path} is missing")
        data = self.model_path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.card.sha256:
            raise EngineError(
                f"engine {self.name}: {self.model_path.name} has sha256 {digest[:16]}…, the card "
                f"says {self.card.sha256[:16]}…; the model was changed or corrupted (refusing it)"
            )
        if (location := _external_data(data)) is not None:
            # (the card's sha256, and so a TensorRT plan's key, covers model.onnx only:
            # damaged or replaced weights beside it loaded without a word)
            raise EngineError(
                f"engine {self.name}: {self.model_path.name} keeps weights in an external file "
                f"({location!r}), which the card's sha256 does not cover (refusing it); "
                "livescope's engines keep their weights inside the model: save it with "
                "onnx.save(model, path, save_as_external_data=False)"
            )
        del data
        if isinstance(backend, str | None):
            try:
                self.backend = select_backend(backend, card=self.card)
            except BackendUnavailable as exc:  # (said without the engine it was chosen for)
                raise _EngineBackendUnavailable(f"engine {self.name}: {exc}") from exc
        else:
            self.backend = backend
        self.precision = precision
        shapes = self._profile_shapes(frame_shape)
        self.profile_shapes: list[tuple[int, int]] = shapes
        # one batch at a time: a TensorRT context and a CUDA graph's static buffers are
        # shared by every call (two threads' frames would swap maps), and close() must
        # not free a session under a run in flight
        self._lock = threading.Lock()
        try:
            self.session: PSession | None = self.backend.load(
                self.model_path, self.card, precision=precision, shapes=shapes
            )
        except (RuntimeError, OSError) as exc:  # (torch's CUDA out of memory, a file unread)
            # (said without the engine or backend, and past `engines check` and `bench
            # engines`, which go on past a LivescopeError only)
            raise EngineError(
                f"engine {self.name}: backend {self.backend.name} failed to load it "
                f"({type(exc).__name__}: {_first_line(exc)}); free the GPU's memory if it ran "
                "out, or choose another backend (backend=, $LIVESCOPE_BACKEND)"
            ) from exc
        with self._closed_if_refused():
            self._check_io()

    def _frame_zoom(self) -> float | None:
        """Zoom the engine applies to every frame before the model (None: it varies by call).

        Called by `__init__` before the session loads, for the shape profile. A card
        with a pixel size may have frames zoomed to it call by call (`pixel_scale`).
        """
        return None if self.card.pixel_size_um is not None else 1.0

    def _profile_shapes(self, frame_shape: tuple[int, int] | None) -> list[tuple[int, int]]:
        """Tile shapes a compiled plan must take for frames of ``frame_shape`` ([]: any frame's).

        The tiles are those of the frame as the model sees it, zoomed (`_frame_zoom`) as
        `infer_scaled` zooms it; where the zoom varies by call, any frame's tiles.
        """
        zoom = self._frame_zoom()
        if not frame_shape or zoom is None:
            return []
        if abs(zoom - 1.0) > 1e-3:  # (`ndimage.zoom`'s output shape)
            frame_shape = (round(frame_shape[0] * zoom), round(frame_shape[1] * zoom))
        t = self.card.tiling
        return TilePlan(
            frame_shape, t.tile_px, t.overlap_px, self.card.input.multiple_of
        ).tile_shapes()

    def _check_card(self) -> None:
        """Refuse card fields that pass the schema one by one but cannot work together.

        A tile narrower than the pooling grid left gaps between tiles; an overlap as
        wide as the tile cut frames into thousands of tiles, one that leaves a step
        under the grid overlapped them by less than it says (seams); inverted
        percentiles or a non-finite fixed scale turned every frame into one without
        nuclei, silently.
        """
        card = self.card
        t, m, n = card.tiling, card.input.multiple_of, card.normalisation
        problems = []
        if t.tile_px < m:
            problems.append(
                f"tiling.tile_px {t.tile_px} is under input.multiple_of {m} (tiles could not "
                "cover the frame)"
            )
        if t.overlap_px >= t.tile_px:
            problems.append(
                f"tiling.overlap_px {t.overlap_px} must be under tiling.tile_px {t.tile_px}"
            )
        elif t.tile_px >= m and (step := t.tile_px - t.overlap_px) < m:
            # (tiles start on the grid, `TilePlan.spans`: they step by m and overlap by
            # tile_px - m, down to 0 at tile_px = m, a seam at each tile's edge)
            problems.append(
                f"tiling.tile_px {t.tile_px} - tiling.overlap_px {t.overlap_px} = {step} is "
                f"under input.multiple_of {m} (tiles start every {m} px, so they would overlap "
                f"by {t.tile_px - m} px, not {t.overlap_px}): make tiling.overlap_px at most "
                f"{t.tile_px - m}"
            )
        if n.kind == "percentile" and n.low >= n.high:
            problems.append(
                f"normalisation.low {n.low:g} must be under normalisation.high {n.high:g} "
                "(percentiles mapped to 0 and 1)"
            )
        if n.kind == "fixed":
            for field, value in (("offset", n.offset), ("scale", n.scale)):
                if not math.isfinite(value):
                    problems.append(f"normalisation.{field} {value} is not a finite number")
        if problems:
            raise EngineError(
                f"engine {self.name}: its card cannot work ({self.folder / 'card.yaml'}): "
                + "; ".join(problems)
            )

    @contextlib.contextmanager
    def _closed_if_refused(self) -> Iterator[None]:
        """Close the session just loaded if the checks in the block refuse the engine.

        Its device memory goes at once, not whenever the half-made engine is collected.
        """
        try:
            yield
        except BaseException:
            self.close()
            raise

    def _check_io(self) -> None:
        s = self._session()
        card = self.card
        # (channel counts where the session knows the graph's, None: not checked here, but
        # per tile in `_run_padded`; a card naming others loaded, and then refused every
        # frame, blaming the frame)
        channels: int | None = getattr(s, "input_channels", None)
        if problem := _input_problem(card, s.input_name, s.input_rank, channels):
            raise EngineError(
                f"engine {self.name}: {problem}; fix input.channels in {self.folder / 'card.yaml'}"
                if channels is not None and channels != card.input.channels
                else f"engine {self.name}: {problem}"
            )
        if card.outputs[0].name not in s.output_names:
            raise EngineError(
                f"engine {self.name}: the card's output {card.outputs[0].name!r} is not among the "
                f"model's outputs {s.output_names}"
            )
        named = card.outputs[0].channels
        given: int | None = getattr(s, "output_channels", None)
        if given is not None and given != len(named):
            raise EngineError(
                f"engine {self.name}: the model gives {given} output channels, the card "
                f"names {len(named)} ({', '.join(named)}): card and model do not match; fix "
                f"outputs[0].channels in {self.folder / 'card.yaml'}"
            )
        # (an fp16 graph is fed the fp32-normalised batch cast to fp16 by the session: how a
        # half-precision plan is made on TensorRT >= 11 and -RTX; any other type failed on
        # every frame, with ONNX Runtime's type error)
        graph = getattr(s, "input_type", card.input.dtype)
        if graph != card.input.dtype and graph not in getattr(s, "input_casts", ()):
            raise EngineError(
                f"engine {self.name}: the card's input {card.input.name!r} is "
                f"{card.input.dtype}, the model's is {graph}, which {s.backend} cannot feed "
                "(card and model do not match; export the model with a float32 or float16 input)"
            )

    def _session(self) -> PSession:
        if self.session is None:
            raise EngineError(f"engine {self.name} is closed")
        return self.session

    def _run_session(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """Run one batch on the session, never two at once (any thread may call it)."""
        with self._lock:
            return self._session().run(x)

    # ------------------------------------------------------------ frames

    def check_frame(self, frame: Any) -> NDArray[Any]:
        """Validate a camera frame: a 2-D (or C, H, W) numeric array.

        Raises
        ------
        EngineError
            naming the engine and what is wrong with the frame.

        """
        if not isinstance(frame, np.ndarray):
            raise EngineError(
                f"engine {self.name}: frame must be a numpy array, got {type(frame).__name__}"
            )
        if frame.dtype.kind not in "uif" or frame.dtype.itemsize > 8:
            raise EngineError(
                f"engine {self.name}: frame dtype {frame.dtype} is not camera counts "
                "(expected an integer or float array)"
            )
        c = self.card.input.channels
        ok_rank = frame.ndim == 2 if c == 1 else frame.ndim == 3 and frame.shape[0] == c
        if not ok_rank:
            want = "(H, W)" if c == 1 else f"({c}, H, W)"
            raise EngineError(f"engine {self.name}: frame has shape {frame.shape}, expected {want}")
        if min(frame.shape[-2:]) < 8:
            raise EngineError(f"engine {self.name}: frame {frame.shape} is too small (< 8 px)")
        if problem := _float_problem(frame):
            raise EngineError(f"engine {self.name}: frame {problem}")
        return frame

    def normalise(self, frame: NDArray[Any], *, normalised: bool = False) -> NDArray[np.float32]:
        """Camera counts to model input, in fp32 (the card's normalisation).

        ``normalised``: the frame is already in the units that normalisation
        gives (e.g. a virtual stain, in its target's percentile units): only
        the card's gamma is applied. Stretching such a frame again by its own
        percentiles would blow a dark frame's noise up to full range.
        """
        n = self.card.normalisation
        if not normalised:
            return apply_normalisation(frame, n)
        out: NDArray[np.float32] = np.asarray(frame, dtype=np.float32)
        return apply_gamma(out, n.gamma) if n.gamma != 1.0 else out

    def run(self, batch: NDArray[Any]) -> NDArray[np.float32]:
        """Run an already-normalised (N, C, H, W) batch straight through the model.

        Raises
        ------
        EngineError
            if the batch's rank or channel count does not match the card, or the
            runtime fails on it.

        """
        x = np.asarray(batch, dtype=np.float32)
        c = self.card.input.channels
        if x.ndim != 4 or x.shape[1] != c:
            raise EngineError(
                f"engine {self.name}: batch has shape {x.shape}, expected (N, {c}, H, W)"
            )
        try:
            return self._run_session(np.ascontiguousarray(x))
        except BackendRunError as exc:
            raise EngineError(f"engine {self.name}: {exc}") from exc

    def _run_padded(self, x: NDArray[np.float32], frame: tuple[int, int]) -> NDArray[np.float32]:
        """Run a tile (C, H, W) of a ``frame`` (H, W) padded to the model's multiple; (K, H, W)."""
        m = self.card.input.multiple_of
        h, w = x.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="reflect")
        try:
            out = self._run_session(x[None])
        except BackendRunError as exc:
            # (only where the model's layers disagree on a size: a type error, a tile
            # outside a plan's profile or no memory left has other causes)
            hint = (
                f" (tile {h}x{w} of frame {frame[0]}x{frame[1]}, padded to multiples of {m}, "
                "the card's input.multiple_of; a U-Net needs 2**depth)"
                if _size_mismatch(str(exc))
                else ""
            )
            raise EngineError(f"engine {self.name}: {exc}{hint}") from exc
        channels = self.card.outputs[0].channels
        if out.shape[1] != len(channels):
            raise EngineError(
                f"engine {self.name}: the model gives {out.shape[1]} output channels, the card "
                f"names {len(channels)} ({', '.join(channels)}): card and model do not match"
            )
        maps: NDArray[np.float32] = out[0, :, :h, :w]
        return maps

    def infer(self, frame: NDArray[Any], *, normalised: bool = False) -> NDArray[np.float32]:
        """Model output maps (K, H, W) for one frame (tiled when larger than the card's tile).

        Any thread may call it; the model runs one batch (tile) at a time.
        """
        f = self.check_frame(frame)
        x = self.normalise(f, normalised=normalised)
        if x.ndim == 2:
            x = x[None]
        h, w = x.shape[-2:]
        tiling = self.card.tiling
        plan = TilePlan((h, w), tiling.tile_px, tiling.overlap_px, self.card.input.multiple_of)
        regions = plan.regions()
        if len(regions) == 1:
            return self._run_padded(x, (h, w))
        out: NDArray[np.float32] | None = None
        for src, keep in regions:
            y = self._run_padded(x[:, src[0], src[1]], (h, w))
            if out is None:
                out = np.empty((y.shape[0], h, w), np.float32)
            ys = slice(src[0].start + keep[0].start, src[0].start + keep[0].stop)
            xs = slice(src[1].start + keep[1].start, src[1].start + keep[1].stop)
            out[:, ys, xs] = y[:, keep[0], keep[1]]
        if out is None:  # pragma: no cover (regions is never empty)
            raise EngineError(f"engine {self.name}: empty tile plan for {frame.shape}")
        return out

    def pixel_scale(self, pixel_size_um: float | None, tolerance: float = 0.1) -> float:
        """Zoom that brings a frame of ``pixel_size_um`` to the card's pixel size.

        1.0 when either is unknown or they differ by at most ``tolerance``.

        Raises
        ------
        EngineError
            if the pixel size is not positive, or the zoom would exceed 8x either way.

        """
        card_px = self.card.pixel_size_um
        if pixel_size_um is None or card_px is None:
            return 1.0
        if not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
            raise EngineError(f"engine {self.name}: pixel size must be > 0 µm, got {pixel_size_um}")
        ratio = pixel_size_um / card_px
        if abs(math.log(ratio)) <= math.log1p(tolerance):
            return 1.0
        if not 1 / MAX_RESCALE <= ratio <= MAX_RESCALE:
            raise EngineError(
                f"engine {self.name}: the frame's pixel size {pixel_size_um:g} µm is "
                f"{ratio:.3g}x the {card_px:g} µm it was trained at; refusing to rescale by more "
                f"than {MAX_RESCALE:g}x (use an engine trained near this pixel size)"
            )
        return ratio

    def infer_scaled(
        self, frame: NDArray[Any], scale: float, *, normalised: bool = False
    ) -> NDArray[np.float32]:
        """`infer` on the frame zoomed by ``scale`` (anti-aliased when shrinking).

        The maps come back at the frame's own size. The frame is zoomed in fp32,
        or in float64 where fp32 cannot hold it exactly (as `normalise` scales it).
        """
        if abs(scale - 1.0) <= 1e-3:
            return self.infer(frame, normalised=normalised)
        from scipy import ndimage

        f = self.check_frame(frame)
        # zoomed in float64 where fp32 cannot hold the frame exactly, as `normalise` scales
        # it (`normalize_percentile`): cast first, a large offset (int64 counts from 2**40)
        # swallowed its signal. Other frames in fp32, as before.
        x = as_working_float(f)
        if min(x.shape[-2:]) * scale < 8:
            raise EngineError(
                f"engine {self.name}: frame {x.shape[-2]}x{x.shape[-1]} px zoomed {scale:.3g}x "
                "(to bring its nuclei or pixels to the model's size) is under 8 px"
            )
        lead = (0,) * (x.ndim - 2)
        if scale < 1:
            s = 0.5 * (1 / scale - 1)
            x = ndimage.gaussian_filter(x, sigma=(*lead, s, s))
        small = ndimage.zoom(
            x, (*(1,) * len(lead), scale, scale), order=1, grid_mode=True, mode="nearest"
        )
        maps = self.infer(small, normalised=normalised)
        h, w = x.shape[-2:]
        zoom = (h / maps.shape[1], w / maps.shape[2])
        out = np.empty((maps.shape[0], h, w), np.float32)
        for i, name in enumerate(self.card.outputs[0].channels):
            # offsets (vectors in the model's pixels) by nearest: interpolating would blend
            # two touching nuclei's vectors
            vector = name in ("offset_y", "offset_x")
            order = 0 if vector else 1
            out[i] = ndimage.zoom(maps[i], zoom, order=order, grid_mode=True, mode="nearest")
            if vector:
                out[i] *= zoom[0] if name == "offset_y" else zoom[1]
        return out

    def warmup(self, shape: tuple[int, int] = (512, 512)) -> None:
        """Run once on a blank frame (first runs allocate and compile)."""
        c = self.card.input.channels
        blank = np.zeros(shape if c == 1 else (c, *shape), np.uint16)
        blank[::7, ::5] = 100
        self.infer(blank)

    def runtime(self) -> dict[str, str]:
        """Where the engine runs: backend, device (e.g. the GPU's name) and precision.

        The precision is the one it runs in, not always the one asked: ONNX
        Runtime runs the ONNX graph's, torch on the CPU fp32, and TensorRT >= 11
        and TensorRT-RTX build their plans in the graph's.
        """
        device = str(getattr(self.session, "device", "closed"))
        if device == "cuda":  # torch names the device type only: add the GPU's name
            import torch

            device = f"cuda ({torch.cuda.get_device_name(torch.cuda.current_device())})"
        # what the session really runs (each of livescope's sessions says; a TensorRT
        # one reported the precision asked, not its plan's), else what was asked
        precision = str(getattr(self.session, "precision", self.precision))
        return {"backend": self.backend.name, "device": device, "precision": precision}

    def close(self) -> None:
        """Free the session and its device memory; the engine cannot run afterwards.

        Waits for a batch another thread is running; its later calls raise `EngineError`.
        """
        with self._lock:
            if self.session is not None:
                self.session.close()
                self.session = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class SegmentationResult:
    """Instance labels (0 = background) and how long each stage took, ms."""

    labels: NDArray[np.int32]
    ms_engine: float
    ms_post: float


class SegmentationEngine(Engine):
    """An engine whose maps become instance labels, as its card's post-processing says.

    The maps start with foreground and distance; engines labelled by centre
    votes add the offsets (dy, dx) to each pixel's nucleus centre.
    """

    def __init__(
        self,
        name_or_path: str | Path,
        *,
        gpu_postprocess: bool | None = None,
        object_diameter_px: float | None = None,
        **kwargs: Any,
    ) -> None:
        """Load a segmentation engine.

        ``gpu_postprocess``: None (default) uses the GPU path (cupy) when the
        backend runs on CUDA and cupy imports; True requires it; False never.
        ``object_diameter_px``: typical nucleus diameter in the frames to come;
        frames are then rescaled so their nuclei have the size the model
        segments best (the card's ``object_radius_px``), and the labels come
        back at the frame's size. None: frames are used as they are.
        """
        self._object_diameter_px = object_diameter_px  # (for `_frame_zoom`, called by super)
        super().__init__(name_or_path, **kwargs)
        with self._closed_if_refused():
            if self.card.task != "segmentation" or self.card.postprocess is None:
                raise EngineError(
                    f"engine {self.name} is a {self.card.task} engine without segmentation "
                    "post-processing"
                )
            self.gpu_postprocess = self._want_gpu_post(gpu_postprocess)
            self.scale = self._object_scale()
            channels = self.card.outputs[0].channels
            want: tuple[str, ...] = ("foreground", "distance")
            post: str = self.card.postprocess.kind
            if post == "centre_votes":
                want += ("offset_y", "offset_x")
            elif self.card.postprocess.neighbour_weight > 0:
                want += ("neighbour",)
                post += " with neighbour_weight"
            if tuple(channels[: len(want)]) != want:
                raise EngineError(
                    f"engine {self.name}: output channels {channels} do not start with {want} "
                    f"({post} post-processing needs them)"
                )

    def _object_scale(self) -> float:
        """Zoom that brings nuclei of the diameter given to the card's size (1.0: none given).

        Raises
        ------
        EngineError
            if the diameter is not > 0, the card gives no object size, or the zoom
            would exceed 8x either way.

        """
        diameter = self._object_diameter_px
        if diameter is None:
            return 1.0
        if not (math.isfinite(diameter) and diameter > 0):
            raise EngineError(f"engine {self.name}: object diameter must be > 0 px, got {diameter}")
        if self.card.object_radius_px is None:
            raise EngineError(
                f"engine {self.name}: its card gives no object_radius_px, so frames "
                "cannot be rescaled to an object size"
            )
        scale = 2 * self.card.object_radius_px / float(diameter)
        if not 1 / MAX_RESCALE <= scale <= MAX_RESCALE:
            raise EngineError(
                f"engine {self.name}: nuclei of {diameter:g} px would be "
                f"rescaled {scale:.3g}x to the {2 * self.card.object_radius_px:g} px "
                f"it segments best; refusing more than {MAX_RESCALE:g}x either way (check "
                "the diameter and pixel size)"
            )
        return scale

    def _frame_zoom(self) -> float | None:
        """Return the zoom `segment` applies to every frame (its nuclei to the card's size).

        A card that is no segmentation engine's is left to `__init__` to refuse.
        """
        if self.card.task != "segmentation" or self.card.postprocess is None:
            return super()._frame_zoom()
        return self._object_scale()

    def _want_gpu_post(self, asked: bool | None) -> bool:
        if asked is False:
            return False
        on_cuda = _on_cuda(self.session)
        # (a cupy that is installed but cannot run here, no NVRTC or another CUDA, failed
        # every segment() at its first call: it is tried once, and the CPU takes over)
        broken = cupy_problem() if on_cuda and _has("cupy") else None
        has_cupy = _has("cupy") and broken is None
        if asked and not (on_cuda and has_cupy):
            cupy = "missing" if not _has("cupy") else f"not working: {broken}" if broken else ""
            raise EngineError(
                f"engine {self.name}: GPU post-processing needs a CUDA backend and cupy "
                f"(backend {self.backend.name} on {getattr(self.session, 'device', '?')}, "
                f"cupy {cupy or 'present'})"
            )
        return on_cuda and has_cupy

    def segment(self, frame: NDArray[Any], *, normalised: bool = False) -> SegmentationResult:
        """Segment one frame; timings separate the engine from post-processing.

        ``normalised``: the frame is already in normalised units (a virtual
        stain), see `Engine.normalise`.
        """
        t0 = time.perf_counter()
        if abs(self.scale - 1.0) > 1e-3:
            maps = self.infer_scaled(frame, self.scale, normalised=normalised)
        else:
            maps = self.infer(frame, normalised=normalised)
        t1 = time.perf_counter()
        pp = self.card.postprocess
        if pp is None:  # pragma: no cover (checked at load)
            raise EngineError(f"engine {self.name} has no post-processing")
        if self.gpu_postprocess:
            import cupy

            labels = cupy.asnumpy(instance_labels(cupy.asarray(maps), pp, self.scale))
        else:
            labels = instance_labels(maps, pp, self.scale)
        t2 = time.perf_counter()
        return SegmentationResult(labels, 1000 * (t1 - t0), 1000 * (t2 - t1))
