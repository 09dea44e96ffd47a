"""The distributed runtime: rank, world size and device from torchrun's environment; one process group."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


class Runtime:
    """Process-group bookkeeping: rank, world size, device; initialised from torchrun's environment."""

    def __init__(self, device: str = "auto"):
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device not in ("auto", "cpu") and not device.startswith("cuda"):
            raise ValueError(f"--device must be cpu, cuda or auto, got {device!r}")
        use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("--device cuda requested but CUDA is not available")
        self.device = torch.device(f"cuda:{self.local_rank}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, *values: float) -> list[float]:
        """Sum scalars over ranks (float64, so counts stay exact)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.distributed:
            dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when any rank passes True."""
        return self.sum(float(flag))[0] > 0 if self.distributed else flag

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order (on every rank)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast_buffers(self, model) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics stay per-rank on CPU)."""
        if self.distributed:
            for b in model.buffers():
                dist.broadcast(b, 0)

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
