"""Block-level knowledge distillation of a low-rank student from its dense teacher (LRA-QViT §3.4).

    L = α CE(student logits, y) + β Σ_l MSE(f_t^l(x_l), f_s^l(x_l))      (paper Eq. 9-10)

f^l is the l-th encoder block and x_l its input (taken from the teacher by default). AdamW with a
cosine schedule; resumable checkpoints; data-parallel under `torchrun` through PyTorch DDP (gloo on
CPU, NCCL on GPUs): every process reads its shard of each batch (DistributedSampler) and DDP
averages the gradients, so N processes at batch b train like one process at batch N x b.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..errors import DeployError
from ..layers import LowRankLinear, RBLRALinear
from .configs import DistillConfig

CHECKPOINT_FORMAT = "lraqvit-deploy/kd-checkpoint/1"
_BLOCK = re.compile(r"(^|\.)blocks\.\d+$")


# ----------------------------------------------------------------------------------------------
# distributed helpers (torchrun sets WORLD_SIZE / RANK / LOCAL_RANK)
# ----------------------------------------------------------------------------------------------
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


def _device(config: DistillConfig) -> torch.device:
    if config.device != "auto":
        return torch.device(config.device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


# ----------------------------------------------------------------------------------------------
# the loss
# ----------------------------------------------------------------------------------------------
def encoder_blocks(model: nn.Module) -> List[str]:
    """Names of the encoder blocks (`blocks.N` in ViT/DeiT/DINOv2, `layers.S.blocks.N` in Swin)."""
    names = [n for n, _ in model.named_modules() if _BLOCK.search(n)]
    if not names:
        raise DeployError(f"{type(model).__name__} has no encoder blocks named blocks.N; block KD needs a timm ViT/Swin.")
    return names


@contextlib.contextmanager
def _capture(model: nn.Module, names: Sequence[str]) -> Iterator[Tuple[List, List]]:
    """Record each named block's input and output during forward passes inside the block."""
    inputs: List[torch.Tensor] = [None] * len(names)  # type: ignore[list-item]
    outputs: List[torch.Tensor] = [None] * len(names)  # type: ignore[list-item]
    handles = []
    for i, n in enumerate(names):
        blk = model.get_submodule(n)
        handles.append(blk.register_forward_pre_hook(lambda m, a, i=i: inputs.__setitem__(i, a[0])))
        handles.append(blk.register_forward_hook(lambda m, a, o, i=i: outputs.__setitem__(i, o)))
    try:
        yield inputs, outputs
    finally:
        for h in handles:
            h.remove()


class BlockKDStudent(nn.Module):
    """Student logits and per-block outputs in ONE forward call, so DDP sees a single forward."""

    def __init__(self, model: nn.Module, block_names: Sequence[str], block_inputs: str = "teacher"):
        super().__init__()
        self.model, self.block_names, self.block_inputs = model, list(block_names), block_inputs

    def forward(self, x: torch.Tensor, teacher_inputs: Sequence[torch.Tensor]):
        if self.block_inputs == "student":
            with _capture(self.model, self.block_names) as (_, outs):
                logits = self.model(x)
            return logits, list(outs)
        logits = self.model(x)
        outs = [self.model.get_submodule(n)(t) for n, t in zip(self.block_names, teacher_inputs)]
        return logits, outs


def _teacher_pass(teacher: nn.Module, names: Sequence[str], x: torch.Tensor):
    with torch.no_grad(), _capture(teacher, names) as (ins, outs):
        teacher(x)
    return list(ins), list(outs)


def _loss(logits, s_outs, t_outs, y, config: DistillConfig) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ce = F.cross_entropy(logits, y)
    if config.feature_loss == "nmse":  # teacher features carry no grad: a constant per block and batch
        mse = sum(F.mse_loss(s, t) / t.pow(2).mean().clamp_min(1e-12) for s, t in zip(s_outs, t_outs))
    else:
        mse = sum(F.mse_loss(s, t) for s, t in zip(s_outs, t_outs))
    return config.alpha * ce + config.beta * mse, ce, mse


@torch.no_grad()
def kd_loss(student: nn.Module, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor,
            config: DistillConfig = DistillConfig()) -> Dict[str, float]:
    """The distillation loss (and its CE / block-MSE parts) of `student` on one batch."""
    names = encoder_blocks(teacher)
    t_in, t_out = _teacher_pass(teacher.eval(), names, x)
    logits, s_out = BlockKDStudent(student, names, config.block_inputs)(x, t_in)
    loss, ce, mse = _loss(logits, s_out, t_out, y, config)
    return {"loss": loss.item(), "ce": ce.item(), "mse": float(mse)}


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------
def kd_parameters(model: nn.Module, trainable: str = "low_rank") -> List[nn.Parameter]:
    """The parameters distillation updates (see `DistillConfig.trainable`); sets requires_grad."""
    if trainable == "all":
        params = list(model.parameters())
    else:
        params = []
        for m in model.modules():
            if isinstance(m, RBLRALinear):
                params += [m.branch_up, m.branch_down] + ([m.up.weight, m.down.weight] if m.train_base else [])
            elif isinstance(m, LowRankLinear):
                params += [m.up.weight, m.down.weight]
        if not params:
            raise DeployError("the model has no low-rank layers to distil; run compress_ first.")
        if trainable == "low_rank+norm":
            seen = {id(p) for p in params}
            for m in model.modules():
                extra = [m.weight, m.bias] if isinstance(m, nn.LayerNorm) else [getattr(m, "bias", None)]
                params += [p for p in extra if isinstance(p, nn.Parameter) and id(p) not in seen]
                seen.update(id(p) for p in extra)
    keep = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return params


@dataclass
class DistillResult:
    steps: int
    world_size: int
    seconds: float
    start_step: int = 0  # > 0 when resumed from a checkpoint
    losses: List[float] = field(default_factory=list)  # per step, this process's batch

    @property
    def first_loss(self) -> Optional[float]:
        return self.losses[0] if self.losses else None

    @property
    def last_loss(self) -> Optional[float]:
        return self.losses[-1] if self.losses else None

    def to_dict(self) -> Dict[str, Any]:
        tail = self.losses[-10:]
        return {"steps": self.steps, "world_size": self.world_size, "seconds": round(self.seconds, 1),
                "start_step": self.start_step, "first_loss": self.first_loss,
                "final_loss": sum(tail) / len(tail) if tail else None}


def _batches(sampler: DistributedSampler, epoch: int, batch_size: int) -> List[List[int]]:
    sampler.set_epoch(epoch)
    idx = list(sampler)
    return [idx[i : i + batch_size] for i in range(0, len(idx) - batch_size + 1, batch_size)]


def _fingerprint(student: nn.Module, config: DistillConfig, extra: Optional[Dict[str, Any]]) -> str:
    cfg = {k: v for k, v in config.to_dict().items() if k not in ("checkpoint_every", "num_workers", "device")}
    shapes = [(k, list(v.shape)) for k, v in student.state_dict().items()]
    return json.dumps({"config": cfg, "shapes": shapes, "extra": extra or {}}, sort_keys=True, default=str)


def _save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    from ..artifacts import atomic_write

    with atomic_write(path) as f:
        torch.save(state, f)


def _load_checkpoint(path: Path, fingerprint: str) -> Dict[str, Any]:
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DeployError(f"{path} is not a distillation checkpoint of this lraqvit-deploy version.")
    if state["fingerprint"] != fingerprint:
        raise DeployError(f"{path} was written by a run with a different model, compression or distillation "
                          "config; rerun without --resume (or with the original options), or delete it.")
    return state


def _warmup_cosine(total: int, warmup: int):
    """lr factor: linear warm-up over `warmup` steps, then cosine from 1 to 0 at `total`."""
    warmup = min(warmup, max(total - 1, 0))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, total - warmup) / max(total - warmup, 1)))

    return factor


def distill_(student: nn.Module, teacher: nn.Module, train_ds: Dataset, config: DistillConfig = DistillConfig(),
             checkpoint: Optional[os.PathLike] = None, resume: bool = False,
             fingerprint_extra: Optional[Dict[str, Any]] = None, progress: bool = True) -> DistillResult:
    """Train `student` in place to match `teacher` block by block; returns the loss history.

    Under `torchrun` each process must call this with the same arguments; only rank 0 writes the
    checkpoint (`checkpoint`, a file path). `resume=True` continues from it when it exists.
    """
    from tqdm import tqdm

    rank, world = init_distributed()
    device = _device(config)
    names = encoder_blocks(teacher)
    if encoder_blocks(student) != names:
        raise DeployError("student and teacher have different encoder blocks; the student must be a compressed copy.")
    flags = {id(p): p.requires_grad for p in student.parameters()}
    params = kd_parameters(student, config.trainable)
    fingerprint = _fingerprint(student, config, fingerprint_extra)

    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=config.seed, drop_last=True)
    steps_per_epoch = len(sampler) // config.batch_size
    if steps_per_epoch == 0:
        raise DeployError(f"the training set ({len(train_ds)} images over {world} processes) is smaller than one "
                          f"batch of {config.batch_size}; lower --kd-batch-size or use more data.")
    total = config.total_steps(steps_per_epoch)

    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_cosine(total, config.warmup(total)))
    start, losses = 0, []
    path = Path(checkpoint) if checkpoint else None
    if resume and path is not None and path.is_file():
        state = _load_checkpoint(path, fingerprint)
        student.load_state_dict(state["student"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, losses = int(state["step"]), list(state["losses"])
        if is_main_process() and progress:
            print(f"resuming distillation at step {start}/{total} from {path}")

    home = next(student.parameters()).device
    teacher.to(device).eval()
    student.to(device).train()
    net: nn.Module = BlockKDStudent(student, names, config.block_inputs)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)

    t0 = time.perf_counter()
    bar = tqdm(total=total, initial=start, desc=f"block KD (x{world})" if world > 1 else "block KD",
               disable=not (progress and rank == 0), dynamic_ncols=True)
    step = start
    try:
        while step < total:
            epoch, offset = divmod(step, steps_per_epoch)
            loader = DataLoader(train_ds, batch_sampler=_batches(sampler, epoch, config.batch_size)[offset:],
                                num_workers=config.num_workers)
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True)
                t_in, t_out = _teacher_pass(teacher, names, x)
                logits, s_out = net(x, t_in)
                loss, ce, mse = _loss(logits, s_out, t_out, y, config)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if config.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                opt.step()
                sched.step()
                step += 1
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}", ce=f"{ce.item():.3f}", mse=f"{float(mse.detach()):.4f}",
                                lr=f"{sched.get_last_lr()[0]:.2e}")
                if path is not None and rank == 0 and (step % config.checkpoint_every == 0 or step == total):
                    _save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "step": step,
                                            "student": student.state_dict(), "optimizer": opt.state_dict(),
                                            "scheduler": sched.state_dict(), "losses": losses})
                if step >= total:
                    break
    finally:
        bar.close()
        for p in student.parameters():
            p.requires_grad_(flags.get(id(p), True))
        student.to(home).eval()
        teacher.to(home)
    return DistillResult(steps=total, world_size=world, seconds=time.perf_counter() - t0, start_step=start,
                         losses=losses)
