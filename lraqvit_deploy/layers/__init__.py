"""The SDK's own nn.Modules (low-rank and fake-quant Linears), registered for artifact reloads."""
from ._registry import get_builder, register_module_type
from .low_rank_linear import LowRankLinear, saves_parameters, svd_factors
from .quant_linear import ACT_SCHEMES, QuantLinear
from .rb_lra import RBLRALinear

__all__ = ["get_builder", "register_module_type", "LowRankLinear", "saves_parameters", "svd_factors", "ACT_SCHEMES", "QuantLinear",
           "RBLRALinear"]
