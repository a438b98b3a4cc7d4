"""Distributed data-parallel training on the engine PyTorch ships: ``torchrun`` + DDP.

``torchrun --nproc_per_node N -m pipelines.cli pretrain ...`` sets ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK``; :func:`init_distributed` joins the process group (gloo on CPU, NCCL on CUDA). Each
process draws the same global batch from the stateless sampler and trains on its share; gradients
are averaged by DDP. Only rank 0 logs, validates and writes checkpoints.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

__all__ = ["DistContext", "init_distributed", "replica_digests"]


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """Leave the process group together: every rank waits for the others (rank 0 finishes the
        run's last work alone) before the group is destroyed, so no rank exits mid-collective."""
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                try:
                    dist.barrier()
                finally:
                    dist.destroy_process_group()


def init_distributed() -> DistContext:
    """Join the process group when launched by torchrun; a single-process context otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    import torch
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    ctx = DistContext(rank=int(os.environ["RANK"]), world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(ctx.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return ctx


def replica_digests(model, ctx: DistContext) -> list[str]:
    """sha256 of every process's parameters, gathered on all ranks (equal when replicas are in sync)."""
    import torch
    import torch.distributed as dist

    h = hashlib.sha256()
    for _, p in sorted(model.state_dict().items()):
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    mine = h.hexdigest()
    if not ctx.enabled:
        return [mine]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, mine)
    del torch
    return out
