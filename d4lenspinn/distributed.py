"""Data-parallel training across processes: ``torchrun --nproc_per_node N -m d4lenspinn train ...``.

    ddp = Distributed(resolve_device("auto"))      # a single process is rank 0 of a world of 1
    network = ddp.wrap(model)                      # DistributedDataParallel when world > 1, else the model itself
    batch = ddp.shard_batch(batch)                 # this rank's slice of the global batch

Each process trains on ``1/N`` of every batch with DistributedDataParallel (gloo on CPU, nccl on CUDA, one GPU per
process); rank 0 evaluates, logs and writes checkpoints. Every rank reads the same global batch (same seeded order and
augmentation) and keeps its slice, so the run sees exactly the batches of a single-process run (BatchNorm statistics
are per rank, the one expected difference).
"""

from __future__ import annotations

import math
import os

import torch
import torch.distributed as dist
from torch import nn

from .data import Batch, Truth

__all__ = ["Distributed"]


class Distributed:
    """Process-group bookkeeping from torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``);
    ``device``: this process's device (with several processes on CUDA, the GPU of its local rank)."""

    def __init__(self, device: torch.device) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if self.world > 1 and device.type == "cuda":  # one GPU per process
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        self.device = device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def broadcast(self, value):
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if self.world == 1:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def wrap(self, model: nn.Module) -> nn.Module:
        """What the training steps call: ``model`` itself, or its DistributedDataParallel wrapper."""
        if self.world == 1:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch."""
        if self.world == 1:
            return batch
        per_rank = math.ceil(batch.shape[0] / self.world)
        return batch[self.rank * per_rank : (self.rank + 1) * per_rank]

    def shard_batch(self, batch: Batch) -> Batch:
        """This rank's slice of every tensor of ``batch``, its truth included."""
        batch = Batch(*(self.shard(t) if isinstance(t, torch.Tensor) else t for t in batch))
        if batch.truth is not None:
            batch = batch._replace(truth=Truth(*(self.shard(t) for t in batch.truth)))
        return batch
