"""`LowRankLinear`: the deployed form of a low-rank layer, y = up(down(x)) (LRA-QViT §3.1).

`down` is Linear(in, r, bias=False) and `up` is Linear(r, out, bias=True): two plain Linears,
so every backend lowers them with its ordinary (quantized) Linear kernels, and the rank-r
intermediate is an ordinary activation that can be quantized per token.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ._registry import register_module_type


def svd_factors(weight: torch.Tensor, rank: int):
    """Top-`rank` SVD split evenly: up = U sqrt(S) (out, r), down = sqrt(S) Vh (r, in)."""
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(weight.dtype), (root[:, None] * vh[:rank]).to(weight.dtype)


def low_rank_params(in_features: int, out_features: int, rank: int) -> int:
    """Weights of a rank-r pair, r (in + out) (its bias is the dense layer's)."""
    return rank * (in_features + out_features)


def break_even_rank(in_features: int, out_features: int) -> float:
    """in x out / (in + out): the rank at which a pair holds as many weights as the dense layer."""
    return in_features * out_features / (in_features + out_features)


def saves_parameters(in_features: int, out_features: int, rank: int) -> bool:
    """A rank-r pair only pays when its r (in + out) weights are fewer than the dense in x out."""
    return low_rank_params(in_features, out_features, rank) < in_features * out_features


def init_factor_pair(module: nn.Module, in_features: int, out_features: int, rank: int, bias: bool = True,
                     device=None, dtype=None) -> None:
    """Give `module` a rank-r pair: `down` Linear(in, r, no bias) and `up` Linear(r, out) (LowRankLinear, RBLRALinear)."""
    if not 0 < rank <= min(in_features, out_features):
        raise ValueError(f"rank must be in 1..{min(in_features, out_features)}, got {rank}")
    module.in_features, module.out_features, module.rank = in_features, out_features, rank
    module.down = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
    module.up = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)


class LowRankLinear(nn.Module):
    """A rank-r factorisation of a Linear: `up(down(x))`."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        init_factor_pair(self, in_features, out_features, rank, bias, device, dtype)

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int) -> "LowRankLinear":
        """Truncated SVD of `linear` (Eckart-Young optimal in Frobenius norm)."""
        return cls.from_factors(linear, *svd_factors(linear.weight, rank))

    @classmethod
    @torch.no_grad()
    def from_factors(cls, linear: nn.Linear, up: torch.Tensor, down: torch.Tensor) -> "LowRankLinear":
        """`up` (out, r) @ `down` (r, in) replacing `linear`, whose bias it keeps."""
        m = cls(linear.in_features, linear.out_features, up.shape[1], linear.bias is not None,
                device=linear.weight.device, dtype=linear.weight.dtype)
        m.up.weight.copy_(up)
        m.down.weight.copy_(down)
        if linear.bias is not None:
            m.up.bias.copy_(linear.bias)
        return m

    def to_linear(self) -> nn.Linear:
        """The equivalent dense Linear (W = up @ down)."""
        lin = nn.Linear(self.in_features, self.out_features, self.up.bias is not None,
                        device=self.up.weight.device, dtype=self.up.weight.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.up.weight @ self.down.weight)
            if self.up.bias is not None:
                lin.bias.copy_(self.up.bias)
        return lin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

    def artifact_entry(self) -> dict:
        return {"type": "low_rank_linear", "rank": self.rank}

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


@register_module_type("low_rank_linear")
def _build(original: nn.Module, entry: dict) -> nn.Module:
    # `original` is the architecture's dense Linear, or (inside a CompensatedLinear) its rebuilt base pair
    bias = original.up.bias if isinstance(original, LowRankLinear) else original.bias
    return LowRankLinear(original.in_features, original.out_features, int(entry["rank"]), bias=bias is not None)
