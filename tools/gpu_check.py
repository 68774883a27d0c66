"""GPU check: every available backend on the shipped engines, timed and compared.

    python tools/gpu_check.py --out gpu_check.json [--seconds-per-case 5]

For each shipped engine and each backend that can run on this machine, at
512², 1024² and 2048² frames: p50/p99 milliseconds per frame (engine only, and
engine + post-processing on the CPU), peak GPU memory (torch's allocator,
where torch drives the device) and what is left allocated after ``close()``,
parity with ONNX Runtime on the CPU (max relative error; 1e-4 expected for
fp32) and, for fp16, how well its instance labels agree with fp32's. Each case
states the precision asked for (``precision``) and the one that ran
(``precision_run``: torch on a CPU runs fp16 as fp32). Where cupy
is present, the GPU post-processing (`instance_labels` on cupy arrays: centre
votes, or the flood that stands in for the watershed) is timed and its labels
compared with the CPU's. No case starts after ``--budget-s`` (330 s; those
not started are named under ``"skipped"``), so the check finishes in about 6
minutes (``--demo`` adds up to ``--demo-timeout-s``, its run folder a fresh one
beside ``DIR`` where ``DIR`` already holds a run). Whatever happens, it stops at
``--stop-after-s`` (540 s, inside the GPU machine's 10 minutes per command): a
call that hangs (a CUDA graph capture, a TensorRT build that runs on) leaves
``"stopped"`` in the JSON, naming the step it was in, and exit status 3; one
that hangs holding Python's lock has every thread's stack printed to stderr
15 s later, and the process ends.
Memory figures ending ``_mb`` are MiB (2**20 bytes), ``memory_gb`` GiB (2**30).
The JSON file is written whole after every step and case, with
``"finished": false`` until the end: a run stopped at the GPU machine's time
limit still leaves every figure taken before it.

Frames come from the simulated microscope, or, on a machine without
pymmcore-plus, from ``--frames FILE.npz`` (written by ``--save-frames``).

``--demo DIR`` also runs ``livescope demo --json --out DIR`` (the whole adaptive
demo, its engines on the backend the worker picks: torch on CUDA where there is
no TensorRT) and adds its figures under ``"demo"``: frames, drops, decisions,
trigger precision and recall, per-stage latency and where each engine ran.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from livescope.inference import (  # noqa: E402
    Engine,
    OnnxRuntimeBackend,
    PBackend,
    SegmentationEngine,
    backend_status,
    builtin_engines,
    instance_labels,
    labels_from_maps_gpu,
)
from livescope.schema import PostProcess, write_atomic  # noqa: E402

SIZES = (512, 1024, 2048)


def frames_for(size: int, n: int = 3) -> list[np.ndarray]:
    from livescope.scope import simulated_frames

    return [img for img, _ in simulated_frames(n, size=size, seed=size)]


def load_frames(path: Path | None) -> dict[int, list[np.ndarray]]:
    if path is not None:
        with np.load(path) as z:
            return {s: [z[k] for k in sorted(z.files) if k.startswith(f"s{s}_")] for s in SIZES}
    return {s: frames_for(s) for s in SIZES}


def gpu_postprocess(maps: np.ndarray, cpu_labels: np.ndarray, pp: PostProcess) -> dict:
    """Time `instance_labels` on cupy arrays; F1 of its labels against the CPU's."""
    import cupy

    from livescope.inference import match_counts, scores

    on_gpu = cupy.asarray(maps)
    labels = instance_labels(on_gpu, pp)  # warm-up (kernel compilation)
    cupy.cuda.Device().synchronize()
    ms = []
    for _ in range(10):
        t0 = time.perf_counter()
        labels = instance_labels(on_gpu, pp)
        cupy.cuda.Device().synchronize()
        ms.append(1000 * (time.perf_counter() - t0))
    on_cpu = cupy.asnumpy(labels)
    s = scores(match_counts(cpu_labels, on_cpu))
    out = {"gpu_post_p50_ms": round(float(np.median(ms)), 2),
           "gpu_post_f1_vs_cpu": s["f1"], "gpu_post_map_vs_cpu": s["map"]}  # fmt: skip
    if pp.kind != "centre_votes":  # (votes run the same code on both; no kernels of their own)
        # the same steps with numpy (what the tests check here): the CUDA kernels must agree
        dist = maps[1]
        if pp.neighbour_weight > 0:  # (as instance_labels: a card with a neighbour channel)
            dist = np.clip(dist - np.float32(pp.neighbour_weight) * maps[2], 0.0, 1.0)
        same = labels_from_maps_gpu(maps[0], dist, xp=np, **pp.label_kwargs(1.0))
        out["gpu_post_identical_to_numpy_steps"] = bool(np.array_equal(same, on_cpu))
    return out


def _torch_error() -> str | None:
    """Why torch cannot be imported here (None if it can).

    Not only ImportError: a torch built for another CUDA raises OSError when a
    library is missing (``libcudart.so.13``), and gpu_info, called before the
    JSON was first written, took the whole check down with no figure saved.
    """
    try:
        import torch  # noqa: F401
    except Exception as exc:  # noqa: BLE001 (said in the JSON; the other checks go on)
        return f"{type(exc).__name__}: {exc}"
    return None


def _cuda_torch() -> Any:
    """torch where it imports and sees a CUDA GPU, else None."""
    if _torch_error() is not None:
        return None
    import torch

    return torch if torch.cuda.is_available() else None


def left_allocated_mb() -> float | None:
    torch = _cuda_torch()
    if torch is None:
        return None
    import gc

    gc.collect()
    torch.cuda.synchronize()
    return round(float(torch.cuda.memory_allocated()) / 2**20, 2)


def gpu_info() -> dict:
    info: dict = {}
    error = _torch_error()
    if error is not None:
        info["torch"] = None
        if not error.startswith("ModuleNotFoundError"):  # (installed, but it does not load)
            info["torch_error"] = error
        return info
    import torch

    info["torch"] = torch.__version__
    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        info["memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def peak_memory_mb() -> float | None:
    torch = _cuda_torch()
    return None if torch is None else round(float(torch.cuda.max_memory_allocated()) / 2**20, 1)


def reset_peak() -> None:
    torch = _cuda_torch()
    if torch is not None:
        torch.cuda.reset_peak_memory_stats()


def parity(eng: Engine, rel: float) -> dict:
    """A case's parity with ONNX Runtime on the CPU, judged by the precision that ran.

    ``precision_run``: torch on a CPU runs fp16 as fp32 (1e-4 expected for fp32, 2e-2 for fp16).
    """
    ran = eng.runtime()["precision"]
    return {
        "precision_run": ran,
        "parity_max_relative_error_vs_ort_cpu": rel,
        "parity_ok": rel <= (1e-4 if ran == "fp32" else 2e-2),
    }


class Report:
    """The check's JSON: written whole to ``path`` after every step, so a run killed at the
    GPU machine's time limit (the command's ``timeout_s``) keeps what it measured."""

    def __init__(self, path: Path, result: dict[str, Any]) -> None:
        self.path = path
        self.result = result
        self.doing = "starting"  # the step under way, named where the check is stopped
        self._lock = threading.Lock()  # (a save and the stop never interleave)
        self.save()

    def save(self) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(self.result, indent=1))

    def stop_after(self, seconds: float) -> threading.Timer:
        """End the process ``seconds`` from now, the JSON saying which step it was in.

        A step that hangs (a CUDA graph capture, a TensorRT build, a GPU call
        that never returns) would otherwise hold the GPU machine until its
        command's limit, with nothing in the JSON to say where. Call ``cancel()``
        on the timer returned once the check is done.
        """
        timer = threading.Timer(seconds, self._stop, args=(seconds,))
        timer.daemon = True
        timer.start()
        return timer

    def _stop(self, seconds: float) -> None:
        with self._lock:  # (held to the end: no later save overwrites this one)
            try:  # the last whole save, not the live figures another thread may be changing
                saved = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                saved = {"finished": False}
            saved["stopped"] = {"after_s": seconds, "during": self.doing}
            write_atomic(self.path, json.dumps(saved, indent=1))
            print(json.dumps({"stopped": saved["stopped"]}), flush=True)
            os._exit(3)

    def case(self, case: dict[str, Any]) -> None:
        self.result["cases"].append(case)
        print(json.dumps(case), flush=True)
        self.save()

    def skip(self, what: str) -> None:
        self.result["skipped"].append(what)
        self.save()


def _close_quietly(eng: Engine | None) -> None:
    """Close the engine of a case that failed (a second failure is no news)."""
    if eng is not None:
        with contextlib.suppress(Exception):
            eng.close()


def other_engine_cases(
    name: str,
    task: str,
    frames: dict,
    seconds: float,
    backends: list[PBackend],
    deadline: float,
    report: Report,
) -> None:
    """Parity with ONNX Runtime CPU and ms per call for the stain and cell-state engines.

    Virtual stain: one frame per size (a camera frame is a valid input for
    timing and parity). Cell states: crops of 100 and 1,000 cells in one call.
    ``backends``: those that can run here; no case starts after ``deadline``
    (``time.perf_counter()``); each case goes to ``report`` as it is measured.
    """
    from livescope.cli._engines import _grid_of_cells
    from livescope.inference import cell_crops, normalize_percentile

    if task == "classification":
        card = Engine(name, backend=OnnxRuntimeBackend(cpu_only=True)).card
        inputs = {}
        for n in (100, 1000):
            frame, labels = _grid_of_cells(n)
            inputs[n] = cell_crops(normalize_percentile(frame), labels, card.crop_px)[1]
    else:
        inputs = {size: fs[0] for size, fs in frames.items()}
    ref_engine = Engine(name, backend=OnnxRuntimeBackend(cpu_only=True))
    run_ref = ref_engine.run if task == "classification" else ref_engine.infer
    refs = {k: run_ref(x) for k, x in inputs.items()}
    ref_engine.close()
    variants = [(b, "fp32") for b in backends]
    variants += [(b, "fp16") for b in backends if b.name == "torch"]
    for backend, precision in variants:
        for key, x in inputs.items():
            if time.perf_counter() > deadline:
                report.skip(f"{name}/{backend.name}/{precision}/{key}: time budget")
                continue
            case: dict = {"engine": name, "backend": backend.name, "precision": precision,
                          ("cells" if task == "classification" else "size"): key}  # fmt: skip
            report.doing = f"{name}/{backend.name}/{precision}/{key}"
            eng = None
            try:
                eng = Engine(name, backend=backend, precision=precision)
                run = eng.run if task == "classification" else eng.infer
                out = run(x)
                rel = float(
                    np.max(np.abs(out - refs[key])) / max(float(np.max(np.abs(refs[key]))), 1e-12)
                )
                ms = []
                t_case = time.perf_counter()
                while time.perf_counter() - t_case < seconds or len(ms) < 5:
                    t0 = time.perf_counter()
                    run(x)
                    ms.append(1000 * (time.perf_counter() - t0))
                case.update({
                    "p50_ms": round(float(np.percentile(ms, 50)), 2),
                    "p99_ms": round(float(np.percentile(ms, 99)), 2),
                    **parity(eng, rel),
                    "device": getattr(eng.session, "device", None),
                })  # fmt: skip
                eng.close()
                case["gpu_memory_left_after_close_mb"] = left_allocated_mb()
            except Exception as exc:  # noqa: BLE001 (report every failure, go on)
                case["error"] = f"{type(exc).__name__}: {exc}"
                _close_quietly(eng)  # (else its device memory stays taken for the later cases)
            report.case(case)


DEMO_STAGES = ("stain", "segment", "track", "states", "engines", "policy", "post", "overhead",
               "end_to_end", "decision_executed")  # fmt: skip


def fresh_folder(path: Path) -> Path:
    """``path`` if it is new or empty, else the first of ``path-2``, ``path-3``, ... that is.

    (`livescope demo` refuses a folder that holds a recording: a second check on a
    GPU machine still warm from the first, with the same ``--demo DIR``, lost its demo.)
    """
    candidate, n = path, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def run_demo(out: Path, timeout_s: float) -> dict:
    """Run the adaptive demo in a subprocess; its summary's figures, or why it failed.

    ``out``: its run folder, or a fresh one beside it (`fresh_folder`), named under ``"out"``.
    """
    import subprocess

    out = fresh_folder(out)
    cmd = [sys.executable, "-m", "livescope", "demo", "--json", "--out", str(out)]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"out": str(out), "error": f"the demo did not finish in {timeout_s:.0f} s"}
    wall = round(time.perf_counter() - t0, 1)
    if done.returncode != 0:
        return {"out": str(out), "error": f"exit {done.returncode}",
                "stderr_tail": done.stderr[-3000:]}  # fmt: skip
    try:
        s = json.loads(done.stdout)
    except ValueError:  # (the figures taken before it are kept all the same)
        return {"out": str(out), "error": "the demo exited 0 but printed no JSON summary",
                "stdout_tail": done.stdout[-3000:]}  # fmt: skip
    keep = ("frames_acquired", "frames_analysed", "dropped_analysis_frames",
            "dropped_recorded_frames", "decisions", "trigger_precision", "trigger_recall",
            "mitosis_to_trigger_s", "worker_restarts", "engine_runtimes", "machine",
            "machine_stalls", "report")  # fmt: skip
    lat = s.get("latency_ms", {})
    return {
        "out": str(out),
        "exit": 0,
        "wall_s": wall,
        **{k: s.get(k) for k in keep},
        "latency_ms": {k: lat[k] for k in DEMO_STAGES if k in lat},
    }


def engines_together(frames: dict[int, list[np.ndarray]]) -> dict:
    """All shipped engines alive at once on the best backend, as in the worker.

    Segmentation, virtual stain and cell states are loaded together, run in
    turn for a few rounds (each engine's CUDA graphs captured while the others'
    are alive), compared with ONNX Runtime on the CPU, then closed one by one:
    GPU memory still allocated after each close and at the end.
    """
    from livescope.cli._engines import _grid_of_cells
    from livescope.inference import (
        CellStateEngine,
        StainEngine,
        match_counts,
        scores,
        select_backend,
    )

    backend = select_backend()
    frame = frames[512][0]
    cells, cell_labels = _grid_of_cells(300)
    made = {
        "nuclei-unet": lambda b: SegmentationEngine("nuclei-unet", backend=b),
        "nuclei-stain": lambda b: StainEngine("nuclei-stain", backend=b),
        "cell-state": lambda b: CellStateEngine("cell-state", backend=b),
    }
    run = {
        "nuclei-unet": lambda e: e.segment(frame).labels,
        "nuclei-stain": lambda e: e.predict(frame).image,
        "cell-state": lambda e: e.classify(cells, cell_labels).probs,
    }
    ref = {}
    for name in made:
        eng = made[name](OnnxRuntimeBackend(cpu_only=True))
        ref[name] = run[name](eng)
        eng.close()
    reset_peak()
    engines: dict = {}
    try:
        for name, make in made.items():
            engines[name] = make(backend)
        out: dict = {
            "backend": backend.name,
            "runtimes": {n: e.runtime() for n, e in engines.items()},
        }
        got: dict = {}
        for _ in range(3):
            for name, eng in engines.items():
                got[name] = run[name](eng)
        seg = scores(match_counts(ref["nuclei-unet"], got["nuclei-unet"]))
        out["labels_f1_vs_ort_cpu"] = seg["f1"]
        for name in ("nuclei-stain", "cell-state"):
            r = ref[name]
            err = float(np.max(np.abs(got[name] - r)) / max(float(np.max(np.abs(r))), 1e-12))
            out[f"{name}_max_relative_error_vs_ort_cpu"] = err
        out["peak_gpu_memory_mb"] = peak_memory_mb()
        out["left_after_each_close_mb"] = {}
        for name, eng in engines.items():
            eng.close()
            out["left_after_each_close_mb"][name] = left_allocated_mb()
        return out
    finally:
        for eng in engines.values():  # (each closed already, unless a step failed)
            _close_quietly(eng)


def quick_post(frames: dict[int, list[np.ndarray]]) -> dict:
    """The GPU post-processing on the shipped engine's maps, and on tiny and empty frames."""
    import cupy

    out: dict = {}
    with Engine("nuclei-unet", backend=OnnxRuntimeBackend(cpu_only=True)) as ref_engine:
        pp = ref_engine.card.postprocess
        assert pp is not None
        for size in SIZES:  # (each on its own: a size that fails leaves the others' figures)
            try:
                maps = ref_engine.infer(frames[size][0])
                out[str(size)] = gpu_postprocess(maps, instance_labels(maps, pp), pp)
            except Exception as exc:  # noqa: BLE001 (report it)
                out[str(size)] = {"error": f"{type(exc).__name__}: {exc}"}
    rng = np.random.default_rng(0)
    tiny = {}
    for shape in ((1, 1), (1, 9), (9, 1), (3, 17), (0, 5)):
        dist = rng.random(shape).astype(np.float32)
        fg = (rng.random(shape) > 0.3).astype(np.float32)
        kw = {"fg_threshold": 0.5, "seed_threshold": 0.2, "min_size_px": 0, "seed_h": 0.1}
        try:
            on_gpu = labels_from_maps_gpu(cupy.asarray(fg), cupy.asarray(dist), **kw)
            same = np.array_equal(cupy.asnumpy(on_gpu), labels_from_maps_gpu(fg, dist, xp=np, **kw))
            tiny["x".join(map(str, shape))] = same
        except Exception as exc:  # noqa: BLE001 (report it)
            tiny["x".join(map(str, shape))] = f"{type(exc).__name__}: {exc}"
    out["tiny_frames_identical"] = tiny
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    ap.add_argument("--seconds-per-case", type=float, default=4.0)
    ap.add_argument("--budget-s", type=float, default=330.0)
    ap.add_argument("--frames", type=Path, help="frames saved with --save-frames")
    ap.add_argument("--save-frames", type=Path, help="save the simulated frames here and exit")
    ap.add_argument("--demo", type=Path, help="also run `livescope demo` with its output here")
    ap.add_argument("--demo-timeout-s", type=float, default=240.0)
    ap.add_argument("--stop-after-s", type=float, default=540.0,
                    help="end the check this long after it starts, whatever it is doing")  # fmt: skip
    ap.add_argument("--quick", action="store_true",
                    help="only the engines together and the GPU post-processing (about a minute)")  # fmt: skip
    a = ap.parse_args(argv)
    if a.save_frames:
        fr = load_frames(None)
        np.savez(
            a.save_frames, **{f"s{s}_{i}": f for s, fs in fr.items() for i, f in enumerate(fs)}
        )
        return 0
    t_start = time.perf_counter()
    report = Report(a.out, {
        "finished": False,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "backends": [],
        "cases": [],
        "skipped": [],
    })  # fmt: skip
    timer = report.stop_after(a.stop_after_s)
    # (where even that thread cannot run, a call holding Python's lock: every thread's
    # stack to stderr, then the process ends)
    with contextlib.suppress(OSError, ValueError, AttributeError):  # (no stderr file)
        faulthandler.dump_traceback_later(a.stop_after_s + 15, exit=True, file=sys.stderr)
    try:
        return _check(a, report, t_start)
    finally:
        timer.cancel()
        faulthandler.cancel_dump_traceback_later()


def _check(a: argparse.Namespace, report: Report, t_start: float) -> int:
    """The check itself, `main` without its arguments and its time limit."""
    result = report.result
    # (backend_status: a library that fails to load, e.g. torch missing a CUDA library,
    # is a backend that cannot run, named with its error, not a crash before any figure)
    report.doing = "backends"
    status = backend_status()
    runnable = [b for b, ok, _ in status if ok]
    result["backends"] = [{"name": b.name, "available": ok, "detail": why}
                          for b, ok, why in status]  # fmt: skip
    report.doing = "gpu info"
    result["machine"].update(gpu_info())
    report.save()
    report.doing = "frames"
    try:
        frames = load_frames(a.frames)
    except Exception as exc:  # noqa: BLE001 (no check runs without frames: said, exit 1)
        result["error"] = f"no frames: {type(exc).__name__}: {exc}"
        report.save()
        print(json.dumps({"error": result["error"]}), flush=True)
        return 1
    report.doing = "cupy"
    try:
        import cupy

        has_cupy, cupy_version = True, str(cupy.__version__)
    except Exception as exc:  # noqa: BLE001 (installed but failing to load: said, no GPU post)
        has_cupy, cupy_version = False, None
        if not isinstance(exc, ModuleNotFoundError):
            result["machine"]["cupy_error"] = f"{type(exc).__name__}: {exc}"
    result["machine"]["cupy"] = has_cupy
    result["machine"]["cupy_version"] = cupy_version
    report.save()
    report.doing = "engines together"
    try:
        result["together"] = engines_together(frames)
    except Exception as exc:  # noqa: BLE001 (report every failure, go on)
        result["together"] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps({"together": result["together"]}), flush=True)
    report.save()
    if a.quick:
        if has_cupy:
            report.doing = "gpu post-processing"
            try:
                result["gpu_post"] = quick_post(frames)
            except Exception as exc:  # noqa: BLE001
                result["gpu_post"] = {"error": f"{type(exc).__name__}: {exc}"}
        result["seconds"] = round(time.perf_counter() - t_start, 1)
        result["finished"] = True
        report.save()
        print(json.dumps(result, indent=1))
        return 0
    from livescope.schema import EngineCard

    tasks = {n: EngineCard.from_file(f / "card.yaml").task for n, f in builtin_engines().items()}
    for name in [n for n, t in tasks.items() if t == "segmentation"]:
        report.doing = f"{name}/onnxruntime/reference"
        try:  # (a reference that fails leaves the other engines' cases to run)
            with Engine(name, backend=OnnxRuntimeBackend(cpu_only=True)) as ref_engine:
                refs = {s: [ref_engine.infer(f) for f in fs] for s, fs in frames.items()}
            pp = ref_engine.card.postprocess

            def labels_of(m: np.ndarray, pp: PostProcess | None = pp) -> np.ndarray:
                assert pp is not None
                return instance_labels(m, pp)

            ref_labels = {s: labels_of(rs[0]) for s, rs in refs.items()}
        except Exception as exc:  # noqa: BLE001 (report every failure, go on)
            report.case({"engine": name, "backend": "onnxruntime (reference)",
                         "error": f"{type(exc).__name__}: {exc}"})  # fmt: skip
            continue
        variants = [(b, "fp32") for b in runnable]
        variants += [(b, "fp16") for b in runnable if b.name == "torch"]
        for backend, precision in variants:
            for size in SIZES:
                if time.perf_counter() - t_start > a.budget_s:
                    report.skip(f"{name}/{backend.name}/{precision}/{size}: time budget")
                    continue
                case = {
                    "engine": name,
                    "backend": backend.name,
                    "precision": precision,
                    "size": size,
                }
                report.doing = f"{name}/{backend.name}/{precision}/{size}"
                eng = None
                try:
                    reset_peak()
                    eng = SegmentationEngine(name, backend=backend, precision=precision,
                                             frame_shape=(size, size))  # fmt: skip
                    eng.infer(frames[size][0])  # warm-up (allocation, graph capture, autotune)
                    outs = [eng.infer(f) for f in frames[size]]
                    rel = max(
                        float(np.max(np.abs(o - r)) / max(float(np.max(np.abs(r))), 1e-12))
                        for o, r in zip(outs, refs[size], strict=True)
                    )
                    from livescope.inference import match_counts, scores

                    label_f1 = scores(match_counts(ref_labels[size], labels_of(outs[0])))["f1"]
                    ms_engine, ms_total = [], []
                    t_case = time.perf_counter()
                    k = 0
                    while time.perf_counter() - t_case < a.seconds_per_case or k < 5:
                        f = frames[size][k % len(frames[size])]
                        t0 = time.perf_counter()
                        maps = eng.infer(f)
                        t1 = time.perf_counter()
                        pp = eng.card.postprocess
                        if pp is not None:
                            instance_labels(maps, pp)
                        t2 = time.perf_counter()
                        ms_engine.append(1000 * (t1 - t0))
                        ms_total.append(1000 * (t2 - t0))
                        k += 1
                    case.update({
                        "frames": k,
                        "engine_p50_ms": round(float(np.percentile(ms_engine, 50)), 2),
                        "engine_p99_ms": round(float(np.percentile(ms_engine, 99)), 2),
                        "total_p50_ms": round(float(np.percentile(ms_total, 50)), 2),
                        "total_p99_ms": round(float(np.percentile(ms_total, 99)), 2),
                        "peak_gpu_memory_mb": peak_memory_mb(),
                        **parity(eng, rel),
                        "labels_f1_vs_ort_cpu": label_f1,
                        "device": getattr(eng.session, "device", None) if eng.session else None,
                    })  # fmt: skip
                    if has_cupy and backend.name == "torch" and precision == "fp32":
                        try:
                            case.update(gpu_postprocess(outs[0], ref_labels[size], pp))
                        except Exception as exc:  # noqa: BLE001
                            case["gpu_post_error"] = f"{type(exc).__name__}: {exc}"
                    eng.close()
                    eng = None
                    case["gpu_memory_left_after_close_mb"] = left_allocated_mb()
                except Exception as exc:  # noqa: BLE001 (report every failure, go on)
                    case["error"] = f"{type(exc).__name__}: {exc}"
                    _close_quietly(eng)
                report.case(case)
    for name, task in tasks.items():
        if task != "segmentation":
            report.doing = f"{name}/onnxruntime/reference"
            try:  # (as above: one engine's failure outside its cases stops no other)
                other_engine_cases(name, task, frames, a.seconds_per_case, runnable,
                                   t_start + a.budget_s, report)  # fmt: skip
            except Exception as exc:  # noqa: BLE001 (report every failure, go on)
                report.case({"engine": name, "backend": "onnxruntime (reference)",
                             "error": f"{type(exc).__name__}: {exc}"})  # fmt: skip
    if a.demo is not None:
        report.doing = "demo"
        # (its own limit ends before the check's: the demo's figures or its error, not a stop)
        left = t_start + a.stop_after_s - time.perf_counter() - 10
        if left < 1:
            result["demo"] = {"error": "not run: no time left before --stop-after-s"}
        else:
            result["demo"] = run_demo(a.demo, min(a.demo_timeout_s, left))
        print(json.dumps({"demo": result["demo"]}), flush=True)
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    result["finished"] = True
    report.save()
    print(json.dumps({k: v for k, v in result.items() if k != "cases"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
