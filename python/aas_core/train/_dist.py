"""Single-process or ``torchrun`` (DistributedDataParallel) set-up, one code path.

Under ``torchrun`` the environment carries RANK, WORLD_SIZE and LOCAL_RANK;
without them the run is one process and every collective is the identity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ._runtime import resolve_device

__all__ = ["Dist", "setup"]


@dataclass
class Dist:
    rank: int
    world: int
    device: torch.device
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self):
        if self.active:
            dist.barrier()

    def broadcast_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``t`` on every rank (same shape and dtype everywhere)."""
        if self.active:
            buf = t.to(self._comm_device())
            dist.broadcast(buf, src=0)
            t.copy_(buf.to(t.device))
        return t

    def broadcast_object(self, obj):
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """The ranks' ``t`` (equal shapes) concatenated along dim 0, in rank order."""
        if not self.active:
            return t
        buf = t.contiguous().to(self._comm_device())
        parts = [torch.empty_like(buf) for _ in range(self.world)]
        dist.all_gather(parts, buf)
        return torch.cat(parts).to(t.device)

    def _comm_device(self):
        # gloo communicates CPU tensors, NCCL CUDA tensors.
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def close(self):
        if self.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


def setup(device: str = "auto") -> Dist:
    """The process's rank, world size and device; joins the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(0, 1, resolve_device(device))
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        # One GPU per process: the local rank picks it, whatever index was given.
        dev = resolve_device(f"cuda:{local}")
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        dev = resolve_device(device)
        backend = "gloo"
    here = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
        here = True
    return Dist(rank, world, dev, here)
