"""`compress_(model, config)`: in-place compression, dispatched on the config's type (torchao style).

    >>> ranks = compress_(model, LowRankConfig(method="rb-lra", param_reduction=0.45))
    >>> distill_(model, teacher, train_ds, DistillConfig(steps=120))   # optional, see distill.py
    >>> merge_(model)                                                  # RB-LRA branch -> LowRankLinear
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Type

import torch
import torch.nn as nn

from ..errors import DeployError
from ..layers import LowRankLinear, RBLRALinear, replace_module
from .activation_svd import ActivationSVD
from .activations import collect_stats
from .configs import LowRankConfig
from .svd import plan_ranks

_HANDLERS: Dict[Type, Callable] = {}


def register_compress_handler(config_type: Type) -> Callable:
    """Register `fn(model, config)` as the transform for `config_type`."""

    def deco(fn: Callable) -> Callable:
        _HANDLERS[config_type] = fn
        return fn

    return deco


def compress_(model: nn.Module, config, calib_images: Optional[torch.Tensor] = None) -> Dict[str, int]:
    """Compress `model` in place as `config` says; returns {layer name: rank} of the replaced layers.

    `calib_images` (N, 3, H, W) are needed by activation-aware SVD (`LowRankConfig(svd="activation")`).
    """
    try:
        handler = _HANDLERS[type(config)]
    except KeyError:
        raise DeployError(f"no compression handler for {type(config).__name__}; "
                          f"known configs: {[t.__name__ for t in _HANDLERS]}.") from None
    return handler(model, config, calib_images)


@register_compress_handler(LowRankConfig)
def _low_rank_transform(model: nn.Module, config: LowRankConfig,
                        calib_images: Optional[torch.Tensor] = None) -> Dict[str, int]:
    ranks = plan_ranks(model, config)
    gen = torch.Generator().manual_seed(config.seed)
    aware = config.svd == "activation" or (config.svd == "auto" and calib_images is not None)
    stats = _activation_stats(model, ranks, calib_images) if aware else {}
    for name, rank in ranks.items():
        linear = model.get_submodule(name)
        asvd = None
        if name in stats:
            asvd = ActivationSVD(linear.weight, stats[name].second_moment)
        if config.method == "lra":
            new = LowRankLinear.from_linear(linear, rank) if asvd is None else asvd.low_rank_linear(linear, rank)
        else:
            svd = None if asvd is None else (asvd.u, asvd.s, asvd.vh, asvd.l_inv)
            new = RBLRALinear.from_linear(linear, rank, config.init, config.train_base, config.init_std, gen, svd=svd)
        replace_module(model, name, new)
    return ranks


def _activation_stats(model: nn.Module, ranks: Dict[str, int], calib_images: Optional[torch.Tensor]):
    """Second moments E[xxᵀ] of each layer's input, for the whitened (activation-aware) SVD."""
    if calib_images is None:
        raise DeployError("activation-aware SVD (--svd activation) needs calibration images.")
    return collect_stats(model, calib_images, list(ranks), progress=False)


def merge_(model: nn.Module) -> int:
    """Fold every RB-LRA branch into a plain `LowRankLinear`; returns how many layers were merged."""
    names = [n for n, m in model.named_modules() if isinstance(m, RBLRALinear)]
    for name in names:
        replace_module(model, name, model.get_submodule(name).merge())
    return len(names)


def low_rank_ranks(model: nn.Module) -> Dict[str, int]:
    """{name: rank} of the low-rank layers (LRA or RB-LRA) currently in `model`."""
    return {n: m.rank for n, m in model.named_modules() if isinstance(m, (LowRankLinear, RBLRALinear))}
