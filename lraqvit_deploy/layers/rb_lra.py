"""`RBLRALinear`: low-rank layer with a reparameterizable branch for fine-tuning (LRA-QViT §3.2-3.3).

    y = (up + Ṽ) (down + Ũᵀ) x + b        (paper Eq. 5; Ṽ: (out, r), Ũᵀ: (r, in))

`up`/`down` hold the truncated SVD (the base, frozen by default, LoRA-style); the branch
`branch_up` (Ṽ) and `branch_down` (Ũᵀ) is what distillation trains. `merge()` folds the branch
into a plain `LowRankLinear` (up' = up + Ṽ, down' = down + Ũᵀ), so the deployed cost equals LRA.

Branch inits: "wr" (weight reconstruction, Eq. 7-8: Ṽ₀ = U[:, r:2r] S[r:2r], zero-padded when
fewer than r components were discarded; Ũ₀ = 0), "zero", or "random" (Ṽ₀ ~ N(0, std²), Ũ₀ = 0;
std defaults to the WR branch's RMS so that only the direction differs from WR).
Note that with Ũ₀ = 0 a non-zero Ṽ₀ changes the initial weight by Ṽ₀·down.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._registry import register_module_type
from .low_rank_linear import LowRankLinear, init_factor_pair

INITS = ("wr", "zero", "random")


def wr_branch(u: torch.Tensor, s: torch.Tensor, rank: int) -> torch.Tensor:
    """Ṽ₀ = U[:, r:2r] * S[r:2r], zero-padded to (out, r) when fewer than r components remain."""
    tail = u[:, rank : 2 * rank] * s[rank : 2 * rank]
    out = torch.zeros(u.shape[0], rank, dtype=u.dtype, device=u.device)
    out[:, : tail.shape[1]] = tail
    return out


class RBLRALinear(nn.Module):
    """Rank-r factorised Linear plus a trainable rank-r branch: `(up + Ṽ)(down + Ũᵀ) x + b`."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True,
                 train_base: bool = False, device=None, dtype=None):
        super().__init__()
        init_factor_pair(self, in_features, out_features, rank, bias, device, dtype)
        self.branch_up = nn.Parameter(torch.zeros(out_features, rank, device=device, dtype=dtype))
        self.branch_down = nn.Parameter(torch.zeros(rank, in_features, device=device, dtype=dtype))
        self.set_train_base(train_base)

    def set_train_base(self, train_base: bool) -> None:
        """Freeze (default) or unfreeze the SVD base factors; the branch always trains."""
        self.train_base = bool(train_base)
        self.down.weight.requires_grad_(self.train_base)
        self.up.weight.requires_grad_(self.train_base)

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, init: str = "wr", train_base: bool = False,
                    std: Optional[float] = None, generator: Optional[torch.Generator] = None,
                    svd: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]] = None,
                    ) -> "RBLRALinear":
        """Truncated SVD base of `linear` plus a branch initialised by `init` (see module docstring).

        `svd` = (U, S, Vh, R) of W·R⁻¹ instead (e.g. an activation-whitened SVD, R the whitening's
        inverse applied on the right: W ≈ U S Vh R); the WR branch then uses that spectrum's tail.
        """
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        w = linear.weight
        m = cls(linear.in_features, linear.out_features, rank, linear.bias is not None, train_base,
                device=w.device, dtype=w.dtype)
        if svd is None:
            u, s, vh = torch.linalg.svd(w.detach().double(), full_matrices=False)
            right = None
        else:
            u, s, vh, right = svd
        root = s[:rank].sqrt()
        down = root[:, None] * vh[:rank]
        with torch.no_grad():
            m.up.weight.copy_(u[:, :rank] * root)
            m.down.weight.copy_(down if right is None else down @ right)
            if linear.bias is not None:
                m.up.bias.copy_(linear.bias)
            if init != "zero":
                wr = wr_branch(u, s, rank)
                if init == "wr":
                    m.branch_up.copy_(wr)
                else:
                    sigma = std if std is not None else float(wr.pow(2).mean().sqrt())
                    noise = torch.randn(wr.shape, generator=generator, dtype=torch.float64)
                    m.branch_up.copy_(noise * sigma)
        return m

    def merged_factors(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(up + Ṽ, down + Ũᵀ): the rank-r pair this layer computes."""
        return self.up.weight + self.branch_up, self.down.weight + self.branch_down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up, down = self.merged_factors()
        return F.linear(F.linear(x, down), up, self.up.bias)

    @torch.no_grad()
    def merge(self) -> LowRankLinear:
        """The deployable `LowRankLinear` computing the same function (exact up to float rounding)."""
        up, down = self.merged_factors()
        m = LowRankLinear(self.in_features, self.out_features, self.rank, self.up.bias is not None,
                          device=up.device, dtype=up.dtype)
        m.up.weight.copy_(up)
        m.down.weight.copy_(down)
        if self.up.bias is not None:
            m.up.bias.copy_(self.up.bias)
        return m

    def artifact_entry(self) -> dict:
        return {"type": "rb_lra_linear", "rank": self.rank, "train_base": self.train_base}

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"train_base={self.train_base}")


@register_module_type("rb_lra_linear")
def _build(original: nn.Module, entry: dict) -> nn.Module:
    return RBLRALinear(original.in_features, original.out_features, int(entry["rank"]),
                       bias=original.bias is not None, train_base=bool(entry.get("train_base", False)))
