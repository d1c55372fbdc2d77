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


def repq_scales(act_absmax: torch.Tensor) -> torch.Tensor:
    """r_c = s_c / mean(s) with s_c proportional to the calibration max |X_c|."""
    s = act_absmax.float().clamp_min(1e-5)
    return s / s.mean()
