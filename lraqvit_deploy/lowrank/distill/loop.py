"""The distillation loop: AdamW with warm-up + cosine schedule, resumable checkpoints, DDP under torchrun."""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

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
# Divergence (docs/compress.md, "Divergence"): the run stops when its KD loss stays above
# DIVERGENCE_FACTOR x its running minimum for DIVERGENCE_STEPS consecutive steps, and at once on a
# NaN/inf loss (or NaN/inf gradients without a gradient scaler). Measured on the test bed (AMD EPYC):
# the default run (RB-LRA -45 %, 240 steps, lr 1e-3) never exceeds 1.42x its running minimum; with
# the branch at lr 1e-2 the loss goes 5.3 -> 4.1 -> 60,000 within 20 steps (top-1 8.8 % after 240
# steps): the rule stops it at step 17 (traces: benchmarks/results/gates_issue24.json).
DIVERGENCE_FACTOR = 4.0
DIVERGENCE_STEPS = 10
LR_CUT = 10.0  # the suggested resume lr: a tenth of the one that diverged


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


def _param_groups(model: nn.Module, params: List[nn.Parameter], config: DistillConfig) -> List[Dict[str, Any]]:
    """AdamW groups: RB-LRA's branch at `config.branch_lr` (when set), everything else at `config.lr`."""
    if config.branch_lr is None:
        return [{"params": params, "lr": config.lr}]
    branch = {id(p) for m in model.modules() if isinstance(m, RBLRALinear) for p in (m.branch_up, m.branch_down)}
    fast = [p for p in params if id(p) in branch]
    if not fast:
        raise DeployError("--kd-branch-lr sets the lr of RB-LRA's branch, and this model has no RB-LRA layers; "
                          "compress with --method rb-lra, or drop --kd-branch-lr.")
    rest = [p for p in params if id(p) not in branch]
    return [{"params": fast, "lr": config.branch_lr}] + ([{"params": rest, "lr": config.lr}] if rest else [])


@dataclass
class DistillResult:
    steps: int
    world_size: int
    seconds: float
    start_step: int = 0  # > 0 when resumed from a checkpoint
    losses: List[float] = field(default_factory=list)  # per step, this process's batch
    amp: str = "off"  # the mixed precision that ran: "bf16", "fp16" or "off"
    num_workers: int = 0  # data-loading processes (per process)

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
                "final_loss": sum(tail) / len(tail) if tail else None, "amp": self.amp,
                "num_workers": self.num_workers}


def _batches(sampler: DistributedSampler, epoch: int, batch_size: int) -> List[List[int]]:
    sampler.set_epoch(epoch)
    idx = list(sampler)
    return [idx[i : i + batch_size] for i in range(0, len(idx) - batch_size + 1, batch_size)]


class _RunBatches:
    """The batch sampler of a whole run: the batches of steps [start, total), epoch after epoch.

    Epoch e's batches are `_batches(sampler, e, batch_size)`, so one DataLoader over this yields
    exactly the batches of one loader per epoch, and a resume at step s starts at batch
    s % steps_per_epoch of epoch s // steps_per_epoch.
    """

    def __init__(self, sampler: DistributedSampler, batch_size: int, steps_per_epoch: int, start: int, total: int):
        self.sampler, self.batch_size, self.steps_per_epoch = sampler, batch_size, steps_per_epoch
        self.start, self.total = start, total

    def __len__(self) -> int:
        return max(self.total - self.start, 0)

    def __iter__(self) -> Iterator[List[int]]:
        step = self.start
        while step < self.total:
            epoch, offset = divmod(step, self.steps_per_epoch)
            for batch in _batches(self.sampler, epoch, self.batch_size)[offset:]:
                if step >= self.total:
                    return
                yield batch
                step += 1


def resolve_amp(amp: str, device: torch.device) -> Tuple[str, Optional[torch.dtype]]:
    """("bf16" | "fp16" | "off", autocast dtype or None) of `DistillConfig.amp` on `device`."""
    cuda = device.type == "cuda"
    if amp == "auto":
        if not cuda:
            return "off", None
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "fp16" and not cuda:
        raise DeployError(f"--kd-amp fp16 needs a CUDA device, not {device}; use --kd-amp bf16 or off.")
    if amp == "off":
        return "off", None
    if amp not in ("bf16", "fp16"):
        raise DeployError(f"--kd-amp {amp!r}: expected one of auto, bf16, fp16, off.")
    return amp, torch.bfloat16 if amp == "bf16" else torch.float16


def resolve_workers(num_workers: Optional[int], device: torch.device) -> int:
    """`DistillConfig.num_workers`, or for None: 0 on the CPU, min(8, this process's share of the CPUs - 1) on CUDA."""
    if num_workers is not None:
        return num_workers
    if device.type != "cuda":
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = cpus // max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)  # torchrun: GPUs on this node
    return max(0, min(8, per_process - 1))


def _fingerprint(student: nn.Module, config: DistillConfig, extra: Optional[Dict[str, Any]], amp: str = "off") -> str:
    cfg = {k: v for k, v in config.to_dict().items() if k not in ("checkpoint_every", "num_workers", "device", "amp")}
    if amp != "off":  # the resolved mode changes the numerics; "off" adds nothing, so older checkpoints still load
        cfg["amp"] = amp
    shapes = [(k, list(v.shape)) for k, v in student.state_dict().items()]
    return json.dumps({"config": cfg, "shapes": shapes, "extra": extra or {}}, sort_keys=True, default=str)


def _save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    with atomic_write(path) as f:
        torch.save(state, f)


def lowered_lr(key: str, there: Any, here: Any, there_cfg: Dict[str, Any], here_cfg: Dict[str, Any]) -> bool:
    """Whether a checkpoint setting `key` that differs (`there` vs `here`) is an lr lowered for a resume.

    A run that diverged keeps its last good checkpoint and is resumed with a lower --kd-lr and/or
    --kd-branch-lr (docs/compress.md, "Divergence"); every other setting must match. A branch lr
    must be given on both sides or on neither (the optimizer's parameter groups follow it).
    """
    if key not in ("lr", "branch_lr") or ("branch_lr" in there_cfg) != ("branch_lr" in here_cfg):
        return False
    try:
        return 0 < float(here) <= float(there)
    except (TypeError, ValueError):
        return False


def _same_settings(stored: str, ours: str) -> bool:
    """The stored fingerprint equals ours, but for lowered lrs (`lowered_lr`)."""
    if stored == ours:
        return True
    try:
        a, b = json.loads(stored), json.loads(ours)
        ca, cb = dict(a.pop("config")), dict(b.pop("config"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    diff = {k for k in set(ca) | set(cb) if ca.get(k) != cb.get(k)}
    return a == b and all(lowered_lr(k, ca.get(k), cb.get(k), ca, cb) for k in diff)


def _load_checkpoint(path: Path, fingerprint: str) -> Dict[str, Any]:
    from ...files import read_kd_checkpoint  # one line naming the file for any unreadable or foreign file

    state = read_kd_checkpoint(path, CHECKPOINT_FORMAT)
    if not _same_settings(state["fingerprint"], fingerprint):
        raise DeployError(f"{path} was written by a run with a different model, compression or distillation "
                          "config; rerun without --resume (or with the original options), or delete it.")
    return state


class DivergenceWatch:
    """The divergence rule on the loss history: the running minimum and the current run of steps above
    `factor` x it (`DIVERGENCE_FACTOR`, `DIVERGENCE_STEPS`). A resumed run replays its stored losses."""

    def __init__(self, losses: List[float] = (), factor: float = DIVERGENCE_FACTOR, steps: int = DIVERGENCE_STEPS):
        self.factor, self.steps = factor, steps
        self.best, self.streak = math.inf, 0
        for v in losses:
            self.update(v)

    def update(self, loss: float) -> Optional[str]:
        """Record one step's loss; the reason to stop, or None."""
        if not math.isfinite(loss):
            return f"the KD loss is {loss} (not finite)"
        if loss > self.factor * self.best:
            self.streak += 1
        else:
            self.streak = 0
        self.best = min(self.best, loss)
        if self.streak >= self.steps:
            return (f"the KD loss {loss:.4g} has stayed above {self.factor:g}x its running minimum {self.best:.4g} for "
                    f"{self.streak} steps")
        return None

    @property
    def suspect(self) -> bool:
        """The last loss was above the limit: a checkpoint now might hold a diverging state."""
        return self.streak > 0


def _lr_hint(config: DistillConfig) -> str:
    flags = f"--kd-lr {config.lr / LR_CUT:.1g}"
    if config.branch_lr is not None:
        flags += f" --kd-branch-lr {config.branch_lr / LR_CUT:.1g}"
    return flags


def _diverged(why: str, step: int, total: int, config: DistillConfig, path: Optional[Path],
              saved_step: Optional[int]) -> DeployError:
    lrs = f"lr {config.lr:g}" + (f", branch lr {config.branch_lr:g}" if config.branch_lr is not None else "")
    head = (f"distillation diverged at step {step}/{total} ({lrs}): {why} (the rule: docs/compress.md, "
            f"'Divergence'); nothing was saved.")
    if path is not None and saved_step is not None:
        return DeployError(f"{head} The last good checkpoint (step {saved_step}) is kept at {path}: rerun the same "
                           f"command with --resume {_lr_hint(config)} to continue it at a lower lr.")
    return DeployError(f"{head} No checkpoint was written before it; rerun with a lower lr, e.g. {_lr_hint(config)}.")


def _set_lrs(opt, sched, config: DistillConfig, factor) -> None:
    """After loading a checkpoint made at a higher lr: this run's peak lrs, on the schedule where it was."""
    groups = [config.branch_lr, config.lr] if config.branch_lr is not None else [config.lr]
    for g, lr in zip(opt.param_groups, groups):  # _param_groups' order: the branch first
        g["initial_lr"] = lr
        g["lr"] = lr * factor(sched.last_epoch)
    sched.base_lrs = [g["initial_lr"] for g in opt.param_groups]
    sched._last_lr = [g["lr"] for g in opt.param_groups]


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
    amp, amp_dtype = resolve_amp(config.amp, device)
    workers = resolve_workers(config.num_workers, device)
    flags = {id(p): p.requires_grad for p in student.parameters()}
    params = kd_parameters(student, config.trainable)
    fingerprint = _fingerprint(student, config, fingerprint_extra, amp)

    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=config.seed, drop_last=True)
    steps_per_epoch = len(sampler) // config.batch_size
    if steps_per_epoch == 0:
        raise DeployError(f"the training set ({len(train_ds)} images over {world} processes) is smaller than one "
                          f"batch of {config.batch_size}; lower --kd-batch-size or use more data.")
    total = config.total_steps(steps_per_epoch)

    opt = torch.optim.AdamW(_param_groups(student, params, config), weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total, config.warmup(total)))
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None  # bf16 has FP32's range: no scaling
    start, losses = 0, []
    path = Path(checkpoint) if checkpoint else None
    if path is not None and path.is_dir():
        raise DeployError(f"{path}: expected a distillation checkpoint file, found a folder; pass a file path "
                          "(e.g. OUT.kd-checkpoint.pt).")
    if resume and path is not None and path.is_file():
        state = _load_checkpoint(path, fingerprint)
        student.load_state_dict(state["student"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):  # absent in checkpoints of older versions
            scaler.load_state_dict(state["scaler"])
        start, losses = int(state["step"]), list(state["losses"])
        if state["fingerprint"] != fingerprint:  # a lower lr after a divergence (`lowered_lr`)
            _set_lrs(opt, sched, config, warmup_cosine(total, config.warmup(total)))
        if is_main_process() and progress:
            print(f"resuming distillation at step {start}/{total} from {path}")

    home = next(student.parameters()).device
    teacher.to(device).eval()
    student.to(device).train()
    net = data_parallel(BlockKDStudent(student, names, config.block_inputs), device, world)

    # ONE loader, iterated once, for the whole run: its workers start once and live across the epochs
    # (persistent_workers would only keep them alive after the loop, until the loader is collected)
    loader = DataLoader(train_ds, batch_sampler=_RunBatches(sampler, config.batch_size, steps_per_epoch, start, total),
                        num_workers=workers, pin_memory=device.type == "cuda")
    def autocast():
        return contextlib.nullcontext() if amp_dtype is None else torch.autocast(device.type, dtype=amp_dtype)

    watch = DivergenceWatch(losses)
    saved_step = start if (path is not None and resume and start > 0) else None  # the last checkpoint on disk
    t0 = time.perf_counter()
    bar = tqdm(total=total, initial=start, desc=f"block KD (x{world})" if world > 1 else "block KD",
               disable=not (progress and rank == 0), dynamic_ncols=True)
    step, images = start, 0
    try:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True)
            with autocast():
                t_in, t_out = teacher_pass(teacher, names, x)
                logits, s_out = net(x, t_in)
            # the loss in FP32 whatever the forwards ran in
            loss, ce, mse = block_kd_loss(logits.float(), [s.float() for s in s_out], [t.float() for t in t_out],
                                          y, config)
            value = loss.item()
            # the divergence rule, before this step's update: a run that stops keeps its last good state
            why = watch.update(value)
            if world > 1:  # every process stops together (each sees its own batch)
                import torch.distributed as dist

                flag = torch.tensor([0.0 if why is None else 1.0], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                if flag.item() and why is None:
                    why = "another process's KD loss diverged or was not finite"
            if why is not None:
                raise _diverged(why, step + 1, total, config, path, saved_step)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)  # clip the true gradients
            else:
                loss.backward()
            if config.max_grad_norm:
                norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                if scaler is None and not math.isfinite(float(norm)):  # a scaler skips such steps itself
                    raise _diverged(f"the gradients are not finite (norm {float(norm)})", step + 1, total, config,
                                    path, saved_step)
            if scaler is not None:
                scaler.step(opt)  # skipped when the scaled gradients overflowed
                scaler.update()
            else:
                opt.step()
            sched.step()
            step += 1
            images += x.shape[0]
            losses.append(value)
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", ce=f"{ce.item():.3f}", mse=f"{float(mse.detach()):.4f}",
                            lr=f"{sched.get_last_lr()[0]:.2e}",
                            **{"img/s": f"{images / max(time.perf_counter() - t0, 1e-9):.0f}"})
            due = step % config.checkpoint_every == 0 and not watch.suspect  # never a suspect state as "last good"
            if path is not None and (due or step == total):
                saved_step = step
            if path is not None and rank == 0 and (due or step == total):
                _save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "step": step,
                                        "student": student.state_dict(), "optimizer": opt.state_dict(),
                                        "scheduler": sched.state_dict(), "losses": losses,
                                        "scaler": None if scaler is None else scaler.state_dict()})
            if step >= total:
                break
    finally:
        bar.close()
        for p in student.parameters():
            p.requires_grad_(flags.get(id(p), True))
        student.to(home).eval()
        teacher.to(home)
    return DistillResult(steps=total, world_size=world, seconds=time.perf_counter() - t0, start_step=start,
                         losses=losses, amp=amp, num_workers=workers)
