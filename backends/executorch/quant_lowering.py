"""Lower the simulator's `QuantLinear` to the graph pattern XNNPACK runs as a qd8 x qc8w GEMM.

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
    """y = linear(dq(q_token(x)), dq_channel(W_int8, w_scale), b): the pattern of XNNPACK's qd8 Linear."""

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
        if q.w_bits != 8 or q.a_bits != 8:
            raise DeployError(f"XNNPACK runs int8 weights and activations; got w{q.w_bits}a{q.a_bits}.")
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


def _ensure_quant_ops() -> None:
    """`torch.ops.quantized_decomposed` is registered by torchao's pt2e package."""
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401


def lower_quant_linears_(model: nn.Module) -> Dict[str, int]:
    """Swap every `QuantLinear` in `model` (in place) for `XnnpackDynamicQuantLinear`; returns counts."""
    from lraqvit_deploy.layers.quant_linear import QuantLinear

    _ensure_quant_ops()
    n = 0
    for name, mod in list(model.named_modules()):
        if isinstance(mod, QuantLinear):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, XnnpackDynamicQuantLinear.from_quant_linear(mod))
            n += 1
    return {"quant_linear": n}


def has_quant_linear(model: nn.Module) -> bool:
    from lraqvit_deploy.layers.quant_linear import QuantLinear

    return any(isinstance(m, QuantLinear) for m in model.modules())


def act_symmetric_flags(model: nn.Module) -> set:
    from lraqvit_deploy.layers.quant_linear import QuantLinear

    return {bool(m.act_symmetric) for m in model.modules() if isinstance(m, QuantLinear)}
