"""Registry of quantization handlers keyed by config type (torchao's `register_quantize_module_handler`)."""
from __future__ import annotations

from typing import Callable, Dict, Type

from ..errors import DeployError

Handler = Callable  # (model, config, calib_images) -> CalibrationSummary
_HANDLERS: Dict[Type, Handler] = {}


def register_quant_handler(config_type: Type) -> Callable[[Handler], Handler]:
    """Register `fn(model, config, calib_images) -> CalibrationSummary` as the transform for `config_type`."""

    def deco(fn: Handler) -> Handler:
        if _HANDLERS.get(config_type, fn) is not fn:
            raise ValueError(f"a quantization handler for {config_type.__name__} is already registered")
        _HANDLERS[config_type] = fn
        return fn

    return deco


def quant_handler(config) -> Handler:
    """The handler registered for `type(config)`."""
    try:
        return _HANDLERS[type(config)]
    except KeyError:
        raise DeployError(f"no quantization handler for {type(config).__name__}; build configs with "
                          f"quant_config(name) (known: {sorted(t.__name__ for t in _HANDLERS)}).") from None
