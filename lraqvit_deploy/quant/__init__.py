"""INT8 post-training quantization: per-token activations + WADS (LRA-QViT §3.3) and the paper's baselines.

`quantize_(model, QuantConfig(method=...), calib_images)` swaps every encoder-block Linear for a
calibrated `QuantLinear` (see docs/quantization.md for the artifact contract the backends lower).
"""
from .api import float_copy, quantize_, quantized_size_mb
from .calibrate import CalibrationSummary
from .configs import DEFAULT_ACT_SCHEME, METHODS, QuantConfig
from .fold import FoldSite, Target, find_targets, fold_scale

__all__ = ["float_copy", "quantize_", "quantized_size_mb", "CalibrationSummary", "DEFAULT_ACT_SCHEME", "METHODS", "QuantConfig",
           "FoldSite", "Target", "find_targets", "fold_scale"]
