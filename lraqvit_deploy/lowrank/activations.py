"""Calibration statistics of the encoder Linears: input second moments XᵀX, gathered by forward hooks.

The activation-aware SVD, error compensation and every rank allocator score a candidate weight Ŵ
by the error it makes on the layer's real inputs, E‖X(W − Ŵ)ᵀ‖², which only needs the (in, in)
matrix XᵀX, not the activations themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Optional

import torch
import torch.nn as nn

from ..calibration import calibrate
from ..errors import DeployError
from ..vit_layout import encoder_linears


@dataclass
class LayerStats:
    """Sum of xxᵀ over every token the layer saw (float64), and how many tokens that was."""

    xtx: torch.Tensor  # (in, in)
    n_tokens: int

    @property
    def second_moment(self) -> torch.Tensor:
        """E[x xᵀ] over tokens (in, in), float64."""
        return self.xtx / max(self.n_tokens, 1)


def collect_stats(model: nn.Module, images: torch.Tensor, names: Optional[Iterable[str]] = None,
                  batch_size: int = 32, progress: bool = True) -> Dict[str, LayerStats]:
    """Run `images` (N, 3, H, W) through `model` and accumulate XᵀX at the input of each named Linear
    (default: every dense encoder Linear, `vit_layout.encoder_linears`)."""
    names = list(names) if names is not None else list(encoder_linears(model))
    if not names:
        raise DeployError(f"{type(model).__name__} has no Linear inside encoder blocks; is it a timm ViT/DeiT/Swin?")
    modules = dict(model.named_modules())
    for n in names:
        if n not in modules:
            raise DeployError(f"no module named {n!r} in the model.")
    stats: Dict[str, LayerStats] = {}

    def accumulate(name: str, mod: nn.Module, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, mod.in_features).double()
        st = stats.get(name)
        if st is None:
            stats[name] = LayerStats(x.T @ x, x.shape[0])
        else:
            st.xtx.addmm_(x.T, x)
            st.n_tokens += x.shape[0]

    calibrate(model, images, {n: modules[n] for n in names}, pre=accumulate, batch_size=batch_size,
              progress=progress, desc="calibration statistics")
    return stats
