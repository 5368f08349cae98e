"""Multi-process training: torchrun (env://) with DistributedDataParallel.

Launch with e.g. ``torchrun --nproc_per_node 2 -m facesfm.cli train sfm ...`` (or
``--nnodes``/``--rdzv-endpoint`` for several machines); the gloo backend works on CPU, nccl on
GPUs. Each rank takes a disjoint, equally long share of the epoch's sample order (a function of
seed and epoch), so the ranks step in lockstep and DDP's all-reduce keeps the weights equal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "cleanup_distributed",
    "init_distributed",
    "param_spread",
    "shard",
    "wrap_ddp",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT); a single process (no WORLD_SIZE or 1) needs nothing."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend=backend, init_method="env://")
    return DistInfo(
        dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    )


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """DDP-wrap ``model`` when running distributed (CPU: no device ids)."""
    if not info.enabled:
        return model
    return torch.nn.parallel.DistributedDataParallel(model)


def shard(order: list[int], info: DistInfo, batch_size: int) -> list[list[int]]:
    """This rank's batches of an epoch's sample ``order``: rank r takes ``order[r::world]``,
    cut to the same whole number of batches on every rank (drop-last)."""
    per_rank = len(order) // info.world_size
    mine = order[info.rank :: info.world_size][:per_rank]
    n = per_rank // batch_size
    return [mine[i * batch_size : (i + 1) * batch_size] for i in range(n)]


def param_spread(model: torch.nn.Module, info: DistInfo) -> float:
    """Largest difference of any parameter between ranks (0.0 when in sync, or single)."""
    if not info.enabled:
        return 0.0
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
        hi, lo = flat.clone(), flat.clone()
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        return float((hi - lo).max())
