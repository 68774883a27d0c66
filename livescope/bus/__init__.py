"""The frame bus (ZeroMQ): frames out of the agent, decisions back in.

Agent side: `FramePublisher`, `DecisionServer`. Worker side: `attach` (or
`FrameSubscriber` and `DecisionClient`). Wire protocol v1 is in
`livescope.schema` (`FrameHeader`).
"""

from ._bench import bench_bus
from ._decisions import DecisionClient, DecisionServer
from ._endpoints import BusSecurity, bind, connect, is_loopback, local_endpoint
from ._publisher import FramePublisher
from ._shm import ShmReader, ShmRing
from ._subscriber import Frame, FrameSubscriber
from ._worker import BUS_FILE, BusInfo, WorkerLink, attach

__all__ = [
    "BUS_FILE",
    "BusInfo",
    "BusSecurity",
    "DecisionClient",
    "DecisionServer",
    "Frame",
    "FramePublisher",
    "FrameSubscriber",
    "ShmReader",
    "ShmRing",
    "WorkerLink",
    "attach",
    "bench_bus",
    "bind",
    "connect",
    "is_loopback",
    "local_endpoint",
]
