"""``livescope track``, ``livescope eval track`` and ``livescope bench track``."""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import (
    BenchJsonOpt,
    JsonOpt,
    given_or_none,
    given_path,
    positive_size,
    report,
    setup_logging,
    stderr,
    user_errors,
)

__all__ = ["bench_track", "eval_track", "track"]


def _frame_files(folder: Path) -> tuple[int, list[Path]]:
    """TIFF frames of a CTC-layout folder (t000.tif, man_track000.tif, mask000.tif ...).

    Returns the first frame's number and the files, consecutive from it.
    """
    from livescope.schema import LivescopeError, check_input_folder

    check_input_folder(folder)
    numbered = []
    for p in folder.iterdir():
        m = re.fullmatch(r"[A-Za-z_]*?(\d+)\.tiff?", p.name)
        if m:
            numbered.append((int(m.group(1)), p))
    if not numbered:
        raise LivescopeError(f"{folder} holds no numbered TIFF frames (e.g. t000.tif)")
    numbered.sort()
    clash = [(a, b) for (n, a), (m, b) in itertools.pairwise(numbered) if n == m]
    if clash:
        a, b = clash[0]
        raise LivescopeError(
            f"{folder}: {a.name} and {b.name} have the same frame number (one frame per number)"
        )
    idx = [n for n, _ in numbered]
    if idx != list(range(idx[0], idx[0] + len(idx))):
        missing = sorted(set(range(idx[0], idx[-1] + 1)) - set(idx))
        raise LivescopeError(f"{folder}: frames are not consecutive (missing {missing[:5]})")
    return idx[0], [p for _, p in numbered]


def track(
    images: Annotated[
        Path,
        typer.Argument(
            parser=given_path,
            help="CTC-layout folder of frames (t000.tif ...), consecutive; the result keeps "
            "their numbers (one that starts at t010 gives empty mask000..mask009).",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(parser=given_path, help="Result folder (new): maskTTT.tif + res_track.txt."),
    ],
    engine: Annotated[
        str | None,
        typer.Option(
            callback=given_or_none,  # ("": the default engine ran in its place, silently)
            help="Segmentation engine (name or folder). Default: nuclei-unet.",
        ),
    ] = None,
    from_labels: Annotated[
        bool,
        typer.Option(help="IMAGES are instance label images already: track them as they are."),
    ] = False,
    backend: Annotated[str | None, typer.Option(help="Engine backend (default: best).")] = None,
    diameter: Annotated[
        float | None,
        typer.Option(
            help="Typical nucleus diameter in the images, px: frames are rescaled to the size "
            "the engine segments best (its card's object_radius_px). Default: as they are."
        ),
    ] = None,
    state: Annotated[
        Path | None, typer.Option(help="Save the tracker's state here at the end (JSON).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Segment (unless --from-labels) and track a sequence; write a CTC result.

    The tracker is the causal one used live: each frame is linked as it comes.
    Frames keep their numbers: from a folder that starts at t010 (a part of a
    sequence), the masks and the tracks' first and last frames in res_track.txt
    and --state are numbered as the input (and its CTC ground truth) are, the
    masks before the first are empty (CTC results start at mask000).
    """
    setup_logging(False)
    import numpy as np
    from rich.progress import Progress

    from livescope.inference import as_instance_labels, read_image, refuse_label_image
    from livescope.record import relabel_for_ctc, write_ctc
    from livescope.schema import LivescopeError, check_output_folder
    from livescope.tracking import OnlineTracker, track_sequence

    with user_errors(json_out):
        if from_labels:
            given = [f"--{n}" for n, v in (("engine", engine), ("backend", backend),
                                           ("diameter", diameter)) if v is not None]  # fmt: skip
            if given:
                raise LivescopeError(
                    f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for segmenting, "
                    "and --from-labels segments nothing: drop one or the other"
                )
        positive_size("--diameter", diameter, "object diameter", "px")  # (before any frame)
        first, files = _frame_files(images)
        if out.exists() and not out.is_dir():
            raise LivescopeError(f"{out} is a file: --out must be a new result folder")
        if out.exists() and any(out.iterdir()):
            raise LivescopeError(f"{out} exists and is not empty: choose a new result folder")
        # (a parent that is a file, or not writable: said now, not once every frame is segmented)
        check_output_folder(out)
        if state is not None and (state.is_dir() or not state.parent.is_dir()):
            raise LivescopeError(
                f"--state {state}: "
                + ("is a folder" if state.is_dir() else f"folder {state.parent} does not exist")
                + " (give a file path in an existing folder)"
            )
        seg = None
        if not from_labels:  # label images given without --from-labels: before the engine loads
            for p in dict.fromkeys((files[0], files[len(files) // 2], files[-1])):
                refuse_label_image(
                    read_image(p), str(p), "; to track label images as they are, add --from-labels"
                )
            from livescope.inference import SegmentationEngine

            seg = SegmentationEngine(
                engine or "nuclei-unet", backend=backend, object_diameter_px=diameter
            )
            seg.warmup()
        ms_seg: list[float] = []

        def frames() -> Any:
            shape = None
            for p in files:
                img = read_image(p)
                if img.ndim != 2:
                    raise LivescopeError(f"{p}: expected a 2-D frame, got shape {img.shape}")
                if shape is not None and img.shape != shape:
                    raise LivescopeError(
                        f"{p}: frame of {img.shape[0]}x{img.shape[1]} px, the sequence's first "
                        f"is {shape[0]}x{shape[1]} (every frame must have the same size)"
                    )
                shape = img.shape
                if seg is None:
                    if not np.issubdtype(img.dtype, np.integer):
                        raise LivescopeError(f"{p}: label images must be integer, not {img.dtype}")
                    # (not raw frames: --from-labels)
                    yield as_instance_labels(img, str(p), "; to segment them, drop --from-labels")
                else:
                    if img.dtype.kind == "f" and not np.isfinite(img).all():
                        raise LivescopeError(f"{p}: the frame holds NaN or infinite values")
                    r = seg.segment(img)
                    ms_seg.append(r.ms_engine + r.ms_post)
                    yield r.labels

        tracker = OnlineTracker()
        if first > 0:
            # (numbered from 0, every begin and end of res_track.txt and the state was
            # `first` frames early; the tracker goes on from the frame before the first)
            tracker.skip(first - 1)
        t0 = time.perf_counter()
        with Progress(console=stderr, transient=True, disable=json_out) as bar:
            task = bar.add_task("tracking", total=len(files))
            seq = track_sequence(
                frames(),
                tracker=tracker,
                progress=lambda k: bar.update(task, completed=k),
            )
        wall = time.perf_counter() - t0
        if seg is not None:
            seg.close()
        # (only the frames given: the empty ones before them are written by write_ctc, one
        # image for all; relabelled one by one they cost minutes and GB from t1500)
        masks, tracks, _ = relabel_for_ctc(seq.id_frames, seq.parents, first_frame=first)
        write_ctc(out, masks, tracks, kind="res", first_frame=first)
        if state is not None:
            tracker.save(state)
        ms_total = 1000 * wall / len(files)
        result = {
            "ok": True,
            "out": str(out),
            "frames": len(files),
            "first_frame": first,
            "tracks": len(tracks),
            "divisions": len(seq.divisions),
            "engine": None if seg is None else seg.name,
            "ms_segment": round(float(np.mean(ms_seg)), 2) if ms_seg else 0.0,
            "ms_track": round(ms_total - (float(np.mean(ms_seg)) if ms_seg else 0.0), 2),
        }
    report(result, json_out)


def eval_track(
    res: Annotated[
        Path,
        typer.Option(parser=given_path, help="CTC result folder (maskTTT.tif + res_track.txt)."),
    ],
    gt: Annotated[
        Path, typer.Option(parser=given_path, help="CTC ground-truth folder (holding TRA/).")
    ],
    div_tolerance: Annotated[
        int, typer.Option(min=0, help="Frames a division may be off and still match.")
    ] = 1,
    json_out: JsonOpt = False,
) -> None:
    """TRA, DET, LNK (py-ctcmetrics), division precision / recall / F1, frames, tracks."""
    setup_logging(False)
    from livescope.tracking import evaluate_tracking

    with user_errors(json_out):
        result = evaluate_tracking(res, gt, div_tolerance=div_tolerance)
    report(result, json_out)


def bench_track(
    cells: Annotated[
        list[int] | None, typer.Option(help="Cell counts for the scaling run (repeatable).")
    ] = None,
    frames: Annotated[int, typer.Option(min=3, help="Frames per scaling run.")] = 20,
    sim_cells: Annotated[
        int, typer.Option(min=1, help="Cells per frame of the simulated peer comparison.")
    ] = 2000,
    sim_frames: Annotated[
        int, typer.Option(min=3, help="Frames of the simulated peer comparison.")
    ] = 20,
    gowt1: Annotated[
        bool, typer.Option(help="Also compare the peers on GOWT1 01's markers (if present).")
    ] = True,
    json_out: BenchJsonOpt = True,
) -> None:
    """Tracker speed against the number of cells, and peers on the same detections.

    Scaling: moving disks at each cell count, ms per frame from the label images;
    the ratio of ms per cell between the largest and smallest count shows the
    growth (1 = linear). Simulated peers: ours, laptrack and trackpy (where
    installed) link the same measured objects of ``--sim-cells`` moving cells:
    seconds, objects per second, ms per frame, link precision and recall against
    the truth, and our objects per second over the faster peer's. GOWT1: where
    ``$LIVESCOPE_DATA`` (or ../shared/data) holds ctc-Fluo-N2DH-GOWT1, all three
    track the ground-truth markers (ids removed), scored with the CTC metrics.
    """
    setup_logging(False)
    from livescope.bus import machine_info
    from livescope.cli._track_bench import (
        bench_scaling,
        compare_peers_gowt1,
        compare_peers_simulated,
    )

    with user_errors(json_out):
        # ("bench" first, as every benchmark's JSON names itself)
        result: dict[str, Any] = {"bench": "track"}
        result["scaling"] = bench_scaling(cells or [100, 1000, 4000], frames)
        result["peers_simulated"] = compare_peers_simulated(sim_cells, sim_frames)
        if gowt1:
            result["peers_gowt1_markers"] = compare_peers_gowt1()
        result["machine"] = machine_info()  # (timed once the trackers are done)
    report(result, json_out)
