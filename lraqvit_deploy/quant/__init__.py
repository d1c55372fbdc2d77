"""INT8 post-training quantization: per-token activations + WADS (LRA-QViT §3.3) and the paper's baselines.

`quantize_(model, quant_config("wads"), calib_images)` swaps every encoder-block Linear for a
calibrated `QuantLinear` (see docs/quantization.md for the artifact contract the backends lower).
Each method is a config class (`WADSConfig`, ...) with a handler in `quant/methods/`, registered
by `register_quant_handler` and chosen by the config's type.
"""
from . import methods  # noqa: F401  registers the handlers
from ._registry import register_quant_handler
from .api import float_copy, quantize_, quantize_layers_
from .forms import quantized_size_mb
from .calibrate import CalibrationSummary
from .configs import (DEFAULT_ACT_SCHEME, METHODS, QUANT_METHODS, AlphaSearchConfig, BaseQuantConfig, NaiveConfig,
                      PerTokenConfig, QADSConfig, QuantConfig, RepQConfig, SmoothQuantConfig, WADSConfig, quant_config)
from .fold import FoldSite, Target, find_targets, fold_scale

__all__ = ["float_copy", "quantize_", "quantize_layers_", "quantized_size_mb", "register_quant_handler",
           "CalibrationSummary", "DEFAULT_ACT_SCHEME", "METHODS", "QUANT_METHODS", "BaseQuantConfig", "NaiveConfig",
           "PerTokenConfig", "QADSConfig", "RepQConfig", "SmoothQuantConfig", "WADSConfig", "AlphaSearchConfig",
           "QuantConfig", "quant_config", "FoldSite", "Target", "find_targets", "fold_scale"]
