"""Distributed meta-training and evaluation on ``torch.distributed``, launched by ``torchrun``'s engine.

``metaloop train ... --nproc N`` (and ``eval``) starts N local processes with PyTorch's elastic launcher
(:func:`launch`, what ``torchrun`` runs); ``torchrun --nproc-per-node N -m metaloop train ...`` does the same,
and torchrun's rendezvous options (``--nnodes``, ``--rdzv-endpoint``) spread the processes over machines. Each
process reads its place from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``) and joins the process group: gloo on the CPU, NCCL on CUDA (one GPU per process,
``cuda:LOCAL_RANK``).

**No DistributedDataParallel.** DDP does not synchronize gradients taken with ``create_graph=True``
(pytorch#63929) and FSDP has no double backward, which second-order MAML needs. Each process computes the
meta-gradient of its share of the meta-batch (any algorithm: the gradient-based family, Reptile's θ − mean φ,
the metric and solver heads), and one all-reduce sums, over the processes, every meta-parameter's gradient
weighted by the process's task count, with the task counts and losses in the same flat vector
(:func:`sync_gradients`): every process then holds the meta-batch's mean gradient and takes the same optimizer
step. A parameter that no process gave a gradient keeps none (Adam leaves it alone, as with one process).

**Tasks are shared out, not re-sampled.** The tasks of iteration ``i`` are a fixed slice of the seeded task
stream; process ``r`` of ``N`` takes a contiguous part of it (:func:`share`; uneven parts work, and a process
with none takes part in the all-reduce with zeros), so the union is exactly one process's meta-batch, and a
run gives one process's result up to the order of floating-point sums. The decision to stop (the time budget, a
Ctrl-C) is taken jointly (:func:`agree`), so no process waits for the others forever. Only the first process
writes (the config, the metrics, the checkpoints, the plots, the progress bar); a run resumes with any
number of processes.

Limits: BatchNorm in ``running`` mode keeps per-process statistics, and LEO draws its noise from one stream per
meta-step: both are refused with more than one process.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from metaloop.errors import MetaloopError

#: Set in the processes that :func:`launch` starts: their errors go to the launcher, which prints one line.
LAUNCHED = "METALOOP_LAUNCHED"


@dataclass(frozen=True)
class World:
    """This process's place: ``rank`` of ``size`` processes, ``local_rank`` of ``local_size`` on this machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def main(self) -> bool:
        """The first process, the one that writes."""
        return self.rank == 0


def world() -> World:
    """This process's place, from torchrun's environment (one process without it)."""
    get = lambda name, default: int(os.environ.get(name, default))  # noqa: E731
    size = get("WORLD_SIZE", 1)
    return World(get("RANK", 0), size, get("LOCAL_RANK", 0), get("LOCAL_WORLD_SIZE", size))


def init(device: str) -> tuple[World, str]:
    """Join the process group (once) and return the world and this process's device (``cuda`` becomes
    ``cuda:LOCAL_RANK``)."""
    place = world()
    if place.size == 1:
        return place, device
    cuda = torch.device(device).type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise MetaloopError("option 'device': NCCL needs CUDA, which this machine lacks (use device=cpu: gloo)")
        device = f"cuda:{place.local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
        atexit.register(_leave)
    return place, device


def _leave() -> None:
    """Leave the process group before the interpreter exits: a gloo group left to interpreter teardown can end a
    process with SIGABRT ("terminate called without an active exception"), seen here under load."""
    if dist.is_initialized():
        dist.destroy_process_group()


def share(count: int, place: World) -> tuple[int, int]:
    """The contiguous part ``[start, stop)`` of a meta-batch of ``count`` tasks that process ``place`` takes."""
    base, extra = divmod(count, place.size)
    start = place.rank * base + min(place.rank, extra)
    return start, start + base + (1 if place.rank < extra else 0)


def sync_gradients(learner: torch.nn.Module, loss: float, tasks: int) -> float:
    """Make every process's ``.grad`` the meta-batch's mean meta-gradient; return the meta-batch's mean loss.

    One all-reduce of ``[tasks · g for every meta-parameter, tasks · loss, tasks, has-gradient flags]``: the
    sum over processes, divided by the total task count. ``learner`` holds its share's mean gradient on entry.
    """
    params = [p for p in learner.parameters() if p.requires_grad]
    device = params[0].device if params else torch.device("cpu")
    dtype = params[0].dtype if params else torch.float64
    parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) * tasks for p in params]
    flags = torch.tensor([p.grad is not None for p in params], dtype=dtype, device=device)
    tail = torch.tensor([loss * tasks, float(tasks)], dtype=torch.float64 if dtype == torch.float64 else dtype,
                        device=device)
    flat = torch.cat([*parts, tail.to(dtype), flags]) if parts else torch.cat([tail.to(dtype), flags])
    dist.all_reduce(flat)
    total = float(flat[sum(p.numel() for p in params) + 1])
    if total == 0:
        raise MetaloopError("a meta-step had no task in any process (meta_batch_size must be positive)")
    offset = 0
    for p, flag in zip(params, flat[-len(params):] if params else []):
        chunk = flat[offset: offset + p.numel()].view_as(p) / total
        offset += p.numel()
        p.grad = chunk.clone() if float(flag) > 0 else None
    return float(flat[offset]) / total


def agree(flags: Sequence[bool], place: World) -> list[bool]:
    """Each flag, true in every process when it is true in one (stop decisions taken jointly)."""
    if place.size == 1:
        return list(flags)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return [bool(v > 0) for v in value.tolist()]


def gather(obj: Any, place: World) -> list[Any]:
    """Every process's ``obj``, in rank order, in every process."""
    if place.size == 1:
        return [obj]
    out: list[Any] = [None] * place.size
    dist.all_gather_object(out, obj)
    return out


def check_limits(learner: torch.nn.Module, place: World) -> None:
    """Refuse what a distributed run cannot keep equal to one process (see the module docstring)."""
    if place.size == 1:
        return
    fmodel = getattr(learner, "fmodel", None)
    if fmodel is not None and fmodel.has_batch_norm and fmodel.bn_mode == "running":
        raise MetaloopError("option 'bn_mode': 'running' BatchNorm keeps per-process statistics; with more than one "
                            "process use bn_mode=transductive")
    reason = getattr(learner, "single_process_only", None)
    if reason:
        raise MetaloopError(f"{reason} does not run on more than one process yet (--nproc 1)")


def write_error(message: str) -> None:
    """In a process that :func:`launch` started: leave the error for the launcher (torchelastic's error file)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        with open(path, "w") as fh:
            json.dump({"message": {"message": message, "extraInfo": {"py_callstack": "",
                                                                     "timestamp": str(int(time.time()))}}}, fh)


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m metaloop ARGV`` in ``nproc`` local processes with PyTorch's elastic launcher (what
    ``torchrun --standalone --nproc-per-node`` does); a failure in any process stops them all and is printed as
    one line naming the process. Each process gets ``cores // nproc`` threads unless ``OMP_NUM_THREADS`` is set."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise MetaloopError(f"--nproc must be positive, got {nproc}")
    logging.getLogger("torch.distributed").setLevel(logging.CRITICAL)  # its failure reports: ours is one line
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // nproc)))
    os.environ[LAUNCHED] = "1"
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.2,
                          start_method="spawn")
    try:
        elastic_launch(config, sys.executable)("-m", "metaloop", *argv)
    except ChildFailedError as exc:
        def text(failure: Any) -> str:
            message = failure.message.get("message", "") if isinstance(failure.message, dict) else failure.message
            return str(message or "").strip()

        # the error of a process's own (the first such by rank), else the first failure (a kill, a crash)
        own = sorted((rank, f) for rank, f in exc.failures.items() if f.exitcode == 2 and text(f))
        rank, failure = own[0] if own else exc.get_first_failure()
        message = (text(failure) or f"exit code {failure.exitcode}").splitlines()[-1]
        print(f"metaloop: error: process {rank} of {nproc}: {message.removeprefix('metaloop: error: ')}",
              file=sys.stderr)
        return 2 if failure.exitcode == 2 else 1
    return 0
