"""A per-layer allocation (rank and/or weight bits) and how to apply it to a model.

Low-bit weights are quantized with MSE-clipped scales per row, or per block of `group` input
columns (`layers.fake_quant.quantize_weight`). For a deployment target (`target="android"` or
"jetson") every quantized matrix becomes a `QuantLinear` with int8 dynamic per-token activations
(the form XNNPACK runs; the Jetson build re-calibrates them per tensor), never float activations.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from ..lowrank.activation_svd import ActivationSVD
from ..lowrank.activations import LayerStats
from ..layers.fake_quant import quantize_weight
from ..layers.low_rank_linear import low_rank_params
from ..layers.quant_linear import QuantLinear
from ..layers.swap import replace_module


@dataclass(frozen=True)
class LayerChoice:
    """rank None = dense; w_bits for a dense layer, factor_bits = (up, down) bits for a low-rank one; None = float.

    `group` / `factor_groups`: blockwise weights, one scale per `group` input columns (None: per row).
    """

    rank: Optional[int] = None
    w_bits: Optional[int] = None
    factor_bits: Optional[Tuple[int, int]] = None
    group: Optional[int] = None
    factor_groups: Optional[Tuple[Optional[int], Optional[int]]] = None

    def forms(self, in_f: int, out_f: int):
        """[(WeightForm or None for float, out, in)] of the matrices this choice stores."""
        from ..quant.forms import WeightForm

        if self.rank is None:
            return [(None if self.w_bits is None else WeightForm(self.w_bits, self.group), out_f, in_f)]
        gu, gd = self.factor_groups or (None, None)
        if self.factor_bits is None:
            return [(None, out_f, self.rank), (None, self.rank, in_f)]
        return [(WeightForm(self.factor_bits[0], gu), out_f, self.rank),
                (WeightForm(self.factor_bits[1], gd), self.rank, in_f)]

    def weight_bits(self, in_f: int, out_f: int, scale_bits: int = 32) -> int:
        """Stored weight memory in bits: int weights plus their scales (float32 per row, bfloat16 per block)."""
        total = 0.0
        for form, o, i in self.forms(in_f, out_f):
            if form is None:
                total += 32 * o * i
            elif form.group is None:
                total += o * i * form.bits + scale_bits * o
            else:
                total += 8 * form.matrix_bytes(o, i)
        return int(total)

    def program_bytes(self, in_f: int, out_f: int) -> float:
        """Bytes of this layer's weights in a built program, with the per-matrix structure (`quant.forms`)."""
        from ..quant.forms import OP_OVERHEAD_BYTES, quantized_bytes

        mats = self.forms(in_f, out_f)
        quant = [(f, o, i) for f, o, i in mats if f is not None]
        extra_op = OP_OVERHEAD_BYTES if self.rank is not None else 0  # a factorised layer is one more operator
        return sum(4 * o * i for f, o, i in mats if f is None) + quantized_bytes(quant) + extra_op

    @property
    def label(self) -> str:
        """`fp32`, `w4g32`, or `r48:w8/w4` (rank, up form / down form)."""
        def name(form):
            return "fp32" if form is None else form.name
        mats = self.forms(1 << 20, 1 << 20)
        if self.rank is None:
            return name(mats[0][0])
        return f"r{self.rank}:{name(mats[0][0])}/{name(mats[1][0])}"

    def params(self, in_f: int, out_f: int) -> int:
        return in_f * out_f if self.rank is None else low_rank_params(in_f, out_f, self.rank)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("group", "factor_groups"):  # absent unless set: manifests of earlier plans keep their keys
            if d[k] is None:
                del d[k]
        return d


Plan = Dict[str, LayerChoice]


def ranks_of(plan: Mapping[str, LayerChoice]) -> Dict[str, Optional[int]]:
    """`{layer: rank or None}`: what a rank-only compressor (e.g. `compress_`) consumes."""
    return {n: c.rank for n, c in plan.items()}


def refit_up(weight: torch.Tensor, down_q: torch.Tensor, second_moment: torch.Tensor) -> torch.Tensor:
    """The `up` (out, r) minimising E‖X(W − U D)ᵀ‖² for a fixed (quantized) `down` D: W C Dᵀ (D C Dᵀ)⁻¹."""
    c = second_moment.double().to(down_q.device)
    d = down_q.double()
    gram = d @ c @ d.T
    gram = gram + 1e-8 * gram.diagonal().mean().clamp_min(1e-30) * torch.eye(len(d), dtype=gram.dtype)
    return torch.linalg.solve(gram, d @ c @ weight.double().T).T.float()


def quantized_low_rank(asvd: ActivationSVD, rank: int, bits: Tuple[int, int],
                       second_moment: Optional[torch.Tensor] = None,
                       groups: Optional[Tuple[Optional[int], Optional[int]]] = None):
    """Quantized factors ((up, up_scale), (down, down_scale)).

    `down` is quantized first; `up` is then refitted by least squares to the quantized `down`
    under the activation weighting (Ŵ_up = W C Dᵀ (D C Dᵀ)⁻¹), so `up` absorbs `down`'s rounding.
    """
    gu, gd = groups or (None, None)
    up, down = asvd.factors(rank)
    dq, ds = quantize_weight(down, bits[1], gd, grid=CLIP_GRID)
    if second_moment is not None:
        up = refit_up(asvd.weight, dq, second_moment).to(up.dtype)
    uq, us = quantize_weight(up, bits[0], gu, grid=CLIP_GRID)
    return (uq, us), (dq, ds)


CLIP_GRID = 8  # clip ratios tried per row / block (MSE-clipped scales): what the candidates were scored with

TARGET_ACT = {"android": ("per_token_dynamic", False), "jetson": ("per_token_dynamic", True)}


def _quant(weight, scale, bias, bits, group, target):
    if target is None or target == "sim":
        return QuantLinear.from_weight(weight, scale, bias, bits, group)
    scheme, symmetric = TARGET_ACT[target]
    return QuantLinear.from_weight(weight, scale, bias, bits, group, act_scheme=scheme, act_symmetric=symmetric)


@torch.no_grad()
def build_layer(linear: nn.Linear, choice: LayerChoice, stats: Optional[LayerStats] = None,
                activation_aware: bool = True, target: Optional[str] = None, quantize: bool = True) -> nn.Module:
    """The module that replaces `linear` under `choice` (factors from the activation-aware SVD when stats are given).

    `target` ("android" / "jetson"): quantized matrices get int8 dynamic per-token activations (the
    deployable form); None: weight-only (float activations, a simulation). `quantize=False` builds
    only the rank (float factors, e.g. to distil them before `quantize_plan_`).
    """
    c = stats.second_moment if (stats is not None and activation_aware) else None
    bias = linear.bias.detach() if linear.bias is not None else None
    if choice.rank is None:
        if choice.w_bits is None or not quantize:
            return linear
        wq, s = quantize_weight(linear.weight.detach(), choice.w_bits, choice.group, grid=CLIP_GRID)
        return _quant(wq, s, bias, choice.w_bits, choice.group, target)
    asvd = ActivationSVD(linear.weight, c)
    m = asvd.low_rank_linear(linear, choice.rank)
    if choice.factor_bits is not None and quantize:
        gu, gd = choice.factor_groups or (None, None)
        (uq, us), (dq, ds) = quantized_low_rank(asvd, choice.rank, choice.factor_bits, c, (gu, gd))
        m.up = _quant(uq, us, bias, choice.factor_bits[0], gu, target)
        m.down = _quant(dq, ds, None, choice.factor_bits[1], gd, target)
    return m


def apply_plan_(model: nn.Module, plan: Mapping[str, LayerChoice], stats: Optional[Mapping[str, LayerStats]] = None,
                activation_aware: bool = True, target: Optional[str] = None, quantize: bool = True) -> nn.Module:
    """Replace every Linear named in `plan` in place; returns `model`."""
    for name, choice in plan.items():
        linear = model.get_submodule(name)
        replace_module(model, name, build_layer(linear, choice, (stats or {}).get(name), activation_aware, target,
                                                quantize))
    return model


@torch.no_grad()
def quantize_plan_(model: nn.Module, plan: Mapping[str, LayerChoice], target: Optional[str] = None,
                   stats: Optional[Mapping[str, LayerStats]] = None) -> nn.Module:
    """Quantize, in place, the float layers `apply_plan_(..., quantize=False)` built (after distillation).

    A low-rank layer's `down` is quantized first and, when `stats` are given, its `up` refitted to
    the quantized `down` under the activation weighting of the ORIGINAL layer's input, then quantized.
    """
    for name, choice in plan.items():
        mod = model.get_submodule(name)
        if choice.rank is None:
            if choice.w_bits is not None:
                wq, s = quantize_weight(mod.weight.detach(), choice.w_bits, choice.group, grid=CLIP_GRID)
                bias = mod.bias.detach() if mod.bias is not None else None
                replace_module(model, name, _quant(wq, s, bias, choice.w_bits, choice.group, target))
            continue
        if choice.factor_bits is None:
            continue
        gu, gd = choice.factor_groups or (None, None)
        up, down = mod.up.weight.detach().float(), mod.down.weight.detach().float()
        dq, ds = quantize_weight(down, choice.factor_bits[1], gd, grid=CLIP_GRID)
        if stats is not None and name in stats:
            up = refit_up(up @ down, dq, stats[name].second_moment)
        uq, us = quantize_weight(up, choice.factor_bits[0], gu, grid=CLIP_GRID)
        bias = mod.up.bias.detach() if mod.up.bias is not None else None
        mod.up = _quant(uq, us, bias, choice.factor_bits[0], gu, target)
        mod.down = _quant(dq, ds, None, choice.factor_bits[1], gd, target)
    return model
