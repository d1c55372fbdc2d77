"""The SDK's own nn.Modules (low-rank and fake-quant Linears), registered for artifact reloads."""
from ._registry import get_builder, register_module_type

__all__ = ["get_builder", "register_module_type"]
