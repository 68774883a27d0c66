"""``livescope engines list/check/build``, ``eval seg/stain/states``, ``bench engines``."""

from __future__ import annotations

import hashlib
import importlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from livescope.schema import install_command

from ._common import (
    JsonOpt,
    emit,
    fail,
    given_or_none,
    positive_size,
    progress_bar,
    report,
    setup_logging,
    stderr,
    user_errors,
)

engines_app = typer.Typer(help="Inference engines: list, check, build.", no_args_is_help=True)
eval_app = typer.Typer(help="Score engines against ground truth.", no_args_is_help=True)


def _relative_error(a: Any, b: Any) -> float:
    import numpy as np

    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-12))


def _test_inputs(cards: list[Any]) -> list[Any]:
    """Build a simulated input for each engine (no data files needed), by task.

    Segmentation: a nuclear-stain frame; virtual staining: the phase frame of
    the same field; classification: the crops of that field's cells (a batch).
    """
    from livescope.inference import cell_crops, normalize_percentile
    from livescope.scope import simulated_views

    view = simulated_views(1, seed=3, objectives=("20x",))[0]
    out = []
    for card in cards:
        if card.task == "classification":
            crops = cell_crops(normalize_percentile(view.fluorescence), view.labels, card.crop_px)[
                1
            ]
            out.append(crops[:64])
        else:
            out.append(view.phase if card.task == "virtual_stain" else view.fluorescence)
    return out


_INSTALL = {
    "tensorrt": (
        f"{install_command('gpu')} (NVIDIA TensorRT, and torch for its device buffers; a CUDA "
        "GPU to build on)"
    ),
    "tensorrt-rtx": f"{install_command('rtx')} (TensorRT-RTX; 64-bit Linux or Windows)",
}
"""What to install for each backend ``engines build`` takes."""


def _fails_to_load(module: str, exc: BaseException) -> str:
    """Say that ``module`` is installed but does not load, and why (its first line)."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return (
        f"{module} is installed but fails to load ({type(exc).__name__}: {first}); a CUDA or "
        f"TensorRT library it needs is missing or of another version"
    )


def _run_any(engine: Any, x: Any) -> Any:
    """Run a frame through `infer`, a batch (4-D) through `run`."""
    return engine.run(x) if x.ndim == 4 else engine.infer(x)


@engines_app.command("list")
def engines_list(json_out: JsonOpt = False) -> None:
    """List shipped engines and the backends that can run here.

    An engine whose card does not load is listed with its error (``task`` null);
    ``livescope engines check`` fails on it.
    """
    from livescope.inference import available_backends, builtin_engines
    from livescope.schema import EngineCard, LivescopeError

    engines = []
    with user_errors(json_out):  # (two engines of one name: said, not a traceback)
        shipped = builtin_engines()
    for name, folder in shipped.items():
        entry: dict[str, Any] = {"name": name, "folder": str(folder)}
        # (one card that does not load, e.g. one added to engines/ by hand, was a
        # traceback: no engine listed, and no JSON)
        try:
            card = EngineCard.from_file(folder / "card.yaml")
        except LivescopeError as exc:
            entry.update(task=None, error=str(exc))
        else:
            entry.update(task=card.task, sha256=card.sha256, metrics=card.metrics)
        engines.append(entry)
    backends = [{"name": n, "available": ok, "detail": why} for n, ok, why in available_backends()]
    if json_out:
        emit({"engines": engines, "backends": backends})
        return
    for e in engines:
        if "error" in e:
            stderr.print(f"[red]{escape(e['name'])}: {escape(e['error'])}[/]", highlight=False)
        else:
            stderr.print(f"{e['name']} ({e['task']}): {e['folder']}", markup=False)
    for b in backends:
        mark = "[green]✓[/]" if b["available"] else "[dim]✗[/]"
        stderr.print(f"{mark} backend {escape(str(b['name']))}: {escape(str(b['detail']))}")


@engines_app.command("check")
def engines_check(
    engines: Annotated[
        list[str] | None,
        typer.Argument(help="Engine names or folders (default: every shipped engine)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Load each engine on every backend that can run here; check parity with ONNX Runtime CPU.

    Also builds each engine ahead of time with TensorRT-RTX where it is installed.
    An engine that does not load (its ONNX changed since its card's sha256, a card
    that does not match the model) fails its check, and the others are still
    checked. Exits 1 if any check fails, 2 if a name is no engine.
    """
    setup_logging(False)
    from livescope.inference import (
        Engine,
        EngineError,
        OnnxRuntimeBackend,
        TensorRTRTXBackend,
        TilePlan,
        backend_status,
        builtin_engines,
        find_engine,
    )
    from livescope.schema import EngineCard, LivescopeError

    with user_errors(json_out):  # (two engines of one name: said, not a traceback)
        # (once each: an engine named twice was checked twice)
        names = list(dict.fromkeys(engines or builtin_engines()))
    by_engine: dict[str, list[dict[str, Any]]] = {n: [] for n in names}

    def add(row: dict[str, Any]) -> None:
        # (said as each check ends: nothing was said until all were done, minutes where
        # TensorRT builds its plans; with --json too, whose stdout stays the one object)
        by_engine[row["engine"]].append(row)
        err = row.get("relative_error", "")
        stderr.print(
            f"{row['engine']} / {row['backend']}: {row['status']} {err} {row.get('detail', '')}",
            markup=False,
        )  # fmt: skip

    # (a library that fails to import is a backend that cannot run, with its error)
    backends = backend_status()
    with user_errors(json_out):
        for n in names:  # a name that is no engine is a mistake in the command (exit 2)
            find_engine(n)
        # an engine that does not load (its ONNX changed, a card that does not match it)
        # is a failed check; the others are still checked (it stopped the whole check,
        # exit 2, nothing said of the engines that were fine)
        refs: dict[str, Any] = {}
        for n in names:
            try:
                # (the CPU provider alone: ONNX Runtime picks CUDA first where it is, and the
                # GPU backends were then held against a GPU run, not the CPU said)
                refs[n] = Engine(n, backend=OnnxRuntimeBackend(cpu_only=True))
            except LivescopeError as exc:
                add({"engine": n, "backend": "onnxruntime (reference)", "status": "error",
                     "detail": str(exc)})  # fmt: skip
        inputs = _test_inputs([e.card for e in refs.values()]) if refs else []
        for (name, ref_engine), frame in zip(refs.items(), inputs, strict=True):
            try:
                ref = _run_any(ref_engine, frame)
            except LivescopeError as exc:
                ref_engine.close()
                add({"engine": name, "backend": "onnxruntime (reference)",
                     "status": "error", "detail": str(exc)})  # fmt: skip
                continue
            odd_row: dict[str, Any] | None = None
            if frame.ndim != 4:  # frame engines take any frame size (padded to the card's multiple)
                odd = frame[..., : frame.shape[-2] - 3, : frame.shape[-1] - 5]
                odd_row = {"engine": name, "backend": "onnxruntime (frame of any size)"}
                try:
                    ref_engine.infer(odd)
                    odd_row.update(status="ok", detail=f"{odd.shape} frame")
                except EngineError as exc:
                    odd_row.update(status="error", detail=str(exc))
            ref_engine.close()
            for b, ok, why in backends:
                row: dict[str, Any] = {"engine": name, "backend": b.name}
                if not ok:
                    add({**row, "status": "unavailable", "detail": why})
                    continue
                try:
                    with Engine(name, backend=b) as e:
                        err = _relative_error(_run_any(e, frame), ref)
                    status = "ok" if err <= 1e-4 else "mismatch"
                    add({**row, "status": status, "relative_error": err, "detail": why})
                except (EngineError, LivescopeError) as exc:
                    add({**row, "status": "error", "detail": str(exc)})
            if odd_row is not None:
                add(odd_row)
            rtx = TensorRTRTXBackend()
            if rtx.installed():
                card: EngineCard = ref_engine.card  # the closed engine still names its model
                t0 = time.perf_counter()
                try:
                    tiles = TilePlan((2048, 2048), card.tiling.tile_px, card.tiling.overlap_px,
                                     card.input.multiple_of)  # fmt: skip
                    plan = rtx.build_ahead_of_time(ref_engine.model_path, card, tiles.tile_shapes())
                    add({"engine": name, "backend": "tensorrt-rtx (ahead-of-time build)",
                         "status": "ok", "plan_bytes": len(plan),
                         "seconds": round(time.perf_counter() - t0, 2)})  # fmt: skip
                except LivescopeError as exc:
                    add({"engine": name, "backend": "tensorrt-rtx (ahead-of-time build)",
                         "status": "error", "detail": str(exc)})  # fmt: skip
                except (ImportError, OSError) as exc:  # (installed, but its library fails to load)
                    add({"engine": name, "backend": "tensorrt-rtx (ahead-of-time build)",
                         "status": "error", "detail": _fails_to_load(rtx.module, exc)})  # fmt: skip
    results = [r for n in names for r in by_engine[n]]
    ok = all(r["status"] in ("ok", "unavailable") for r in results)
    if json_out:
        emit({"ok": ok, "results": results})
    else:  # (each check's line was said as it ended)
        failed = sorted({r["engine"] for r in results if r["status"] not in ("ok", "unavailable")})
        stderr.print(
            f"failed: {', '.join(failed)} (exit 1)" if failed else "all checks passed",
            markup=False, highlight=False,
        )  # fmt: skip
    if not ok:
        raise typer.Exit(1)


@engines_app.command("build")
def engines_build(
    engine: Annotated[str, typer.Argument(help="Engine name or folder.")],
    backend: Annotated[
        str,
        typer.Option(
            help="tensorrt (on this GPU) or tensorrt-rtx (on this GPU, or without one: "
            "give --compute-capability)."
        ),
    ] = "tensorrt",
    profile: Annotated[
        str | None,
        typer.Option(
            callback=given_or_none,
            help="Hardware profile whose frames the plan is for (frame shape → tile plan). "
            "Default: any frame's tiles, the plan the pipeline worker loads.",
        ),
    ] = None,
    precision: Annotated[str, typer.Option(help="fp32 (the pipeline worker's) or fp16.")] = "fp32",
    compute_capability: Annotated[
        list[str] | None, typer.Option(help="tensorrt-rtx ahead of time: e.g. SM89 (repeatable).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Compile an engine's ONNX into a plan for this GPU (or ahead of time with TensorRT-RTX).

    By default the plan the pipeline worker loads (fp32, any frame's tiles), so
    that a run's first start does not wait for the build; a plan for
    ``--profile``'s frames or in fp16 is for other uses (benchmarks, your own code).
    """
    setup_logging(False)
    from livescope.inference import (
        CROP_BATCH,
        Engine,
        OnnxRuntimeBackend,
        TensorRTBackend,
        TensorRTRTXBackend,
        TilePlan,
        plan_cache_dir,
        plan_file,
        select_backend,
    )
    from livescope.schema import LivescopeError, load_profile, write_atomic

    with user_errors(json_out):
        if backend not in ("tensorrt", "tensorrt-rtx"):
            fail(
                f"engines build makes TensorRT plans: --backend tensorrt or tensorrt-rtx, not "
                f"{backend!r} (the other backends need no build; `livescope engines check` "
                "runs them)",
                as_json=json_out,
            )
        if compute_capability and backend != "tensorrt-rtx":
            fail("--compute-capability is for tensorrt-rtx's ahead-of-time build", as_json=json_out)
        prof = None if profile is None else load_profile(profile)
        frame_shape = None if prof is None else prof.camera.sensor_shape_px
        # (checks the precision too, also for the ahead-of-time build that takes the
        # ONNX graph's: ONNX Runtime's session says which it is)
        ref = Engine(engine, backend=OnnxRuntimeBackend(), precision=precision)
        card, model, graph = ref.card, ref.model_path, ref.runtime()["precision"]
        ref.close()
        shapes = [] if prof is None else TilePlan.for_profile(prof, card).tile_shapes()
        library = (TensorRTRTXBackend if backend == "tensorrt-rtx" else TensorRTBackend)()
        if not library.installed():  # (said with what to install, before any work)
            raise LivescopeError(
                f"engines build --backend {backend}: {library.module} is not installed; "
                f"install it with: {_INSTALL[backend]}"
            )
        # (said before "building ... minutes", which came first: a backend that cannot
        # run here, or a GPU generation the library does not know)
        on_this_gpu = None
        if backend == "tensorrt-rtx" and compute_capability:
            _refuse_unknown_capabilities(library.module, compute_capability)
        else:
            try:
                on_this_gpu = select_backend(backend)
            except LivescopeError as exc:
                if backend != "tensorrt-rtx":
                    raise
                raise LivescopeError(
                    f"{exc}; to build without a GPU, name the GPUs it is for: "
                    "--compute-capability SM89 (repeatable)"
                ) from None
        if not json_out:  # (nothing was said during a build of minutes on a rig's GPU)
            target = (
                f"ahead of time for {', '.join(compute_capability)}: this can take minutes"
                if compute_capability
                else f"for this GPU, {precision}: minutes, unless it is cached already"
            )
            stderr.print(f"building {card.name}'s {backend} plan {target}", markup=False,
                         highlight=False)  # fmt: skip
        t0 = time.perf_counter()
        if backend == "tensorrt-rtx" and compute_capability:
            try:
                # (another precision than the graph's is warned about: it built fp32
                # without a word when fp16 was asked)
                plan = TensorRTRTXBackend().build_ahead_of_time(
                    model, card, shapes, compute_capability, precision=precision
                )
            except (ImportError, OSError) as exc:  # (a traceback, and no JSON, until now)
                raise LivescopeError(_fails_to_load(library.module, exc)) from None
            # (keyed by what the plan is built from, as the worker's plans are: a build for
            # another profile, or another model of the same name, overwrote the last one)
            made_from = repr((card.model_dump_json(), [(int(h), int(w)) for h, w in shapes]))
            key = hashlib.sha256(made_from.encode()).hexdigest()[:16]
            out = plan_file(card.name, "tensorrt-rtx-aot", key, *compute_capability)
            out.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(out, plan)  # (never half a plan, e.g. after a Ctrl+C)
            result = {"plan": str(out), "bytes": len(plan)}
            built = graph  # (the ahead-of-time build takes its precision from the ONNX graph)
        else:
            with Engine(
                engine, backend=on_this_gpu, precision=precision, frame_shape=frame_shape
            ) as eng:
                # (the plan's own: TensorRT >= 11 and -RTX build in the ONNX graph's,
                # whatever was asked, which was reported)
                built = eng.runtime()["precision"]
                # (the tiles the plan was built for: any frame's where frames are zoomed
                # call by call (a card with a pixel size); the profile's unzoomed tiles
                # were reported)
                shapes = eng.profile_shapes
            result = {"plan_cache": str(plan_cache_dir())}
        # (a per-cell classifier's plan takes batches of fixed crops, not tiles)
        inputs = (
            {"crop_px": card.crop_px, "batch": [CROP_BATCH[0], CROP_BATCH[-1]]}
            if card.crop_px is not None
            else {"tile_shapes": shapes or "any"}
        )  # fmt: skip
        result.update({"ok": True, "engine": card.name, "backend": backend, **inputs,
                       "precision": built,
                       "seconds": round(time.perf_counter() - t0, 2)})  # fmt: skip
    report(result, json_out)


def _refuse_unknown_capabilities(module: str, wanted: list[str]) -> None:
    """Refuse ``--compute-capability`` values that TensorRT-RTX (``module``) does not know.

    Raises
    ------
    LivescopeError
        naming the unknown ones and those it knows, or saying that the library,
        installed, does not load.

    """
    from livescope.schema import LivescopeError

    try:
        trt = importlib.import_module(module)
    except (ImportError, OSError) as exc:  # (installed, but its library fails to load)
        raise LivescopeError(_fails_to_load(module, exc)) from None
    known = [n for n in dir(trt.ComputeCapability) if n.startswith("SM")]
    if unknown := [cc for cc in wanted if cc not in known]:
        raise LivescopeError(
            f"--compute-capability {', '.join(unknown)}: unknown to {module} "
            f"{trt.__version__}, which knows {', '.join(known)}"
        )


@eval_app.command("seg")
def eval_seg(
    engine: Annotated[
        str, typer.Option(help="Engine name or folder ('classical' for Otsu+watershed).")
    ],
    images: Annotated[Path, typer.Option(help="Folder of images.")],
    labels: Annotated[Path, typer.Option(help="Folder of instance labels (same file names).")],
    backend: Annotated[str | None, typer.Option(help="Backend (default: best available).")] = None,
    per_image: Annotated[bool, typer.Option(help="Include per-image scores.")] = False,
    diameter: Annotated[
        float | None,
        typer.Option(
            help="Typical nucleus diameter in the images, px: frames are rescaled to the size "
            "the engine segments best (its card's object_radius_px), labels come back at the "
            "images' size. Default: as they are."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """AP@0.5, mAP@0.5:0.95, F1, precision, recall, counts and ms per image (engine, post)."""
    setup_logging(False)
    from livescope.inference import SegmentationEngine, evaluate_segmentation

    with user_errors(json_out):
        if engine == "classical":
            given = [f"--{n} {v}" for n, v in (("backend", backend), ("diameter", diameter))
                     if v is not None]  # fmt: skip
            if given:
                fail(
                    f"{', '.join(given)}: the classical pipeline runs no engine (scikit-image "
                    "on the CPU, no rescaling); drop it or name an engine",
                    as_json=json_out,
                )
        # the options and folders first, before an engine is loaded
        positive_size("--diameter", diameter, "object diameter", "px")
        for option, folder in (("--images", images), ("--labels", labels)):
            _check_input(option, folder, folder=True)
        _refuse_swapped_folders(images, labels)
        if engine == "classical":
            with progress_bar("scoring", json_out=json_out) as (bar, task):
                result = evaluate_segmentation(
                    None, images, labels, classical=True,
                    progress=lambda k, n: bar.update(task, completed=k, total=n),
                )  # fmt: skip
        else:
            with (
                SegmentationEngine(engine, backend=backend, object_diameter_px=diameter) as e,
                progress_bar("scoring", json_out=json_out) as (bar, task),
            ):
                e.warmup()
                result = evaluate_segmentation(
                    e, images, labels, progress=lambda k, n: bar.update(task, completed=k, total=n)
                )
                result["engine"] = e.name
                result["backend"] = e.backend.name
                if diameter is not None:
                    result["scale"] = round(e.scale, 4)
        if not per_image:
            result.pop("per_image")
    report(result, json_out)


def _check_input(option: str, path: Path, *, folder: bool = False) -> None:
    """Refuse a missing input (or a file where a folder is needed), naming its option.

    Said before an engine loads: the path alone was named ("nosuch does not
    exist"), after the engine had loaded and warnings about other options.
    """
    from livescope.schema import LivescopeError

    if not path.exists():
        raise LivescopeError(f"{option} {path}: does not exist")
    if folder and not path.is_dir():
        raise LivescopeError(f"{option} {path}: is not a folder")


def _refuse_swapped_folders(images: Path, labels: Path) -> None:
    """Refuse a first label image that is none (--images and --labels swapped?), by its path.

    `evaluate_segmentation` names a file without its folder ("a.tif: ..."),
    and only once the engine has loaded; the pairing's own errors (no image,
    no label file of its name, the same folder twice) are left to it.

    Raises
    ------
    LivescopeError
        naming the label file's path.

    """
    from livescope.inference import as_instance_labels, read_image

    if images.resolve() == labels.resolve():
        return
    first = min(
        (p for p in images.iterdir()
         if p.suffix.lower() in (".tif", ".tiff", ".png") and not p.name.startswith(".")),
        default=None,
    )  # fmt: skip
    if first is None or not (labels / first.name).is_file():
        return
    truth = read_image(labels / first.name, labels=True)
    if truth.ndim == 2:  # (another shape: refused with the image's)
        as_instance_labels(truth, str(labels / first.name))


def _print_scores(result: dict[str, Any], engine: Any, json_out: bool) -> None:
    """Print an engine's scores with its name and backend: JSON on stdout, or on stderr."""
    result = {**result, "engine": engine.name, "backend": engine.backend.name}
    report(result, json_out)


def _seeds(text: str) -> list[int]:
    from livescope.schema import LivescopeError

    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LivescopeError(
            f"--simulated {text!r} is not a comma-separated list of seeds"
        ) from None
    if not seeds:
        raise LivescopeError("--simulated names no seed (e.g. --simulated 100,101,102)")
    if negative := [s for s in seeds if s < 0]:
        raise LivescopeError(f"--simulated: a seed is a whole number >= 0, got {negative[0]}")
    return seeds


@eval_app.command("stain")
def eval_stain(
    engine: Annotated[str, typer.Option(help="Virtual-staining engine name or folder.")],
    input: Annotated[
        Path | None, typer.Option(help="Label-free image file, or folder (paired by file name).")
    ] = None,
    target: Annotated[
        Path | None, typer.Option(help="Fluorescence image file, or folder (same file names).")
    ] = None,
    crop: Annotated[
        str | None, typer.Option(help="Score only ROW0:ROW1,COL0:COL1 (e.g. a held-aside part).")
    ] = None,
    pixel_size: Annotated[
        float | None, typer.Option(help="Input pixel size, µm (rescaled to the card's).")
    ] = None,
    simulated: Annotated[
        str | None,
        typer.Option(help="Score on simulated fields from these seeds instead, e.g. 100,101,102."),
    ] = None,
    views: Annotated[int, typer.Option(min=1, help="Simulated fields per seed.")] = 8,
    segment_with: Annotated[
        str | None,
        typer.Option(help="Simulated only: also segment the stain with this engine (seg_f1)."),
    ] = None,
    backend: Annotated[str | None, typer.Option(help="Backend (default: best available).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Pearson r, SSIM, PSNR (targets normalised as the card states) and ms per frame."""
    setup_logging(False)
    from livescope.inference import StainEngine, evaluate_stain, parse_crop
    from livescope.schema import LivescopeError

    with user_errors(json_out):  # the options first, before an engine is loaded
        if simulated is not None and (input is not None or target is not None):
            raise LivescopeError("give --input and --target, or --simulated SEEDS, not both")
        if simulated is None and (input is None or target is None):
            raise LivescopeError("give --input and --target, or --simulated SEEDS")
        seeds = _seeds(simulated) if simulated is not None else []
        positive_size("--pixel-size", pixel_size, "pixel size", "µm")
        box = parse_crop(crop)
        if simulated is not None and (crop is not None or pixel_size is not None):
            # (they were read, checked, then left out: whole frames scored at each simulated
            # view's own pixel size, as though the crop or the size had been applied)
            given = " and ".join(o for o, v in (("--crop", crop), ("--pixel-size", pixel_size))
                                 if v is not None)  # fmt: skip
            raise LivescopeError(
                f"{given}: only with --input and --target; simulated pairs are scored whole, "
                "at each view's own pixel size"
            )
        if segment_with is not None:
            if simulated is None:
                raise LivescopeError(
                    "--segment-with scores against the simulator's nuclei: give --simulated SEEDS"
                )
            _check_segmenter(segment_with)
        for option, path in (("--input", input), ("--target", target)):  # (then the paths)
            if path is not None:
                _check_input(option, path)
    with user_errors(json_out), StainEngine(engine, backend=backend) as e:
        e.warmup()
        if simulated is not None:
            from livescope.pipeline import score_stain_simulated, views_for_seeds

            # (as eval states does: seconds a field, and nothing was said meanwhile)
            with progress_bar("scoring", json_out=json_out) as (bar, task):
                result = score_stain_simulated(
                    e, views_for_seeds(seeds, views), segmenter=segment_with,
                    progress=lambda k, n: bar.update(task, completed=k, total=n),
                )  # fmt: skip
            result["simulated_seeds"] = seeds
        else:
            assert input is not None  # (checked above, with target)
            assert target is not None
            if pixel_size is None and e.card.pixel_size_um is not None:  # (as eval states says)
                stderr.print(
                    f"warning: no --pixel-size: the input is taken to be at the engine's "
                    f"{e.card.pixel_size_um:g} µm per pixel (not rescaled)",
                    highlight=False,
                )
            with progress_bar("scoring", json_out=json_out) as (bar, task):
                result = evaluate_stain(
                    e, input, target, crop=box, pixel_size_um=pixel_size,
                    progress=lambda k, n: bar.update(task, completed=k, total=n),
                )  # fmt: skip
            result.pop("per_frame")
    _print_scores(result, e, json_out)


def _check_segmenter(name: str) -> None:
    """Refuse, before any work, an engine that cannot segment (e.g. the cell-state classifier)."""
    from livescope.inference import EngineError, find_engine
    from livescope.schema import EngineCard

    card = EngineCard.from_file(find_engine(name) / "card.yaml")
    if card.task != "segmentation":
        raise EngineError(
            f"--segment-with {name}: it is a {card.task} engine, not a segmentation engine "
            "(e.g. nuclei-unet)"
        )
    if card.postprocess is None:
        raise EngineError(f"--segment-with {name}: its card gives no segmentation post-processing")


@eval_app.command("states")
def eval_states(
    engine: Annotated[str, typer.Option(help="Cell-state engine name or folder.")],
    simulated: Annotated[
        str | None, typer.Option(help="Score on simulated fields from these seeds, e.g. 100,101.")
    ] = None,
    views: Annotated[int, typer.Option(min=1, help="Simulated fields per seed.")] = 20,
    images: Annotated[
        Path | None, typer.Option(help="CTC image folder (tTTT.tif): report divisions flagged.")
    ] = None,
    gt: Annotated[Path | None, typer.Option(help="CTC ground-truth folder (with TRA/).")] = None,
    pixel_size: Annotated[float | None, typer.Option(help="CTC images' pixel size, µm.")] = None,
    frames_before: Annotated[
        int, typer.Option(min=1, help="Frames before a split that count.")
    ] = 5,
    backend: Annotated[str | None, typer.Option(help="Backend (default: best available).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Mitosis precision/recall on simulated cells, or divisions flagged in a CTC sequence."""
    setup_logging(False)
    from livescope.inference import CellStateEngine
    from livescope.pipeline import flag_divisions_ctc, score_states_simulated, views_for_seeds
    from livescope.schema import LivescopeError

    with user_errors(json_out):  # the options and folders first, before an engine is loaded
        if simulated is not None and (images is not None or gt is not None):
            raise LivescopeError("give --simulated SEEDS, or --images and --gt, not both")
        seeds = _seeds(simulated) if simulated is not None else []
        positive_size("--pixel-size", pixel_size, "pixel size", "µm")
        if simulated is not None and pixel_size is not None:
            # (it was read, checked, then left out: each view classified at its own size)
            raise LivescopeError(
                "--pixel-size: only with --images and --gt (the CTC images'); simulated views "
                "are classified at each view's own pixel size"
            )
        if simulated is None:
            if images is None or gt is None:
                raise LivescopeError("give --simulated SEEDS, or --images and --gt")
            for what, folder in (("--images", images), ("--gt", gt)):
                if not folder.is_dir():
                    raise LivescopeError(f"{what} {folder} does not exist or is not a folder")
            _refuse_unnumbered_frames(images)
    with user_errors(json_out), CellStateEngine(engine, backend=backend) as e:
        if simulated is not None:
            with progress_bar("classifying", json_out=json_out) as (bar, task):
                result = score_states_simulated(
                    e, views_for_seeds(seeds, views),
                    progress=lambda k, n: bar.update(task, completed=k, total=n),
                )  # fmt: skip
            result["simulated_seeds"] = seeds
        else:
            assert images is not None  # (checked above, with gt)
            assert gt is not None
            if pixel_size is None and e.card.pixel_size_um is not None:
                stderr.print(
                    f"warning: no --pixel-size: the images are taken to be at the classifier's "
                    f"{e.card.pixel_size_um:g} µm per pixel (cells' crops are not rescaled)",
                    highlight=False,
                )
            with progress_bar("classifying", json_out=json_out) as (bar, task):
                result = flag_divisions_ctc(
                    e, images, gt, pixel_size_um=pixel_size, frames_before=frames_before,
                    progress=lambda k, n: bar.update(task, completed=k, total=n),
                )  # fmt: skip
            result["pixel_size_um"] = pixel_size  # (None: taken to be the card's)
    _print_scores(result, e, json_out)


def _refuse_unnumbered_frames(images: Path) -> None:
    """Refuse a CTC image folder without one frame named tTTT.tif, saying what it holds.

    "imgs has 0 frames, gt annotates 3" did not say that frames are found by
    their names (t000.tif, t001.tif ...), nor which names the folder has.
    """
    from livescope.schema import LivescopeError

    names = sorted(p.name for p in images.iterdir() if not p.name.startswith("."))
    if any(re.fullmatch(r"t\d+\.tif", n) for n in names):
        return  # (too few or too many: said against the ground truth's frames)
    found = (
        f"it holds {', '.join(names[:3])}{', …' if len(names) > 3 else ''}"
        if names
        else "it is empty"
    )
    raise LivescopeError(
        f"--images {images}: no frame named tTTT.tif (t000.tif, t001.tif ...: frame TTT of "
        f"the ground truth's); {found}"
    )


def _backend_failed(engine: str, b: Any, exc: Exception) -> dict[str, Any]:
    """Make the row of a backend, said to be available, that failed to build or run ``engine``.

    Said on stderr as well, as it happens: the benchmark goes on with the other
    backends, for minutes.
    """
    stderr.print(f"{engine} / {b.name}: error {exc}", markup=False, highlight=False)
    return {"backend": b.name, "available": True, "error": str(exc)}


def _rows_per_backend(
    engine: str,
    open_engine: Callable[[Any], Any],
    timed: Callable[[Any], Iterator[dict[str, Any]]],
    *,
    tag: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Time ``engine`` on each backend: the rows ``timed(e)`` yields, ``e = open_engine(b)``.

    Each row is ``tag`` (e.g. the engine's name), the backend, its device and the
    row's own keys. A backend that cannot run here has one row, ``available``
    false and why (``detail``). One said to be available may still fail to
    build the engine (e.g. a TensorRT build out of GPU memory) or to run it:
    its row says so (`_backend_failed`), the rows it made before are kept, and
    the other backends are still timed (a failure had stopped the whole
    benchmark, exit 2, the other results lost).
    """
    from livescope.inference import backend_status
    from livescope.schema import LivescopeError

    tag = tag or {}
    rows: list[dict[str, Any]] = []
    for b, ok, why in backend_status():  # (a library failing to load: cannot run)
        if not ok:
            rows.append({**tag, "backend": b.name, "available": False, "detail": why})
            continue
        try:
            with open_engine(b) as e:
                for row in timed(e):  # (each kept as it comes: a later size may fail)
                    rows.append({**tag, "backend": b.name, "device": why, **row})
        except LivescopeError as exc:  # (EngineError, BackendRunError: the engine's, not ours)
            rows.append({**tag, **_backend_failed(engine, b, exc)})
    return rows


def _bench_stain(name: str, repeats: int) -> list[dict[str, Any]]:
    """Virtual-staining ms per frame per backend at 512², 1024², 2048² (simulated phase).

    A backend that cannot run here has a row with ``available`` false and why
    (``detail``); one that fails to build or run the engine, a row with its ``error``.
    """
    import numpy as np

    from livescope.inference import StainEngine
    from livescope.scope import simulated_views

    frames = {
        size: [v.phase for v in simulated_views(repeats, seed=size, size=size, objectives=("20x",))]
        for size in (512, 1024, 2048)
    }

    def timed(e: StainEngine) -> Iterator[dict[str, Any]]:
        for size, items in frames.items():
            # (a whole call at each size first: only the engine at 512² was warmed, so
            # each size's first frame paid its first-call costs in the timing)
            e.predict(items[0])
            ms = [e.predict(f).ms for f in items]
            yield {"size": size, "ms_total": round(float(np.median(ms)), 1)}

    return _rows_per_backend(
        name, lambda b: StainEngine(name, backend=b), timed, tag={"engine": name}
    )


def _grid_of_cells(n: int, radius: int = 9) -> tuple[Any, Any]:
    """Make a frame with ``n`` Gaussian nuclei on a grid, and their labels (timing only)."""
    import numpy as np

    side = int(np.ceil(np.sqrt(n)))
    pitch = 4 * radius
    size = side * pitch
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = (yy // pitch) * pitch + pitch // 2, (xx // pitch) * pitch + pitch // 2
    idx = (yy // pitch) * side + (xx // pitch) + 1
    r2 = (yy - cy) ** 2 + (xx - cx) ** 2
    labels = np.where((r2 <= radius**2) & (idx <= n), idx, 0).astype(np.int32)
    frame = (100 + 1000 * np.exp(-r2 / (2 * (radius / 1.5) ** 2)) * (labels > 0)).astype(np.uint16)
    return frame, labels


def _bench_states(name: str, repeats: int) -> list[dict[str, Any]]:
    """Cell-state ms per frame (crops + one batched engine call) for 100 and 1,000 cells.

    Rows of a backend that cannot run here, or fails to build or run the engine:
    as `_bench_stain`'s.
    """
    import numpy as np

    from livescope.inference import CellStateEngine

    cases = {n: _grid_of_cells(n) for n in (100, 1000)}

    def timed(e: CellStateEngine) -> Iterator[dict[str, Any]]:
        for n, (frame, labels) in cases.items():
            # (a whole call for each cell count first: 1,000 cells are another batch
            # shape, whose first call was timed)
            e.classify(frame, labels)
            ms = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                e.classify(frame, labels)
                ms.append(1000 * (time.perf_counter() - t0))
            median = float(np.median(ms))
            yield {"cells": n, "ms_total": round(median, 1),
                   "us_per_cell": round(1000 * median / n, 1)}  # fmt: skip

    return _rows_per_backend(
        name, lambda b: CellStateEngine(name, backend=b), timed, tag={"engine": name}
    )


def bench_engines(
    json_out: bool = True,
    engine: str = "nuclei-unet",
    repeats: int = 3,
    *,
    stain: str | None = "nuclei-stain",
    states: str | None = "cell-state",
) -> None:
    """Milliseconds per frame per backend at 512², 1024², 2048² with post-processing apart.

    Side by side: the classical Otsu + watershed pipeline on the same (simulated,
    ground-truthed) frames, with both methods' AP@0.5. Each engine makes one
    whole call (engine and post-processing) at each size before it is timed.
    A backend that cannot run here has one row, ``available`` false and why
    (``detail``); one said to be available that fails to build or run an engine
    has a row with its ``error``, the others are still timed, and ``ok`` is
    false (exit 1 once the JSON is printed).
    """
    setup_logging(False)
    import numpy as np

    from livescope.bus import machine_info
    from livescope.inference import (
        SegmentationEngine,
        classical_segmentation,
        find_engine,
        match_counts,
        scores,
    )
    from livescope.scope import simulated_frames

    with user_errors(json_out):
        for name in (engine, stain, states):  # every name now, not once the others have run
            if name is not None:
                find_engine(name)
        frames = {
            size: simulated_frames(repeats, size=size, seed=size) for size in (512, 1024, 2048)
        }

        def timed(e: SegmentationEngine) -> Iterator[dict[str, Any]]:
            for size, items in frames.items():
                # (a whole segment() at each size first: the warm-up ran the engine at 512²
                # only, so the first frame's post-processing, scikit-image's import
                # included, was timed in the first backend's 512² ms_post)
                e.segment(items[0][0])
                eng, post, counts = [], [], []
                for frame, truth in items:
                    r = e.segment(frame)
                    eng.append(r.ms_engine)
                    post.append(r.ms_post)
                    counts.append(scores(match_counts(truth, r.labels))["ap50"])
                total = float(np.median(eng) + np.median(post))
                yield {
                    "size": size,
                    "ms_engine": round(float(np.median(eng)), 1),
                    "ms_post": round(float(np.median(post)), 1),
                    "ms_total": round(total, 1),
                    "post_share": round(float(np.median(post)) / total, 3),
                    "ap50_sim": round(float(np.mean(counts)), 3),
                }

        rows = _rows_per_backend(engine, lambda b: SegmentationEngine(engine, backend=b), timed)
        for size, items in frames.items():
            classical_segmentation(items[0][0])  # (its first call at each size, as the engines')
            ms, aps = [], []
            for frame, truth in items:
                t0 = time.perf_counter()
                lab = classical_segmentation(frame)
                ms.append(1000 * (time.perf_counter() - t0))
                aps.append(scores(match_counts(truth, lab))["ap50"])
            rows.append({"backend": "classical (Otsu + watershed)", "size": size,
                         "ms_total": round(float(np.median(ms)), 1),
                         "ap50_sim": round(float(np.mean(aps)), 3)})  # fmt: skip
        stain_rows = _bench_stain(stain, repeats) if stain else []
        state_rows = _bench_states(states, repeats) if states else []
    cpu_1024 = [r for r in rows if r.get("size") == 1024 and r.get("backend") == "onnxruntime"]
    failed = [r for r in rows + stain_rows + state_rows if "error" in r]
    emit({
        "bench": "engines",
        "ok": not failed,  # (as `engines check` says it: false when a backend failed)
        "engine": engine,
        "results": rows,
        "post_share_1024_cpu": cpu_1024[0]["post_share"] if cpu_1024 else None,
        "target_post_share_1024_cpu": 0.25,
        "stain": stain_rows,
        "states": state_rows,
        "machine": machine_info(),  # (timed once the engines are done)
    })  # fmt: skip
    if failed:  # (each was said on stderr as it failed; exit 1, as `engines check`)
        names = ", ".join(
            dict.fromkeys(f"{r.get('engine', engine)} / {r['backend']}" for r in failed)
        )
        stderr.print(f"failed: {names} (exit 1)", markup=False, highlight=False)
        raise typer.Exit(1)
