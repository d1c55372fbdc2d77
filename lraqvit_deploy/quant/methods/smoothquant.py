"""SmoothQuant channel scales (Xiao et al., 2023): alpha_j = max|X_j|^m / max|W_:,j|^(1-m).

Dividing the input by alpha and multiplying W's columns by it moves part of each channel's
activation range into the weights; m = 0.5 splits the difficulty evenly.
"""
from __future__ import annotations

import torch

from .._registry import register_quant_handler
from ..api import quantize_layers_, scalable
from ..configs import SmoothQuantConfig


def smooth_scales(act_absmax: torch.Tensor, weight: torch.Tensor, migration: float = 0.5) -> torch.Tensor:
    """Per input channel alpha (in,) from the calibration max |X| per channel and the weight."""
    w_absmax = weight.detach().float().abs().amax(dim=0).clamp_min(1e-5)
    a = act_absmax.float().clamp_min(1e-5)
    return (a.pow(migration) / w_absmax.pow(1.0 - migration)).clamp_min(1e-5)


@register_quant_handler(SmoothQuantConfig)
def _smoothquant_transform(model, config: SmoothQuantConfig, calib_images):
    return quantize_layers_(model, config, calib_images,
                            select=lambda targets: [t for t in targets if scalable(t, config.fc2)],
                            scale=lambda t, stats: smooth_scales(stats.channel_absmax, t.linear.weight,
                                                                 config.migration))
