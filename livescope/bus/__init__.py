"""The frame bus (ZeroMQ): frames out of the agent, decisions back in.

Agent side: `FramePublisher`, `DecisionServer`. Worker side: `attach` (or
`FrameSubscriber` and `DecisionClient`). Wire protocol v1 is in
`livescope.schema` (`FrameHeader`).
"""

from ._bench import bench_bus
from ._decisions import Answered, DecisionClient, DecisionServer
from ._endpoints import BusSecurity, bind, connect, is_loopback, local_endpoint, uses_ipc
from ._jitter import JITTER_ROUNDS, bench_jitter
from ._overlay import OverlayPublisher, OverlaySubscriber
from ._overlay_wire import (
    OVERLAY_DTYPES,
    OVERLAY_FILE,
    OVERLAY_VERSION,
    OverlayMessage,
    decode_overlay,
)
from ._publisher import FramePublisher
from ._shm import ShmReader, ShmRing
from ._stalls import STALL_MS, StallMonitor, machine_info, peak_memory_mb
from ._subscriber import Frame, FrameSubscriber
from ._switching import SWITCH_INTERVAL_S, collection_deferred, fast_thread_switching
from ._worker import BUS_FILE, BusInfo, WorkerLink, attach, process_gone, this_host

__all__ = [
    "BUS_FILE",
    "JITTER_ROUNDS",
    "OVERLAY_DTYPES",
    "OVERLAY_FILE",
    "OVERLAY_VERSION",
    "STALL_MS",
    "SWITCH_INTERVAL_S",
    "Answered",
    "BusInfo",
    "BusSecurity",
    "DecisionClient",
    "DecisionServer",
    "Frame",
    "FramePublisher",
    "FrameSubscriber",
    "OverlayMessage",
    "OverlayPublisher",
    "OverlaySubscriber",
    "ShmReader",
    "ShmRing",
    "StallMonitor",
    "WorkerLink",
    "attach",
    "bench_bus",
    "bench_jitter",
    "bind",
    "collection_deferred",
    "connect",
    "decode_overlay",
    "fast_thread_switching",
    "is_loopback",
    "local_endpoint",
    "machine_info",
    "peak_memory_mb",
    "process_gone",
    "this_host",
    "uses_ipc",
]
