"""The block-level distillation loss (LRA-QViT §3.4, paper Eq. 9-10).

    L = α CE(student logits, y) + β Σ_l MSE(f_t^l(x_l), f_s^l(x_l))

f^l is the l-th encoder block and x_l its input (taken from the teacher by default); with
`feature_loss="nmse"` each block's MSE is divided by the mean square of its teacher output.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...calibration import module_hooks
from ...errors import DeployError
from ...vit_layout import encoder_blocks as _blocks
from ..configs import DistillConfig


def encoder_blocks(model: nn.Module) -> List[str]:
    """Names of the encoder blocks (`blocks.N` in ViT/DeiT/DINOv2, `layers.S.blocks.N` in Swin)."""
    names = list(_blocks(model))
    if not names:
        raise DeployError(f"{type(model).__name__} has no encoder blocks named blocks.N; block KD needs a timm ViT/Swin.")
    return names


@contextlib.contextmanager
def _capture(model: nn.Module, names: Sequence[str]) -> Iterator[Tuple[List, List]]:
    """Record each named block's input and output during forward passes inside the block."""
    inputs: List[torch.Tensor] = [None] * len(names)  # type: ignore[list-item]
    outputs: List[torch.Tensor] = [None] * len(names)  # type: ignore[list-item]
    index = {n: i for i, n in enumerate(names)}
    with module_hooks({n: model.get_submodule(n) for n in names},
                      pre=lambda n, _m, x: inputs.__setitem__(index[n], x),
                      post=lambda n, _m, _x, y: outputs.__setitem__(index[n], y)):
        yield inputs, outputs


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


def teacher_pass(teacher: nn.Module, names: Sequence[str], x: torch.Tensor):
    """(block inputs, block outputs) of `teacher` on `x`, without gradients."""
    with torch.no_grad(), _capture(teacher, names) as (ins, outs):
        teacher(x)
    return list(ins), list(outs)


def block_kd_loss(logits, s_outs, t_outs, y, config: DistillConfig) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, CE, summed block MSE) from the student's logits and block outputs and the teacher's block outputs."""
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
    t_in, t_out = teacher_pass(teacher.eval(), names, x)
    logits, s_out = BlockKDStudent(student, names, config.block_inputs)(x, t_in)
    loss, ce, mse = block_kd_loss(logits, s_out, t_out, y, config)
    return {"loss": loss.item(), "ce": ce.item(), "mse": float(mse)}
