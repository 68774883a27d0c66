"""A worker process for end-to-end tests; it uses only livescope's public worker API.

python tests/worker_proc.py RUN_DIR RESULT_JSON [--add-after K] [--sleep-ms S]
    [--policy every|latest] [--maxlen N] [--idle-s S]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import useq

from livescope.bus import attach
from livescope.schema import AddEvents


def _write(path: Path, result: dict) -> None:
    """Replace the result file atomically (the test reads it while this runs)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("result", type=Path)
    ap.add_argument("--add-after", type=int, default=-1)
    ap.add_argument("--sleep-ms", type=float, default=0.0)
    ap.add_argument("--policy", default="every")
    ap.add_argument("--maxlen", type=int, default=16)
    ap.add_argument("--idle-s", type=float, default=3.0)
    a = ap.parse_args()
    deadline = time.monotonic() + 30
    while not (a.run / "bus.json").exists():
        if time.monotonic() > deadline:
            return 3
        time.sleep(0.05)
    seqs: list[int] = []
    acks = []
    bus = json.loads((a.run / "bus.json").read_text())
    with attach(a.run, policy=a.policy, maxlen=a.maxlen) as link:
        print("attached", flush=True)
        while (frame := link.frames.get(timeout=a.idle_s)) is not None:
            with frame:
                seqs.append(frame.seq)
                _ = float(frame.array[::64, ::64].mean())  # touch the pixels
                if a.add_after >= 0 and frame.seq >= a.add_after and not acks:
                    events = [
                        useq.MDAEvent(
                            index={"t": 100 + i, "p": 0},
                            channel={"config": "DAPI"},
                            exposure=25.0,
                        )
                        for i in range(3)
                    ]
                    ack = link.decide(
                        AddEvents(run_id=link.run_id, seq=frame.seq, events=events, rule="e2e")
                    )
                    acks.append(ack.model_dump(mode="json"))
            if a.sleep_ms:
                time.sleep(a.sleep_ms / 1000)
            _write(a.result, {"seqs": seqs, "acks": acks, "stats": link.frames.stats(), "bus": bus})
        stats = link.frames.stats()
    _write(a.result, {"seqs": seqs, "acks": acks, "stats": stats, "bus": bus, "done": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
