"""This process's place in a DDP process group (:class:`DistContext`), as the training loop
sees it; the group itself is set up by :mod:`~compcars_kedro.training.distributed`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """This process's place in the process group."""

    rank: int
    world_size: int
    backend: str
    device: torch.device

    def shard(self, batch: np.ndarray) -> np.ndarray:
        """This rank's contiguous share of a global index batch (trimmed to a multiple of N)."""
        n = len(batch) // self.world_size
        if n == 0:
            raise ValueError(
                f"a batch of {len(batch)} samples cannot be split over "
                f"training.ddp.world_size={self.world_size} processes"
            )
        return batch[self.rank * n : (self.rank + 1) * n]

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """Mean of ``value`` over ranks."""
        out = value.detach().clone().to(self.device)
        torch_dist.all_reduce(out)
        return out / self.world_size

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank."""
        t = torch.tensor([int(flag)], device=self.device)
        torch_dist.broadcast(t, src=0)
        return bool(t.item())

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``DistributedDataParallel`` around ``module``."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)  # buffers: rank 0's, each forward
