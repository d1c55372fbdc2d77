"""A per-layer allocation (rank and/or weight bits) and how to apply it to a model."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from ..layers.quant_linear import QuantLinear, fake_quant_symmetric
from .activation_svd import ActivationSVD
from .activations import LayerStats


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
        return in_f * out_f if self.rank is None else self.rank * (in_f + out_f)

    def to_dict(self) -> dict:
        return asdict(self)


Plan = Dict[str, LayerChoice]


def ranks_of(plan: Mapping[str, LayerChoice]) -> Dict[str, Optional[int]]:
    """`{layer: rank or None}`: what a rank-only compressor (e.g. `compress_`) consumes."""
    return {n: c.rank for n, c in plan.items()}


def clip_scale(w: torch.Tensor, bits: int, grid: int = 12, min_ratio: float = 0.45) -> torch.Tensor:
    """Per-row symmetric scale, the clip ratio of max|w| chosen per row to minimise the rounding MSE."""
    qmax = 2 ** (bits - 1) - 1
    amax = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-8)
    best_err, best_s = None, None
    for ratio in torch.linspace(1.0, min_ratio, grid).tolist():
        s = amax * ratio / qmax
        err = (fake_quant_symmetric(w, s, bits) - w).pow(2).sum(dim=1, keepdim=True)
        if best_err is None:
            best_err, best_s = err, s
        else:
            better = err < best_err
            best_err, best_s = torch.where(better, err, best_err), torch.where(better, s, best_s)
    return best_s[:, 0]


def quantize_rows(w: torch.Tensor, bits: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(dequantized weight, per-row scale) at `bits`, symmetric, MSE-clipped per row."""
    s = clip_scale(w.float(), bits)
    return fake_quant_symmetric(w.float(), s[:, None], bits).to(w.dtype), s


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


def _quant_linear(weight: torch.Tensor, scale: torch.Tensor, bias: Optional[torch.Tensor], bits: int) -> QuantLinear:
    q = QuantLinear(weight.shape[1], weight.shape[0], bias is not None, act_scheme="none", w_bits=bits)
    with torch.no_grad():
        q.linear.weight.copy_(weight)
        if bias is not None:
            q.linear.bias.copy_(bias)
    q.w_scale = scale.to(weight.dtype).clone()
    return q


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
        return _quant_linear(wq, s, bias, choice.w_bits)
    asvd = ActivationSVD(linear.weight, c)
    m = asvd.low_rank_linear(linear, choice.rank)
    if choice.factor_bits is not None:
        (uq, us), (dq, ds) = quantized_low_rank(asvd, choice.rank, choice.factor_bits, c)
        m.up = _quant_linear(uq, us, bias, choice.factor_bits[0])
        m.down = _quant_linear(dq, ds, None, choice.factor_bits[1])
    return m


def apply_plan_(model: nn.Module, plan: Mapping[str, LayerChoice], stats: Optional[Mapping[str, LayerStats]] = None,
                activation_aware: bool = True) -> nn.Module:
    """Replace every Linear named in `plan` in place; returns `model`."""
    for name, choice in plan.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        linear = getattr(parent, child)
        setattr(parent, child, build_layer(linear, choice, (stats or {}).get(name), activation_aware))
    return model
