"""One training code path for one process, several GPUs of a machine and several machines:
PyTorch's own engine (``torch.distributed`` started by ``torchrun``, DistributedDataParallel).

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; without it
the context is a single process and nothing is initialised. Each rank trains on its own slice of
every global batch (``batch_size`` images per rank, as mmdet's ``samples_per_gpu``); DDP averages
the gradients, so N ranks with batch b take the same steps as one process with batch N*b when the
batch statistics are shared (SyncBN) or frozen. Rank 0 alone logs and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Dict, Optional

import torch
from torch import nn


@dataclass
class DistContext:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str) -> str:
        """The device of this rank: ``cuda`` becomes ``cuda:<local rank>`` under torchrun."""
        if str(requested).startswith("cuda") and self.enabled:
            return f"cuda:{self.local_rank}"
        return str(requested)

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def mean(self, values: Dict[str, float]) -> Dict[str, float]:
        """The mean of scalar values over the ranks (for logging), same keys."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        if self.backend == "nccl":
            t = t.cuda()
        torch.distributed.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.cpu().tolist())}

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def from_env(device: str = "cpu", timeout_s: int = 1800) -> DistContext:
    """The context torchrun describes in the environment; initialises the process group
    (NCCL for CUDA, gloo for CPU) when there is more than one rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = str(device).startswith("cuda")
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return DistContext(rank, world, local, backend)


def wrap(module: nn.Module, ctx: DistContext, device: str, sync_bn: bool = False) -> nn.Module:
    """``module`` (a loss module) ready for this job: SyncBN when asked (CUDA only) and DDP."""
    if not ctx.enabled:
        return module
    if sync_bn:
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    ids = [torch.device(device).index] if str(device).startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)


def peak_memory_mb(device: str) -> Optional[float]:
    """Peak CUDA memory allocated by this process (MiB), None on the CPU."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    return None


def rss_mb() -> Optional[float]:
    """Peak resident memory of this process (MiB), where the OS reports it."""
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except (ImportError, OSError):  # pragma: no cover - not on POSIX
        return None
