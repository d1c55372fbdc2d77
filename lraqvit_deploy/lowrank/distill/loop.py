"""The distillation loop: AdamW with warm-up + cosine schedule, resumable checkpoints, DDP under torchrun."""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ...errors import DeployError
from ...io import atomic_write
from ...layers import LowRankLinear, RBLRALinear
from ..configs import DistillConfig
from .distributed import data_parallel, init_distributed, is_main_process, process_device
from .loss import BlockKDStudent, block_kd_loss, encoder_blocks, teacher_pass

CHECKPOINT_FORMAT = "lraqvit-deploy/kd-checkpoint/1"


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


def warmup_cosine(total: int, warmup: int):
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
    device = process_device(config.device)
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
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total, config.warmup(total)))
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
    net = data_parallel(BlockKDStudent(student, names, config.block_inputs), device, world)

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
                t_in, t_out = teacher_pass(teacher, names, x)
                logits, s_out = net(x, t_in)
                loss, ce, mse = block_kd_loss(logits, s_out, t_out, y, config)
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
