"""Lower the simulator's `QuantLinear` to the graph patterns XNNPACK runs as dynamically quantized GEMMs.

* 8-bit weights: qd8 x qc8w (`XnnpackDynamicQuantLinear`, quantized_decomposed ops).
* 4-bit weights per output channel: qd8 x qc4w, the same pattern with the int4 range [-8, 7] (the
  partitioner's `is_qc4w`; float32 scales).
* 4-bit blockwise weights: qd8 x qb4w (bfloat16 group scales) (`XnnpackInt4DynamicQuantLinear`): the
  weight is torchao's `IntxUnpackedToInt8Tensor` built from the artifact's integers and scales with
  int8 asymmetric per-token activations - the documented ExecuTorch route (torchao
  `Int8DynamicActivationIntxWeightConfig(weight_granularity=PerGroup(g))`) without re-quantizing.
  (Its PerAxis form is a single block of bfloat16 scales needing in % 32 == 0; the qc4w pattern
  above keeps float32 scales and any even width.) XNNPACK packs 4-bit integers two per byte.

`xnnpack_form_problems(model)` lists the layers XNNPACK cannot run as they are (checked before any
lowering): float activations, bit-widths other than 8 and 4, blockwise 8-bit, a group size that is
not a multiple of 32 or does not divide the layer's inputs, 4-bit with an odd number of inputs.

The replacement keeps the artifact's numbers: the int8 weight is `round(W / w_scale)` with the
artifact's `w_scale` (no recomputation), and the activation goes through the dynamic per-token
quant/dequant ops that XNNPACK's partitioner folds into its dynamically quantized Linear.

What XNNPACK executes: each activation row is quantized at run time with its own scale and zero
point (asymmetric, int8); weights are symmetric per output channel. A simulator built with
`act_symmetric=False` computes exactly this; with `act_symmetric=True` the two differ by the
rounding of one int8 step per row (measured as prediction agreement in `verify`).
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

from lraqvit_deploy.errors import DeployError


class XnnpackDynamicQuantLinear(nn.Module):
    """y = linear(dq(q_token(x)), dq_channel(W_int, w_scale), b): XNNPACK's qd8 x qc8w (or qc4w, range [-8, 7])."""

    def __init__(self, w_int8: torch.Tensor, w_scale: torch.Tensor, bias, qmin: int, qmax: int,
                 input_scale: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("w_int8", w_int8)
        self.register_buffer("w_scale", w_scale)
        self.register_buffer("w_zero_point", torch.zeros_like(w_scale, dtype=torch.int64))
        self.register_buffer("input_scale", input_scale if input_scale is not None else torch.ones(0))
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.qmin, self.qmax = qmin, qmax

    @classmethod
    def from_quant_linear(cls, q) -> "XnnpackDynamicQuantLinear":
        if q.act_scheme != "per_token_dynamic":
            raise DeployError(
                f"the Android (XNNPACK) path runs dynamic per-token activations only; this model has a "
                f"QuantLinear with act_scheme={q.act_scheme!r}. Quantize with act_scheme='per_token_dynamic'.")
        if q.w_bits not in (8, 4) or q.a_bits != 8 or q.w_group_size is not None:
            raise DeployError(f"this lowering runs per-channel int8/int4 weights with int8 activations; got "
                              f"w{q.w_bits}a{q.a_bits}" + (f" in groups of {q.w_group_size}" if q.w_group_size else "")
                              + ".")
        scale = q.w_scale.detach().float().clone()
        if not torch.all(scale > 0) or not torch.all(torch.isfinite(scale)):
            raise DeployError("a QuantLinear has a non-positive or non-finite w_scale; the artifact is corrupt.")
        qmax = 2 ** (q.w_bits - 1) - 1
        qmin = -qmax - 1  # the simulator's clamp range (fake_quant_symmetric)
        w = torch.clamp(torch.round(q.linear.weight.detach().float() / scale[:, None]), qmin, qmax).to(torch.int8)
        bias = None if q.linear.bias is None else q.linear.bias.detach().float().clone()
        inp = q.input_scale.detach().float().clone() if q.input_scale.numel() else None
        return cls(w, scale, bias, qmin, qmax, inp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qd = torch.ops.quantized_decomposed
        if self.input_scale.numel():
            x = x / self.input_scale
        scale, zero = qd.choose_qparams_per_token_asymmetric(x, torch.int8)
        xq = qd.quantize_per_token(x, scale, zero, -128, 127, torch.int8)
        x = qd.dequantize_per_token(xq, scale, zero, -128, 127, torch.int8, torch.float32)
        w = qd.dequantize_per_channel(self.w_int8, self.w_scale, self.w_zero_point, 0, self.qmin, self.qmax,
                                      torch.int8)
        return F.linear(x, w, self.bias)


class XnnpackInt4DynamicQuantLinear(nn.Module):
    """y = linear(dq(q_token_asym(x)), dq(W_int4, scale per channel or per block), b): XNNPACK's qd8 x qc4w/qb4w."""

    def __init__(self, w_int: torch.Tensor, scale: torch.Tensor, bias, input_scale: torch.Tensor | None = None):
        super().__init__()
        from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
            IntxUnpackedToInt8Tensor, IntxUnpackedToInt8TensorActivationQuantization)

        out_f, in_f = w_int.shape
        scale2d = scale[:, None] if scale.dim() == 1 else scale
        group = in_f // scale2d.shape[1]
        weight = IntxUnpackedToInt8Tensor(w_int, scale2d.float().contiguous(), torch.zeros_like(scale2d, dtype=torch.int8),
                                          torch.int4, (1, group), torch.float32,
                                          IntxUnpackedToInt8TensorActivationQuantization.INT8_ASYM_PER_TOKEN)
        self.linear = nn.Linear(in_f, out_f, bias is not None)
        self.linear.weight = nn.Parameter(weight, requires_grad=False)
        if bias is not None:
            self.linear.bias = nn.Parameter(bias, requires_grad=False)
        self.register_buffer("input_scale", input_scale if input_scale is not None else torch.ones(0))

    @classmethod
    def from_quant_linear(cls, q) -> "XnnpackInt4DynamicQuantLinear":
        from lraqvit_deploy.layers.fake_quant import expand_scale

        scale = q.w_scale.detach().float().clone()
        w = torch.clamp(torch.round(q.linear.weight.detach().float() / expand_scale(scale, q.in_features)), -8, 7)
        bias = None if q.linear.bias is None else q.linear.bias.detach().float().clone()
        inp = q.input_scale.detach().float().clone() if q.input_scale.numel() else None
        return cls(w.to(torch.int8), scale, bias, inp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale.numel():
            x = x / self.input_scale
        return self.linear(x)


def xnnpack_form_problem(q) -> str | None:
    """Why XNNPACK cannot run this QuantLinear as it is (None: it can); the rules live in `quant.forms`."""
    from lraqvit_deploy.quant.forms import WeightForm, form_problem

    why = form_problem("android", WeightForm(q.w_bits, q.w_group_size), q.in_features, q.act_scheme, q.a_bits)
    if why:
        return why
    scale = q.w_scale.detach()
    if not torch.all(torch.isfinite(scale)) or not torch.all(scale > 0):
        return "a non-positive or non-finite weight scale (the artifact is corrupt)"
    return None


def xnnpack_form_problems(model: nn.Module) -> Dict[str, str]:
    """`{layer: why}` for every QuantLinear XNNPACK cannot run as it is (empty: all lower)."""
    from lraqvit_deploy.layers.quant_linear import QuantLinear

    return {n: why for n, m in model.named_modules() if isinstance(m, QuantLinear)
            for why in [xnnpack_form_problem(m)] if why}


def check_xnnpack_forms(model: nn.Module) -> None:
    """One line naming the first layer XNNPACK cannot run (and how many more), before any work."""
    from lraqvit_deploy.quant.forms import refuse_problems

    refuse_problems(xnnpack_form_problems(model), "Android (XNNPACK)",
                    "Quantize for XNNPACK (8- or 4-bit weights, per channel or blockwise in groups of 32/64/128, "
                    "dynamic per-token activations), e.g. `deploy compress --size-budget-mb MB --target android`.")


def _ensure_quant_ops() -> None:
    """`torch.ops.quantized_decomposed` is registered by torchao's pt2e package."""
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401


def lower_quant_linears_(model: nn.Module) -> Dict[str, int]:
    """Swap every `QuantLinear` in `model` (in place) for `XnnpackDynamicQuantLinear`; returns counts."""
    from lraqvit_deploy.layers.quant_linear import QuantLinear

    _ensure_quant_ops()
    check_xnnpack_forms(model)
    counts = {"quant_linear": 0, "w8": 0, "w4": 0}
    for name, mod in list(model.named_modules()):
        if isinstance(mod, QuantLinear):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            # per channel (8- and 4-bit: qc8w / qc4w, float32 scales) through quantized_decomposed;
            # blockwise 4-bit (qb4w, bfloat16 scales) through torchao's tensor
            lowered = XnnpackInt4DynamicQuantLinear if mod.w_group_size else XnnpackDynamicQuantLinear
            setattr(parent, child, lowered.from_quant_linear(mod))
            counts["quant_linear"] += 1
            counts[f"w{mod.w_bits}"] += 1
    return counts


def has_quant_linear(model: nn.Module) -> bool:
    from lraqvit_deploy.layers.quant_linear import QuantLinear

    return any(isinstance(m, QuantLinear) for m in model.modules())


def act_symmetric_flags(model: nn.Module) -> set:
    from lraqvit_deploy.layers.quant_linear import QuantLinear

    return {bool(m.act_symmetric) for m in model.modules() if isinstance(m, QuantLinear)}
