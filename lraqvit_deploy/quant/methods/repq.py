"""RepQ-ViT's LayerNorm reparameterisation (Li et al., ICCV 2023), symmetric variant.

Post-LayerNorm activations vary wildly across channels, so RepQ-ViT calibrates them per channel
and then reparameterises those per-channel scales s_c into one per-tensor scale mean(s): the
LayerNorm affine is divided by r_c = s_c / mean(s) and the next Linear's columns multiplied by
it. After the fold every channel has the same range, so a per-tensor quantizer loses nothing
over per-channel. Our quantizers are symmetric (TensorRT needs zero point 0), so the zero-point
shift of the original is not needed. RepQ-ViT's log2 softmax quantizer does not apply: the
attention matmuls stay in float in this SDK (only Linear inputs are quantized).
"""
from __future__ import annotations

import torch

from .._registry import register_quant_handler
from ..api import quantize_layers_
from ..configs import RepQConfig


def repq_scales(act_absmax: torch.Tensor) -> torch.Tensor:
    """r_c = s_c / mean(s) with s_c proportional to the calibration max |X_c|."""
    s = act_absmax.float().clamp_min(1e-5)
    return s / s.mean()


@register_quant_handler(RepQConfig)
def _repq_transform(model, config: RepQConfig, calib_images):
    return quantize_layers_(model, config, calib_images,
                            select=lambda targets: [t for t in targets if t.site.kind == "layernorm"],
                            scale=lambda t, stats: repq_scales(stats.channel_absmax))
