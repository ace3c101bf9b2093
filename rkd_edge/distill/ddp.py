"""DistributedDataParallel under torchrun: gloo on CPU, NCCL on GPU, plain single process otherwise."""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn

_solo = False


@contextlib.contextmanager
def solo() -> Iterator[None]:
    """Work that rank 0 does alone while the other ranks wait at a barrier (training a teacher inside a
    run, say): inside, this process sees a world of one, so nothing wraps in DDP or waits on a collective
    the other ranks will never join."""
    global _solo
    previous, _solo = _solo, True
    try:
        yield
    finally:
        _solo = previous


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside torchrun (and inside :func:`solo`)."""
    if _solo:
        return 0, 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def init_from_env(device: str) -> bool:
    """Join the process group torchrun set up (``WORLD_SIZE`` > 1). Returns whether DDP is on."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        # Long timeout: other ranks wait while rank 0 trains the teacher or runs the search.
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=12))
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def wrap(model: nn.Module, device: str) -> nn.Module:
    """Wrap in DDP when running distributed; ``find_unused_parameters`` because stages freeze parts."""
    if world()[1] == 1:
        return model
    ids = [torch.cuda.current_device()] if device.startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def all_mean(value: float) -> float:
    """Mean of a scalar over ranks (metrics), read once per epoch."""
    if world()[1] == 1:
        return value
    # NCCL reduces GPU tensors only; gloo takes host tensors.
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return float(t.item()) / world()[1]


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()
