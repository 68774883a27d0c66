"""A worker whose engines' runtime fails as it starts: restarted, not taken for a refusal.

The worker exited 2 (the CLI's user-error status) for an engine's runtime failure
(``BackendRunError``: "CUDA failure 2: out of memory" in its warm-up), and before it
was ready the supervisor took that for a worker refusing its config: a restarted
worker meeting a GPU not yet freed was never started again, and the rest of the run
went unanalysed. It now exits `WORKER_RUNTIME_FAILED`; config errors still refuse.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from livescope.inference import find_engine
from livescope.pipeline import WorkerConfig, WorkerSupervisor
from livescope.pipeline._supervisor import WORKER_REFUSED, WORKER_RUNTIME_FAILED
from livescope.schema import LivescopeError, load_profile
from livescope.scope import demo_sequence, run_simulated
from tests.pipeline.test_supervisor_review import _script, _Scripted

OOM = "CUDA failure 2: out of memory"

# ------------------------------------------------------------------ scripted workers


def _once(marker: Path, code: int, then: int = 0) -> str:
    """A worker that says it ran out of GPU memory and exits ``code`` once, then ``then``."""
    return "\n".join([
        "import pathlib, sys",
        f"marker = pathlib.Path({str(marker)!r})",
        f"if marker.exists(): sys.exit({then})",
        "marker.write_text('failed once')",
        f"print('error: engine nuclei-unet: onnxruntime failed on input (1, 1, 520, 520): {OOM}',"
        " file=sys.stderr)",
        f"sys.exit({code})",
    ])  # fmt: skip


_CRASHES = "import sys; print('Segmentation fault', file=sys.stderr); sys.exit(1)"


@pytest.mark.parametrize(
    ("first", "resumed", "exits", "given_up"),
    [
        pytest.param(
            "crash", "fails-once", [1, WORKER_RUNTIME_FAILED, 0], False,
            id="restarted-worker-fails-once-at-start-then-runs",
        ),
        pytest.param(
            "crash", "fails-always", [1, WORKER_RUNTIME_FAILED, WORKER_RUNTIME_FAILED], True,
            id="restarted-worker-that-always-fails-is-given-up-after-max-restarts",
        ),
        pytest.param(
            "ready-then-fails", "runs", [WORKER_RUNTIME_FAILED, 0], False,
            id="first-worker-fails-once-ready",
        ),
        pytest.param(
            "fails", "runs", [WORKER_RUNTIME_FAILED], True,
            id="first-worker-fails-before-ready-not-restarted",
        ),
        pytest.param(
            "refuses", "runs", [WORKER_REFUSED], True, id="first-worker-refuses-not-restarted"
        ),
        pytest.param(
            "crash", "refuses", [1, WORKER_REFUSED], True,
            id="restarted-worker-refuses-not-restarted",
        ),
    ],
)  # fmt: skip
def test_which_worker_exits_are_restarted(
    supervisors: Callable[..., _Scripted],
    caplog: pytest.LogCaptureFixture,
    first: str,
    resumed: str,
    exits: list[int],
    given_up: bool,
) -> None:
    sup = supervisors(max_restarts=2)
    marker = sup.results / "marker"
    ready = _script(True, f"error: engine nuclei-unet: {OOM}", WORKER_RUNTIME_FAILED)
    scripts = {
        "crash": _CRASHES,
        "fails": _script(False, f"error: engine nuclei-unet: {OOM}", WORKER_RUNTIME_FAILED),
        "ready-then-fails": ready.replace("RESULTS", str(sup.results)),
        "refuses": _script(False, "error: worker config: no engine 'x'", WORKER_REFUSED),
        "fails-once": _once(marker, WORKER_RUNTIME_FAILED),
        "fails-always": _once(marker, WORKER_RUNTIME_FAILED, then=WORKER_RUNTIME_FAILED),
        "runs": "pass",
    }
    sup.script, sup.resume_script = scripts[first], scripts[resumed]
    sup.start()
    if given_up:
        with pytest.raises(LivescopeError):
            sup.wait(60)
    else:
        sup.wait(60)
    assert sup.exits == exits
    assert (sup.results / "worker.failed").exists() == given_up
    if first == "fails":
        assert f"the worker's engines failed before it was ready: engine nuclei-unet: {OOM}; " in (
            caplog.text
        )
    assert ("refused to run" in caplog.text) == (WORKER_REFUSED in exits)


# ------------------------------------------------------------------ real workers


_HOOK = '''\
"""Faults for a supervised worker (tests/pipeline/test_supervisor_startup_s61.py)."""
import os, sys
from pathlib import Path

FAULT = os.environ.get("LIVESCOPE_S61_FAULT", "")
if FAULT and "worker" in sys.argv:
    from livescope.inference import _engine
    from livescope.inference._backend_base import BackendRunError

    _RUN = Path(sys.argv[sys.argv.index("worker") + 1])
    _MARKER = Path(os.environ["LIVESCOPE_S61_MARKER"])
    _RESUMED = "--resume" in sys.argv
    _run_session = _engine.Engine._run_session
    _since_ready = []

    def _faulty(self, x):
        if FAULT == "broken" or (_RESUMED and not _MARKER.exists()):
            _MARKER.write_text("failed")  # a GPU still held by the worker it replaces
            raise BackendRunError(
                f"onnxruntime failed on input {tuple(x.shape)}: CUDA failure 2: out of memory"
            )
        if not _RESUMED and (_RUN / "results" / "ready").exists():
            _since_ready.append(1)
            if len(_since_ready) == 3:  # the first worker crashes mid-run (native code)
                sys.stderr.write("Segmentation fault\\n")
                sys.stderr.flush()
                os._exit(1)
        return _run_session(self, x)

    _engine.Engine._run_session = _faulty
'''

_FIELDS = 8


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run recorded on the simulated microscope (2 positions x 4 time points), ended."""
    prof = load_profile("sim")
    out = tmp_path_factory.mktemp("s61") / "run"
    run_simulated(prof, demo_sequence(prof, timepoints=4, positions=2), out, seed=3)
    return out


def _supervised(
    tmp_path: Path, recorded: Path, monkeypatch: pytest.MonkeyPatch, fault: str, **config: object
) -> WorkerSupervisor:
    """A supervisor of a copy of ``recorded`` whose real workers meet ``fault``."""
    run = tmp_path / "run"
    shutil.copytree(recorded, run)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_HOOK, encoding="utf-8")
    paths = [str(hook), str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    monkeypatch.setenv("LIVESCOPE_S61_FAULT", fault)
    monkeypatch.setenv("LIVESCOPE_S61_MARKER", str(tmp_path / "marker"))
    cfg = WorkerConfig(segmenter="nuclei-unet", stain=None, states=None, overlay=False)
    cfg = dataclasses.replace(cfg, **config)  # type: ignore[arg-type]
    sup = WorkerSupervisor(run, cfg, max_restarts=3, threads=1, lower_priority=False)
    sup.restart_delay_s = 0.05
    return sup


@pytest.mark.slow
def test_a_restarted_worker_whose_engine_fails_once_at_start_is_restarted_and_the_run_analysed(
    tmp_path: Path,
    recorded: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the first worker crashes mid-run; the one restarted meets a GPU not yet free in its
    # warm-up: it exited 2, was taken for a refusal, and the rest of the run went unanalysed
    sup = _supervised(tmp_path, recorded, monkeypatch, "crash-then-oom")
    sup.start()
    try:
        summary = sup.wait(120)
    finally:
        sup.stop()
    assert sup.exits == [1, WORKER_RUNTIME_FAILED, 0]
    assert summary["supervisor"] == {"restarts": 2, "exit_codes": [1, WORKER_RUNTIME_FAILED, 0]}
    assert summary["fields_analysed"] == _FIELDS
    stored = (sup.results / "latency.jsonl").read_text(encoding="utf-8").splitlines()
    assert len({(json.loads(ln)["position"], json.loads(ln)["t"]) for ln in stored}) == _FIELDS
    assert not (sup.results / "worker.failed").exists()
    assert "refused" not in caplog.text
    assert (
        f"worker exited with {WORKER_RUNTIME_FAILED} (engine nuclei-unet: onnxruntime failed on "
        f"input (1, 1, 520, 520): {OOM}); restarting it (2)"
    ) in caplog.text


def _tampered(tmp_path: Path) -> dict[str, str]:
    """A copy of the shipped segmentation engine with one byte of its model changed."""
    engine = tmp_path / "tampered"
    shutil.copytree(find_engine("nuclei-unet"), engine)
    model = next(engine.glob("*.onnx"))
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    return {"segmenter": str(engine)}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "config", "code", "said"),
    [
        pytest.param(
            "", lambda _: {"segmenter": "no-such-engine"}, WORKER_REFUSED,
            "refused to run: worker config", id="config-unknown-engine",
        ),
        pytest.param(
            "", _tampered, WORKER_REFUSED, "the model was changed or corrupted (refusing it)",
            id="tampered-model",
        ),
        pytest.param(
            "broken", lambda _: {}, WORKER_RUNTIME_FAILED,
            f"the worker's engines failed before it was ready: engine nuclei-unet: "
            f"onnxruntime failed on input (1, 1, 520, 520): {OOM}; not restarted",
            id="engine-fails-at-every-start",
        ),
    ],
)  # fmt: skip
def test_a_first_worker_with_a_bad_config_or_broken_engine_is_given_up_at_once(
    tmp_path: Path,
    recorded: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fault: str,
    config: Callable[[Path], dict[str, str]],
    code: int,
    said: str,
) -> None:
    sup = _supervised(tmp_path, recorded, monkeypatch, fault, **config(tmp_path))
    sup.start()
    try:
        with pytest.raises(LivescopeError, match="the worker failed"):
            sup.wait(120)
    finally:
        sup.stop()
    assert (sup.exits, sup.restarts) == ([code], 0)
    assert said in caplog.text
    assert ("refused to run" in caplog.text) == (code == WORKER_REFUSED)
    assert (sup.results / "worker.failed").exists()
