"""What the training scripts in tools/ share: seeding, the optimiser and loop, export, record.

Every script: `seeded` first (torch's generator, threads, deterministic
kernels), then its own data and model, then `fit` (AdamW with a one-cycle
learning rate, a line of JSON every ``log_every`` iterations), `export_onnx`
and `write_record` (train.json, from which the card scripts write the card), whose
command writes float options with `float_arg`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch


def seeded(seed: int, threads: int) -> None:
    """Make a run reproducible: same command, same machine, same weights."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def float_arg(value: float) -> str:
    """``value`` as written on a command line that gives back exactly ``value``.

    ``:g`` where that is exact (5, 0.5, 0.4: as the shipped cards' commands have them),
    else the shortest exact form (``repr``): ``:g`` keeps 6 significant digits, so a
    recorded ``--gamma 0.33333333`` would have read 0.333333 and not reproduced the run.
    """
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def fit(
    model: torch.nn.Module,
    iters: int,
    loss_at: Callable[[int], torch.Tensor],
    *,
    t0: float,
    log_every: int = 50,
) -> list[dict[str, Any]]:
    """Train ``model`` for ``iters`` steps of ``loss_at(iteration)``; returns the loss log.

    Raises
    ------
    ValueError
        when ``iters`` is under 1.

    """
    if iters < 1:
        raise ValueError(f"--iters must be at least 1, got {iters}")
    # The learning rate warms up over the first 10 % of the steps. OneCycleLR divides
    # by zero when that is exactly one step (iters == 10, a natural smoke run): there
    # it warms up over two. Every other count, the shipped engines' included, keeps 10 %.
    warm_up = 0.2 if iters == 10 else 0.1
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=3e-3, total_steps=iters, pct_start=warm_up
    )
    model.train()
    log: list[dict[str, Any]] = []
    for it in range(iters):
        loss = loss_at(it)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if it % log_every == 0 or it == iters - 1:
            log.append({"iter": it, "loss": round(loss.item(), 4), "s": round(time.time() - t0, 1)})
            print(json.dumps(log[-1]), flush=True)
    model.eval()
    return log


def export_onnx(
    model: torch.nn.Module,
    out: Path,
    example_shape: Sequence[int],
    input_name: str,
    output_name: str,
    dynamic_axes: dict[int, str],
) -> None:
    """Write ``out/model.onnx`` (opset 17) with the given dynamic axes on input and output."""
    out.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model, (torch.zeros(*example_shape),), str(out / "model.onnx"),
        input_names=[input_name], output_names=[output_name],
        dynamic_axes={input_name: dynamic_axes, output_name: dynamic_axes},
        opset_version=17, do_constant_folding=False, dynamo=False,
    )  # fmt: skip


def write_record(out: Path, record: dict[str, Any], t0: float) -> None:
    """Write ``out/train.json`` (adding the seconds taken and the torch version)."""
    record = {**record, "seconds": round(time.time() - t0, 1), "torch": torch.__version__}
    (out / "train.json").write_text(json.dumps(record, indent=1))
    print(f"done in {time.time() - t0:.0f} s", flush=True)
