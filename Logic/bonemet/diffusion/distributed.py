"""torchrun / DistributedDataParallel helpers.

Processes started by ``torchrun`` (or ``python -m torch.distributed.run``) find ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment; :func:`init` joins the process group
from it (NCCL on GPUs, gloo on CPU). Without those variables everything runs as a single process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger("bonemet")


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def env_world() -> tuple[int, int, int]:
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def init(device_type: str = "cpu", backend: str | None = None) -> Dist:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (no-op otherwise)."""
    import torch.distributed as dist

    rank, world, local = env_world()
    if world <= 1:
        return Dist()
    if dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), local, False)
    backend = backend or ("nccl" if device_type == "cuda" else "gloo")
    dist.init_process_group(backend=backend, init_method="env://")
    log.info("process %d of %d joined the %s process group", rank, world, backend)
    return Dist(dist.get_rank(), dist.get_world_size(), local, True)


def barrier(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()


def mean(d: Dist, value: float, device=None) -> float:
    """Mean of a float over all processes."""
    if not d.enabled:
        return float(value)
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / d.world


def any_flag(d: Dist, flag: bool, device=None) -> bool:
    """True on every process if ``flag`` is true on any (e.g. to stop all ranks on an error)."""
    if not d.enabled:
        return bool(flag)
    import torch
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def finish(d: Dist) -> None:
    if d.initialised_here:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
