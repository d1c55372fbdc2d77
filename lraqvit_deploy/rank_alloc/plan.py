"""A per-layer allocation (rank and/or weight bits) and how to apply it to a model.

Low-bit weights are quantized by `layers.fake_quant.quantize_rows` (per-row, MSE-clipped scales).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from ..lowrank.activation_svd import ActivationSVD
from ..lowrank.activations import LayerStats
from ..layers.fake_quant import quantize_rows
from ..layers.low_rank_linear import low_rank_params
from ..layers.quant_linear import QuantLinear
from ..layers.swap import replace_module


@dataclass(frozen=True)
class LayerChoice:
    """rank None = dense; w_bits for a dense layer, factor_bits = (up, down) bits for a low-rank one; None = float."""

    rank: Optional[int] = None
    w_bits: Optional[int] = None
    factor_bits: Optional[Tuple[int, int]] = None

    def weight_bits(self, in_f: int, out_f: int, scale_bits: int = 32) -> int:
        """Stored weight memory in bits: int weights plus one float scale per output row of each matrix."""
        if self.rank is None:
            b = self.w_bits or 32
            return in_f * out_f * b + (scale_bits * out_f if self.w_bits else 0)
        bu, bd = self.factor_bits or (32, 32)
        r = self.rank
        return (out_f * r * bu + r * in_f * bd
                + (scale_bits * (out_f + r) if self.factor_bits else 0))

    def params(self, in_f: int, out_f: int) -> int:
        return in_f * out_f if self.rank is None else low_rank_params(in_f, out_f, self.rank)

    def to_dict(self) -> dict:
        return asdict(self)


Plan = Dict[str, LayerChoice]


def ranks_of(plan: Mapping[str, LayerChoice]) -> Dict[str, Optional[int]]:
    """`{layer: rank or None}`: what a rank-only compressor (e.g. `compress_`) consumes."""
    return {n: c.rank for n, c in plan.items()}


def quantized_low_rank(asvd: ActivationSVD, rank: int, bits: Tuple[int, int],
                       second_moment: Optional[torch.Tensor] = None):
    """Quantized factors ((up, up_scale), (down, down_scale)).

    `down` is quantized first; `up` is then refitted by least squares to the quantized `down`
    under the activation weighting (Ŵ_up = W C Dᵀ (D C Dᵀ)⁻¹), so `up` absorbs `down`'s rounding.
    """
    up, down = asvd.factors(rank)
    dq, ds = quantize_rows(down, bits[1])
    if second_moment is not None:
        c = second_moment.double()
        d = dq.double()
        gram = d @ c @ d.T
        gram = gram + 1e-8 * gram.diagonal().mean().clamp_min(1e-30) * torch.eye(rank, dtype=gram.dtype)
        up = torch.linalg.solve(gram, d @ c @ asvd.weight.double().T).T.to(up.dtype)
    uq, us = quantize_rows(up, bits[0])
    return (uq, us), (dq, ds)


@torch.no_grad()
def build_layer(linear: nn.Linear, choice: LayerChoice, stats: Optional[LayerStats] = None,
                activation_aware: bool = True) -> nn.Module:
    """The module that replaces `linear` under `choice` (factors from the activation-aware SVD when stats are given)."""
    c = stats.second_moment if (stats is not None and activation_aware) else None
    bias = linear.bias.detach() if linear.bias is not None else None
    if choice.rank is None:
        if choice.w_bits is None:
            return linear
        wq, s = quantize_rows(linear.weight.detach(), choice.w_bits)
        return QuantLinear.weight_only(wq, s, bias, choice.w_bits)
    asvd = ActivationSVD(linear.weight, c)
    m = asvd.low_rank_linear(linear, choice.rank)
    if choice.factor_bits is not None:
        (uq, us), (dq, ds) = quantized_low_rank(asvd, choice.rank, choice.factor_bits, c)
        m.up = QuantLinear.weight_only(uq, us, bias, choice.factor_bits[0])
        m.down = QuantLinear.weight_only(dq, ds, None, choice.factor_bits[1])
    return m


def apply_plan_(model: nn.Module, plan: Mapping[str, LayerChoice], stats: Optional[Mapping[str, LayerStats]] = None,
                activation_aware: bool = True) -> nn.Module:
    """Replace every Linear named in `plan` in place; returns `model`."""
    for name, choice in plan.items():
        linear = model.get_submodule(name)
        replace_module(model, name, build_layer(linear, choice, (stats or {}).get(name), activation_aware))
    return model
