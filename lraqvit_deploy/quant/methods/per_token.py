"""Per-token activations (LRA-QViT §3.3: outliers concentrate on a few tokens after LRA), per-channel weights."""
from __future__ import annotations

from .._registry import register_quant_handler
from ..api import quantize_layers_
from ..configs import PerTokenConfig


@register_quant_handler(PerTokenConfig)
def _per_token_transform(model, config: PerTokenConfig, calib_images):
    return quantize_layers_(model, config, calib_images)
