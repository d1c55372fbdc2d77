"""Calibration: run the FP32 model on the calibration images and record each target's input.

Per target we keep the statistics every scheme needs (max |x| per tensor, per token position and
per channel) and, when asked, the inputs themselves (for the WADS/QADS alpha search).
Inputs are viewed as (batch, tokens, channels); for Swin's (B, H, W, C) the tokens are H*W.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

import torch
import torch.nn as nn

from ..calibration import calibrate
from ..errors import DeployError
from .fold import Target


@dataclass
class InputStats:
    """Max |x| of one Linear's input over the calibration set."""

    tensor_absmax: torch.Tensor  # ()
    token_absmax: torch.Tensor  # (T,)
    channel_absmax: torch.Tensor  # (C,)
    inputs: Optional[torch.Tensor] = None  # (N, T, C) when kept

    def update(self, x: torch.Tensor, keep: bool) -> None:
        a = x.abs()
        self.tensor_absmax = torch.maximum(self.tensor_absmax, a.amax())
        tok = a.amax(dim=(0, 2))
        if tok.shape != self.token_absmax.shape:
            raise DeployError("calibration inputs changed their token count between batches; calibrate with "
                              "images of one size.")
        self.token_absmax = torch.maximum(self.token_absmax, tok)
        self.channel_absmax = torch.maximum(self.channel_absmax, a.amax(dim=(0, 1)))
        if keep:
            self.inputs = x if self.inputs is None else torch.cat([self.inputs, x])


def collect_stats(model: nn.Module, targets: List[Target], images: torch.Tensor, batch_size: int = 32,
                  keep_inputs: Iterable[str] = (), input_scales: Optional[Dict[str, torch.Tensor]] = None,
                  progress: bool = False, desc: str = "calibrate") -> Dict[str, InputStats]:
    """Statistics of every target's input (divided by `input_scales[name]` where given)."""
    if images.ndim != 4 or len(images) == 0:
        raise DeployError(f"calibration images must be a non-empty (N, 3, H, W) tensor, got {tuple(images.shape)}.")
    keep, input_scales = set(keep_inputs), input_scales or {}
    stats: Dict[str, InputStats] = {}

    def record(name: str, _mod: nn.Module, x: torch.Tensor) -> None:
        x = x.detach().float()
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        if name in input_scales:
            x = x / input_scales[name]
        if name not in stats:
            z = x.new_zeros
            stats[name] = InputStats(z(()), z(x.shape[1]), z(x.shape[2]))
        stats[name].update(x, name in keep)

    calibrate(model, images, {t.name: t.linear for t in targets}, pre=record, batch_size=batch_size,
              progress=progress, desc=desc)
    missing = [t.name for t in targets if t.name not in stats]
    if missing:
        raise DeployError(f"calibration never reached {missing[:3]}...; is the model's forward using these layers?")
    return stats


@dataclass
class CalibrationSummary:
    """What `quantize_` did and how long it took (for reports)."""

    method: str
    act_scheme: str
    n_images: int
    n_layers: int
    scaled_layers: List[str] = field(default_factory=list)
    explicit_scale_layers: List[str] = field(default_factory=list)
    calib_seconds: float = 0.0
    search_seconds: float = 0.0
