"""Benchmark of the frame bus (``livescope bench bus``).

Side by side in one run, with the receiver in a second process: raw pyzmq
(PUB/SUB, zero-copy send, the same two-part messages), livescope's inline bus
and its shared-memory bus, plus a plain numpy copy of the same frames as the
memory-bandwidth baseline. Then a paced run at a camera's rate (2048² × 100 fps)
counts drops.

Every mode's latency runs from a stamp taken just before the send (raw pyzmq) or
the publish call (the buses: passed as its ``t_camera_ns``) to the receiver's
stamp, so the shared-memory bus's copy into its ring counts, as the inline bus's
send does (the header's ``t_sent_ns`` is stamped after that copy: at 2048² about
1 ms, more than the rest of the way).
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import signal
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np
import zmq

from livescope.schema import MAX_SIDE, FrameInfo, LivescopeError, clock_ns

from ._endpoints import local_endpoint, remove_ipc_files
from ._publisher import FramePublisher
from ._stalls import machine_info
from ._subscriber import FrameSubscriber

__all__ = ["bench_bus"]

SIZES = (512, 2048, 3200)
MAX_PACED_SECONDS = 3600.0  # (an hour at a camera's rate; `bench bus --paced-seconds`'s bound)
FRAMES = {512: 400, 2048: 100, 3200: 40}


def _info(seq: int, shape: tuple[int, ...]) -> FrameInfo:
    return FrameInfo(
        seq=seq, index={"t": seq}, position="p0", channel="bench", x_um=None, y_um=None,
        z_um=None, exposure_ms=1.0, pixel_size_um=1.0, sample_time_s=None, runner_time_ms=0.0,
        t_camera_ns=0, hardware_triggered=False, added_by=None, adler32=0, shape=shape,
        dtype="uint16", event={},
    )  # fmt: skip


def _start_ignoring_ctrl_c(proc: BaseProcess) -> None:
    """Start a receiver with Ctrl+C ignored, as a spawned Python keeps it from its first line.

    A terminal's Ctrl+C reaches the whole process group; the bench ends its receiver
    itself, which, interrupted (importing, too), printed a KeyboardInterrupt traceback.
    """
    old = signal.getsignal(signal.SIGINT)
    if old is None or threading.current_thread() is not threading.main_thread():
        proc.start()  # (a handler not set from Python, or not the main thread: cannot swap it)
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc.start()
    finally:
        signal.signal(signal.SIGINT, old)


def _receive(
    mode: str, endpoint: str, control: str, n: int, idle_s: float, conn: Connection
) -> None:
    """Receiver process: count frames and bytes, time them, report."""
    # (started ignoring it if it could be; see _start_ignoring_ctrl_c)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lat: list[int] = []
    count = nbytes = 0
    t_last = 0
    checksum = 0
    if mode == "raw":
        ctx = zmq.Context()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, n + 10)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(endpoint)
        time.sleep(0.3)
        conn.send("ready")
        while count < n and sock.poll(int(idle_s * 1000)):
            hdr, body = sock.recv_multipart(copy=False)
            t = clock_ns()
            meta = json.loads(hdr.bytes)
            arr = np.frombuffer(body.buffer, np.uint16)
            checksum += int(arr[-1])  # touch the payload
            lat.append(t - meta["t"])
            count += 1
            nbytes += arr.nbytes
            t_last = t
        sock.close(0)
        ctx.term()
    else:
        sub = FrameSubscriber(endpoint, control_endpoint=control, maxlen=max(n, 1), rcvhwm=n + 10)
        time.sleep(0.3)
        conn.send("ready")
        while count < n and (f := sub.get(timeout=idle_s)) is not None:
            with f:
                checksum += int(f.array.reshape(-1)[-1])
                # (from the publish call, the bench's stamp: not t_sent_ns, which the
                # shared-memory bus takes after its copy into the ring)
                lat.append(f.t_received_ns - f.header["t_camera_ns"])
                count += 1
                nbytes += f.array.nbytes
                t_last = f.t_received_ns
        sub.close()
    conn.send({"count": count, "bytes": nbytes, "t_last": t_last, "lat": lat, "sum": checksum})


def _reply(parent: Any, proc: Any, seconds: float, mode: str, what: str) -> Any:
    """Return the receiver's next message on ``parent`` (its pipe), waiting at most ``seconds``.

    Raises RuntimeError at once if the receiver ended without sending it (its
    traceback is on stderr), instead of waiting the whole time for nothing.
    """
    deadline = time.monotonic() + seconds
    while not parent.poll(0.1):
        if not proc.is_alive() and not parent.poll(0):
            raise RuntimeError(
                f"bench receiver for {mode} ended (exit code {proc.exitcode}) "
                f"before it could {what}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench receiver for {mode} did not {what} in {seconds:.0f} s")
    return parent.recv()


def _run_mode(mode: str, frames: np.ndarray, n: int, fps: float | None = None) -> dict[str, Any]:
    """Send ``n`` frames to a receiver process in ``mode``, flat out or at ``fps``.

    The receiver, the sockets and the shared-memory ring are gone when this
    returns or raises (an error, Ctrl+C): a failed run leaves nothing behind.
    """
    ctx_mp = mp.get_context("spawn")
    shape = frames.shape[1:]
    nbytes = frames[0].nbytes
    pub: FramePublisher | None = None
    raw_ctx = raw_sock = None
    proc: Any = None
    endpoint = ""
    try:
        if mode == "raw":
            raw_ctx = zmq.Context()
            raw_sock = raw_ctx.socket(zmq.PUB)
            raw_sock.setsockopt(zmq.SNDHWM, n + 10)
            raw_sock.setsockopt(zmq.LINGER, 0)
            endpoint = local_endpoint("bench")
            raw_sock.bind(endpoint)
            endpoint = raw_sock.getsockopt(zmq.LAST_ENDPOINT).decode()  # type: ignore[union-attr]
            control = ""
        else:
            pub = FramePublisher(
                "bench",
                mode=mode,  # type: ignore[arg-type]
                max_frame_bytes=nbytes,
                sndhwm=n + 10,
            )
            endpoint, control = pub.endpoint, pub.control_endpoint
        parent, child = ctx_mp.Pipe()
        proc = ctx_mp.Process(target=_receive, args=(mode, endpoint, control, n, 3.0, child))
        _start_ignoring_ctrl_c(proc)
        _reply(parent, proc, 30, mode, "start")
        time.sleep(0.2)
        period = None if fps is None else 1.0 / fps
        t0 = clock_ns()
        sent = slot_waits = retried = 0  # (waits for free slots; failed publishes retried)
        for i in range(n):
            if period is not None:
                due = t0 / 1e9 + i * period  # (clock_ns: on Windows monotonic is another clock)
                while (wait := due - clock_ns() / 1e9) > 0:
                    time.sleep(min(wait, 0.002))
            img = frames[i % len(frames)]
            if raw_sock is not None:
                hdr = json.dumps({"seq": i, "t": clock_ns()}).encode()
                raw_sock.send_multipart([hdr, memoryview(img).cast("B")], copy=False)
                sent += 1
            elif pub is not None:
                if period is None and pub.ring is not None:
                    # flat out: lossless, as the raw run is; a subscriber drops its oldest
                    # frame when its queue would hold all but 2 of the ring's slots (so that a
                    # camera never waits), which a reader held up for a moment reached here
                    # (398 of 400 received on a loaded host): wait for 3 slots free
                    ring = pub.ring
                    while int(ring.v.held().sum()) > ring.v.n_slots - 3:
                        slot_waits += 1  # (no publish tried: nothing the publisher counts)
                        time.sleep(0.0002)
                # (stamped just before each call, as the raw run before its send: the
                # receiver times from it, each mode from the same point)
                while not pub.publish(img, _info(i, shape), clock_ns()):
                    if period is not None:
                        break  # paced: a full ring is a drop, as in a live run
                    retried += 1  # flat out: wait for the reader to free a slot
                    time.sleep(0.0002)
                else:
                    sent += 1
        t_sent = clock_ns()
        res = _reply(parent, proc, 60, mode, "report")
        proc.join(10)
        pub_stats = pub.stats() if pub is not None else {}
    finally:
        # (a receiver still running would hold the ring and outlive an interrupted bench)
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(5)
        if pub is not None:
            pub.close()
        if raw_sock is not None:
            raw_sock.close(0)
        if raw_ctx is not None:
            raw_ctx.term()
            remove_ipc_files(endpoint)
    elapsed = max(res["t_last"], t_sent) - t0
    if period is not None:  # (n frames paced take n periods: from the first to the last
        elapsed += round(period * 1e9)  # is n - 1 of them, which read n/(n-1) above target)
    lat = np.asarray(res["lat"], dtype=np.int64) / 1e6
    return {
        "mode": mode,
        "shape": list(shape),
        "frames": n,
        "sent": sent,
        "received": res["count"],
        "drops": n - res["count"],
        # (the publisher counts every publish that found no slot; those retried were sent)
        "dropped_no_slot": pub_stats.get("dropped_no_slot", 0) - retried,
        "waits_for_slot": slot_waits + retried,  # (both kinds of wait for a free slot)
        "gb_per_s": round(res["bytes"] / elapsed, 3) if elapsed > 0 else 0.0,
        "fps": round(res["count"] / (elapsed / 1e9), 1) if elapsed > 0 else 0.0,
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
        "latency_p99_ms": round(float(np.percentile(lat, 99)), 3) if lat.size else None,
    }


def _memcpy(frames: np.ndarray, n: int) -> dict[str, Any]:
    """Copy the same frames into a ring of destinations as large as the bus's (pages touched)."""
    slots = min(64, max(4, (256 * 2**20) // frames[0].nbytes))
    dst = np.ones((slots, *frames.shape[1:]), frames.dtype)  # pages touched, as the ring's
    t0 = time.perf_counter()
    for i in range(n):
        np.copyto(dst[i % slots], frames[i % len(frames)])
    elapsed = time.perf_counter() - t0
    return {
        "mode": "memcpy",
        "shape": list(frames.shape[1:]),
        "frames": n,
        "gb_per_s": round(frames[0].nbytes * n / elapsed / 1e9, 3),
    }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ranked = sorted(runs, key=lambda r: r["gb_per_s"])
    best = dict(ranked[len(ranked) // 2])
    best["gb_per_s_runs"] = [r["gb_per_s"] for r in runs]
    return best


def bench_bus(
    sizes: tuple[int, ...] = SIZES,
    paced_seconds: float = 5.0,
    paced_fps: float = 100.0,
    repeats: int = 3,
) -> dict[str, Any]:
    """Run the bus benchmark; returns the JSON-able result (see the module doc).

    Each throughput case runs ``repeats`` times, the modes interleaved, and the
    median run is reported (with every run's GB/s), since these machines are shared;
    of an even number of runs, the faster of the middle two (a run, not a mean of two).

    Raises
    ------
    LivescopeError
        for no sizes, a size the bus cannot carry, ``repeats`` < 1, a paced
        run of no frames (``paced_seconds`` × ``paced_fps`` < 1, either not > 0)
        or one longer than `MAX_PACED_SECONDS`; checked before anything runs.

    """
    if not sizes or not all(1 <= s <= MAX_SIDE for s in sizes):
        raise LivescopeError(
            f"bus benchmark sizes must be 1 to {MAX_SIDE} pixels (at least one), got {sizes}"
        )
    if repeats < 1:
        raise LivescopeError(f"bus benchmark repeats must be >= 1, got {repeats}")
    n_paced = paced_seconds * paced_fps
    if not (paced_seconds > 0 and paced_fps > 0 and math.isfinite(n_paced) and n_paced >= 1):
        raise LivescopeError(
            f"the paced run needs seconds × fps >= 1 (both > 0), got {paced_seconds} s at "
            f"{paced_fps} fps"
        )
    if paced_seconds > MAX_PACED_SECONDS:
        raise LivescopeError(
            f"the paced run must be at most {MAX_PACED_SECONDS:g} s, got {paced_seconds:g} s"
        )
    rng = np.random.default_rng(0)
    results: list[dict[str, Any]] = []
    by: dict[tuple[str, int], dict[str, Any]] = {}
    for size in sizes:
        n = FRAMES.get(size, 50)
        frames = rng.integers(0, 4096, (4, size, size), dtype=np.uint16)
        runs: dict[str, list[dict[str, Any]]] = {"raw": [], "inline": [], "shm": [], "memcpy": []}
        for _ in range(repeats):
            for mode in ("raw", "inline", "shm"):
                runs[mode].append(_run_mode(mode, frames, n))
            runs["memcpy"].append(_memcpy(frames, n))
        for mode, mode_runs in runs.items():
            r = _median_run(mode_runs)
            results.append(r)
            by[(mode, size)] = r
        del frames

    def ratio(a: tuple[str, int], b: tuple[str, int]) -> float | None:
        if a in by and b in by and by[b]["gb_per_s"]:
            return round(float(by[a]["gb_per_s"]) / float(by[b]["gb_per_s"]), 3)
        return None

    paced: list[dict[str, Any]] = []
    paced_size = 2048
    frames = rng.integers(0, 4096, (4, paced_size, paced_size), dtype=np.uint16)
    for mode in ("inline", "shm"):
        r = _run_mode(mode, frames, int(n_paced), fps=paced_fps)
        r["target_fps"] = paced_fps
        r["target_gb_per_s"] = round(frames[0].nbytes * paced_fps / 1e9, 3)
        paced.append(r)
    ratios = {
        str(s): {
            "inline_vs_raw": ratio(("inline", s), ("raw", s)),
            "shm_vs_memcpy": ratio(("shm", s), ("memcpy", s)),
            "shm_vs_inline": ratio(("shm", s), ("inline", s)),
        }
        for s in sizes
    }
    key = str(2048 if 2048 in sizes else sizes[0])
    targets = {
        "inline_vs_raw>=0.9": (ratios[key]["inline_vs_raw"] or 0) >= 0.9,
        "shm_vs_memcpy>=0.5": (ratios[key]["shm_vs_memcpy"] or 0) >= 0.5,
        "shm_faster_than_inline": (ratios[key]["shm_vs_inline"] or 0) > 1.0,
        "paced_zero_drops": all(p["drops"] == 0 for p in paced),
    }
    return {
        "bench": "bus",
        "inline_vs_raw": ratios[key]["inline_vs_raw"],
        "shm_vs_memcpy": ratios[key]["shm_vs_memcpy"],
        "drops": {p["mode"]: p["drops"] for p in paced},
        "ratios": ratios,
        "targets": targets,
        "results": results,
        "paced": paced,
        "machine": machine_info(),  # (timed once the transfers are done)
    }
