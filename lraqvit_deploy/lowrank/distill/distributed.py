"""Data-parallel distillation under `torchrun` (PyTorch DDP: gloo on CPU, NCCL on GPUs).

torchrun sets WORLD_SIZE / RANK / LOCAL_RANK; every process reads its shard of each batch
(DistributedSampler) and DDP averages the gradients, so N processes at batch b train like one
process at batch N x b.
"""
from __future__ import annotations

import os
from typing import Tuple

import torch
import torch.distributed as dist
import torch.nn as nn


def init_distributed() -> Tuple[int, int]:
    """(rank, world size); joins the process group torchrun describes, if any and not joined yet."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def process_device(device: str = "auto") -> torch.device:
    """`device`, or for "auto" this process's CUDA device (LOCAL_RANK) when there is one, else the CPU."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def data_parallel(net: nn.Module, device: torch.device, world: int) -> nn.Module:
    """`net` wrapped in DistributedDataParallel when more than one process trains, else `net` itself."""
    if world <= 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
