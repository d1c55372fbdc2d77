"""`QuantLinear`: the quantization simulator's Linear and the contract every backend lowers.

A QuantLinear holds the FP32 Linear whose weights already have any WADS/SmoothQuant channel
scales folded in, plus the numbers a backend needs to execute the same arithmetic:

  * `w_scale` (out,)   symmetric per-channel weight scale: W_q = clamp(round(W / s), -qmax - 1, qmax);
              (out, in // w_group_size) for blockwise weights (`w_group_size` consecutive input
              columns of a row share a scale; bfloat16-representable, as XNNPACK stores them)
  * `w_bits`          8, or 4 (XNNPACK's qc4w per channel / qb4w blockwise); the simulator takes 2..8
  * `act_scheme`       one of ACT_SCHEMES (below)
  * `act_scale`        ()  for per_tensor_static, (T,) for per_token_static (one per token
                       position: x is viewed as (-1, T, C), so Swin's (B, H, W, C) has T = H*W),
                       empty for per_token_dynamic / none
  * `tensor_act_scale` ()  the calibrated per-tensor static scale, kept for every scheme so that a
                       backend without per-token support (TensorRT) can still lower the layer
  * `input_scale`      (in,) optional explicit divisor applied to x before quantization, for a
                       channel scale that no preceding op can absorb (e.g. fc2 after GELU);
                       empty when everything is folded.

Activation quantization is symmetric with range [-qmax-1, qmax] (int8: [-128, 127]) for static
schemes. `per_token_dynamic` quantizes each token row with its own scale at run time; with
`act_symmetric=False` it is asymmetric (scale + zero point per row), which is what XNNPACK's
qd8 kernels execute.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._registry import register_module_type
from .fake_quant import (expand_scale, fake_quant_per_token_dynamic, fake_quant_symmetric,  # noqa: F401
                         per_channel_weight_scale, round_ste, weight_scale)

ACT_SCHEMES = ("none", "per_tensor_static", "per_token_static", "per_token_dynamic")


class QuantLinear(nn.Module):
    """Fake-quantized Linear: per-channel int weights, activations per `act_scheme`."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, act_scheme: str = "per_token_dynamic",
                 w_bits: int = 8, a_bits: int = 8, act_symmetric: bool = True, num_tokens: Optional[int] = None,
                 w_group_size: Optional[int] = None):
        super().__init__()
        if act_scheme not in ACT_SCHEMES:
            raise ValueError(f"act_scheme must be one of {ACT_SCHEMES}, got {act_scheme!r}")
        if w_group_size is not None and (w_group_size <= 0 or in_features % w_group_size):
            raise ValueError(f"w_group_size {w_group_size} must divide in_features {in_features}")
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.in_features, self.out_features = in_features, out_features
        self.act_scheme, self.w_bits, self.a_bits, self.act_symmetric = act_scheme, w_bits, a_bits, act_symmetric
        self.w_group_size = w_group_size
        self.register_buffer("w_scale", torch.ones(out_features) if w_group_size is None
                             else torch.ones(out_features, in_features // w_group_size))
        shape = {"per_tensor_static": (), "per_token_static": (num_tokens or 0,)}.get(act_scheme, (0,))
        self.register_buffer("act_scale", torch.ones(shape))
        self.register_buffer("input_scale", torch.ones(0))
        self.register_buffer("tensor_act_scale", torch.ones(()))

    @classmethod
    def from_linear(cls, linear: nn.Linear, act_scheme: str = "per_token_dynamic", **kw) -> "QuantLinear":
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, act_scheme, **kw)
        m.linear.load_state_dict(linear.state_dict())
        m.linear.to(linear.weight.device)
        m.update_weight_scale()
        return m

    @classmethod
    @torch.no_grad()
    def from_weight(cls, weight: torch.Tensor, scale: torch.Tensor, bias: Optional[torch.Tensor], bits: int,
                    group_size: Optional[int] = None, act_scheme: str = "none",
                    act_symmetric: bool = True) -> "QuantLinear":
        """A QuantLinear holding `weight` (out, in) with the given `scale` ((out,), or (out, in // group_size))."""
        q = cls(weight.shape[1], weight.shape[0], bias is not None, act_scheme=act_scheme, w_bits=bits,
                act_symmetric=act_symmetric, w_group_size=group_size)
        q.linear.weight.copy_(weight)
        if bias is not None:
            q.linear.bias.copy_(bias)
        q.w_scale = scale.to(weight.dtype).clone()
        return q

    @classmethod
    def weight_only(cls, weight: torch.Tensor, scale: torch.Tensor, bias: Optional[torch.Tensor],
                    bits: int) -> "QuantLinear":
        """A weight-only QuantLinear (act_scheme 'none', float activations: simulation only)."""
        return cls.from_weight(weight, scale, bias, bits)

    def update_weight_scale(self) -> None:
        """Recompute `w_scale` from the (folded) FP32 weight (max |w| per row, or per block)."""
        self.w_scale = weight_scale(self.linear.weight, self.w_bits, self.w_group_size)

    def quantized_weight(self) -> torch.Tensor:
        return fake_quant_symmetric(self.linear.weight, expand_scale(self.w_scale, self.in_features), self.w_bits)

    @property
    def weight_format(self) -> str:
        """`w8`, `w4` (per channel) or `w4g32` (blockwise, group 32)."""
        return f"w{self.w_bits}" + (f"g{self.w_group_size}" if self.w_group_size else "")

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale.numel():
            x = x / self.input_scale
        if self.act_scheme == "per_tensor_static":
            return fake_quant_symmetric(x, self.act_scale, self.a_bits)
        if self.act_scheme == "per_token_static":
            xs = x.reshape(-1, self.act_scale.numel(), x.shape[-1])
            return fake_quant_symmetric(xs, self.act_scale[:, None], self.a_bits).reshape(x.shape)
        if self.act_scheme == "per_token_dynamic":
            return fake_quant_per_token_dynamic(x, self.a_bits, self.act_symmetric)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantize_input(x), self.quantized_weight(), self.linear.bias)

    @torch.no_grad()
    def to_linear(self) -> nn.Linear:
        """The float Linear this layer approximates (any explicit `input_scale` folded into its columns)."""
        lin = nn.Linear(self.in_features, self.out_features, self.linear.bias is not None,
                        device=self.linear.weight.device, dtype=self.linear.weight.dtype)
        lin.load_state_dict(self.linear.state_dict())
        if self.input_scale.numel():
            lin.weight.div_(self.input_scale[None, :])
        return lin

    def artifact_entry(self) -> dict:
        return {"type": "quant_linear", "act_scheme": self.act_scheme, "w_bits": self.w_bits, "a_bits": self.a_bits,
                "w_group_size": self.w_group_size,
                "act_symmetric": self.act_symmetric, "num_tokens": int(self.act_scale.numel())
                if self.act_scheme == "per_token_static" else None, "input_scale": bool(self.input_scale.numel())}

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, act={self.act_scheme}, "
                f"w{self.w_bits}a{self.a_bits}" + (f", group={self.w_group_size}" if self.w_group_size else ""))


@register_module_type("quant_linear")
def _build(original: nn.Module, entry: dict) -> nn.Module:
    m = QuantLinear(original.in_features, original.out_features, original.bias is not None, entry["act_scheme"],
                    entry.get("w_bits", 8), entry.get("a_bits", 8), entry.get("act_symmetric", True),
                    entry.get("num_tokens"), entry.get("w_group_size"))
    if entry.get("input_scale"):
        m.input_scale = torch.ones(original.in_features)
    return m
