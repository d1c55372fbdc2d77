"""NaivePTQ (the baseline of LRA-QViT Table 2): per-channel weights, per-tensor static activations."""
from __future__ import annotations

from .._registry import register_quant_handler
from ..api import quantize_layers_
from ..configs import NaiveConfig


@register_quant_handler(NaiveConfig)
def _naive_transform(model, config: NaiveConfig, calib_images):
    return quantize_layers_(model, config, calib_images)
