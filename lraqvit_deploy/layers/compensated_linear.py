"""`CompensatedLinear`: a low-rank layer plus a rank-q error-compensation branch G·Yᵀ (Azizi et al., §2).

y = up(down(x)) + G(Yᵀx). The branch is itself rank q, so `merge()` concatenates it into one
rank-(r+q) `LowRankLinear` with the identical function; `compress.compensate_model_` merges right
away. Unmerged, it is still a registered artifact type (`compensated_linear`), so a model saved
mid-way reloads.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ._registry import register_module_type
from .low_rank_linear import LowRankLinear


def compensation_rank(in_features: int, out_features: int, fraction: float = 0.05) -> int:
    """q such that G (out, q) and Yᵀ (q, in) hold `fraction` of the dense layer's in·out weights (≥ 1)."""
    return max(1, int(fraction * in_features * out_features / (in_features + out_features)))


class CompensatedLinear(nn.Module):
    """A frozen `LowRankLinear` base plus a trainable compensation branch `g(y_t(x))`."""

    def __init__(self, base: LowRankLinear, q: int):
        super().__init__()
        self.base, self.q = base, q
        p = base.up.weight
        self.y_t = nn.Linear(base.in_features, q, bias=False, device=p.device, dtype=p.dtype)  # Yᵀ
        self.g = nn.Linear(q, base.out_features, bias=False, device=p.device, dtype=p.dtype)  # G
        nn.init.zeros_(self.g.weight)  # starts as the identity correction

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.g(self.y_t(x))

    @torch.no_grad()
    def merge(self) -> LowRankLinear:
        """One rank-(r+q) LowRankLinear: down' = [down; Yᵀ], up' = [up, G]; exact."""
        b = self.base
        m = LowRankLinear(b.in_features, b.out_features, b.rank + self.q, b.up.bias is not None,
                          device=b.up.weight.device, dtype=b.up.weight.dtype)
        m.down.weight.copy_(torch.cat([b.down.weight, self.y_t.weight], 0))
        m.up.weight.copy_(torch.cat([b.up.weight, self.g.weight], 1))
        if b.up.bias is not None:
            m.up.bias.copy_(b.up.bias)
        return m

    def artifact_entry(self) -> dict:
        return {"type": "compensated_linear", "rank": self.base.rank, "q": self.q}

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.base.rank}, q={self.q}"


@register_module_type("compensated_linear")
def _build(original: nn.Module, entry: dict) -> nn.Module:
    base = LowRankLinear(original.in_features, original.out_features, int(entry["rank"]),
                         bias=original.bias is not None)
    return CompensatedLinear(base, int(entry["q"]))
