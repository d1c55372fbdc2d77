"""The SDK's own nn.Modules (low-rank, compensated and fake-quant Linears), registered for artifact reloads."""
from ._registry import get_builder, register_module_type
from .compensated_linear import CompensatedLinear, compensation_rank
from .fake_quant import (clip_scale, fake_quant_per_token_dynamic, fake_quant_symmetric, per_channel_weight_scale,
                         quantize_rows)
from .low_rank_linear import LowRankLinear, break_even_rank, low_rank_params, saves_parameters, svd_factors
from .quant_linear import ACT_SCHEMES, QuantLinear
from .rb_lra import RBLRALinear
from .swap import replace_module

__all__ = ["get_builder", "register_module_type", "CompensatedLinear", "compensation_rank", "clip_scale",
           "fake_quant_per_token_dynamic", "fake_quant_symmetric", "per_channel_weight_scale", "quantize_rows",
           "LowRankLinear", "break_even_rank", "low_rank_params", "saves_parameters", "svd_factors", "ACT_SCHEMES",
           "QuantLinear", "RBLRALinear", "replace_module"]
