from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from livescope.schema import HardwareProfile, data_root, load_profile
from livescope.scope import SimulatedMicroscope

ROOT = Path(__file__).resolve().parents[1]


REQUIRE_ENV = "LIVESCOPE_TEST_REQUIRE"
"""What must be here, space- or comma-separated: ``data`` (../shared/data or
$LIVESCOPE_DATA, each data set a test reads), ``torch`` (the torch backend). CI
(.ci/run) sets ``data torch``: a test that would skip for want of them fails
instead, so that a missing install step or data folder cannot pass as a green run."""


def skip_unless_required(need: str, reason: str) -> NoReturn:
    """Skip the test for ``reason``, or fail it where $LIVESCOPE_TEST_REQUIRE names ``need``."""
    required = os.environ.get(REQUIRE_ENV, "").replace(",", " ").split()
    if need in required:
        pytest.fail(f"{reason}, and {REQUIRE_ENV} requires {need!r}")
    pytest.skip(reason)


def data_dir() -> Path | None:
    """Real annotated data (../shared/data or $LIVESCOPE_DATA), None where absent."""
    return data_root()


@pytest.fixture
def shared_data() -> Path:
    path = data_dir()
    if path is None:
        skip_unless_required("data", "real data not found: set LIVESCOPE_DATA (CI always does)")
    return path


def shared_subfolder(name: str) -> Path:
    """A data set of the real data (e.g. ``ctc-Fluo-N2DH-GOWT1/01``); skipped where absent."""
    root = data_dir()
    path = None if root is None else root / name
    if path is None or not path.is_dir():
        skip_unless_required("data", f"{name} not found in the real data (LIVESCOPE_DATA)")
    return path


@pytest.fixture(autouse=True)
def _livescope_logger_restored() -> Iterator[None]:
    """Put the ``livescope`` logger back after each test: a command run in-process sets
    its handler and stops propagation, which would hide later tests' warnings from caplog."""
    import logging

    log = logging.getLogger("livescope")
    saved = (list(log.handlers), log.level, log.propagate)
    yield
    log.handlers[:], log.level, log.propagate = saved[0], saved[1], saved[2]


THREAD_GRACE_S = 10.0
"""How long a test's non-daemon threads may take to end after it (they usually end at once)."""

EXIT_WATCHDOG_S = 120.0
"""How long pytest's process may take to exit after the run before it is stopped (status 1)."""


def _idle_pool_threads() -> set[threading.Thread]:
    """Workers of ``concurrent.futures`` pools waiting for work: they are shut down
    at interpreter exit (a busy one is checked like any other thread)."""
    from concurrent.futures import thread as pool

    frames = sys._current_frames()
    idle = set()
    for t in list(pool._threads_queues):  # (the only record of them)
        frame, callee = frames.get(t.ident or -1), None
        while frame is not None and frame.f_code is not pool._worker.__code__:
            frame, callee = frame.f_back, frame
        # waiting in the pool's work_queue.get(): a SimpleQueue's is C code, no frame of its own
        if frame is not None and (callee is None or callee.f_code.co_name == "get"):
            idle.add(t)
    return idle


def _stacks(threads: list[threading.Thread]) -> str:
    import traceback

    frames = sys._current_frames()
    out = []
    for t in threads:
        frame = frames.get(t.ident or -1)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "  (no frame)\n"
        out.append(f"thread {t.name!r}:\n{stack}")
    return "\n".join(out)


@pytest.fixture(autouse=True)
def _no_thread_left_running() -> Iterator[None]:
    """Fail a test that leaves a non-daemon thread running.

    Python waits for every non-daemon thread before it exits: one that never
    ends (e.g. pycromanager's saving thread after a failed abort) hangs the
    whole run after its last test, silently, until CI's time limit.
    """
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_GRACE_S
    while True:
        idle = _idle_pool_threads()
        left = [
            t for t in threading.enumerate()
            if t not in before and not t.daemon and t.is_alive() and t not in idle
        ]  # fmt: skip
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if left:
        pytest.fail(
            f"{len(left)} non-daemon thread(s) still running {THREAD_GRACE_S:g} s after the "
            f"test (the interpreter would never exit):\n{_stacks(left)}",
            pytrace=False,
        )


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Where pytest is the program (not ``pytest.main`` in a longer-lived process): if it
    has not exited ``EXIT_WATCHDOG_S`` after the run (a thread or an exit handler that
    never ends), print every thread's stack and exit with status 1, instead of hanging."""
    import faulthandler

    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else ""
    if (main is not None and main.name == "pytest.__main__") or program in ("pytest", "py.test"):
        print(
            f"(livescope's tests: the process is stopped if it has not exited in "
            f"{EXIT_WATCHDOG_S:g} s)",
            file=sys.__stderr__,
            flush=True,
        )
        faulthandler.dump_traceback_later(EXIT_WATCHDOG_S, exit=True, file=sys.__stderr__)


@pytest.fixture(scope="session")
def sim_profile() -> HardwareProfile:
    return load_profile("sim")


@pytest.fixture
def sim(sim_profile: HardwareProfile) -> Iterator[SimulatedMicroscope]:
    with SimulatedMicroscope(sim_profile) as scope:
        yield scope


def wait_for(cond: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Return ``cond()``'s first true value, polled every 10 ms; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := cond():
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m livescope ARGS`` in a fresh interpreter, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "livescope", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
        check=False,
    )


def write_ndtiff(
    root: Path,
    image: Callable[[int, int, int], Any],
    *,
    timepoints: int | Iterable[int] = 3,
    positions: int = 2,
    tags: Callable[[int, int, int], dict[str, Any]] | None = None,
    interval_s: float = 120.0,
    lacking: Collection[tuple[int, int, str]] = (),
) -> Path:
    """Write an NDTiff dataset as pycromanager does (ndstorage): phase + DAPI, 0.65 µm,
    ``interval_s`` apart, ``image(t, p, c)`` the pixels of each frame (``tags(t, p, c)``
    its image tags instead of the usual ones). ``timepoints``: how many, or the time
    indices written (a gap: time points the acquisition did not take); ``lacking``:
    (t, position, channel name) of frames it did not take. Returns ``root``."""
    import gc
    import warnings

    from ndstorage import NDTiffDataset

    channels = ["Phase", "DAPI"]
    ds = NDTiffDataset(str(root), name="acq", writable=True)
    ds.initialize({"PixelSize_um": 0.65, "ChNames": channels})
    for t in range(timepoints) if isinstance(timepoints, int) else timepoints:
        for p in range(positions):
            for c, name in enumerate(channels):
                if (t, p, name) in lacking:
                    continue
                ds.put_image(
                    {"time": t, "position": p, "channel": name},
                    image(t, p, c),
                    tags(t, p, c) if tags is not None else
                    {"ElapsedTime-ms": 1000.0 * interval_s * t, "PixelSizeUm": 0.65,
                     "Exposure": 20.0, "XPositionUm": 100.0 * p, "YPositionUm": 0.0},
                )  # fmt: skip
    with warnings.catch_warnings():  # ndstorage's finish() leaves a file unclosed (upstream)
        warnings.simplefilter("ignore", ResourceWarning)
        ds.finish()
        ds.close()
        gc.collect()
    return root
