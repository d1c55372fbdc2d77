"""Activation-aware SVD: the rank-r Ŵ minimising E‖X(W − Ŵ)ᵀ‖² instead of ‖W − Ŵ‖ (Azizi et al., §2).

With C = E[x xᵀ] = L Lᵀ (Cholesky), E‖X Eᵀ‖² = ‖E L‖²_F for any error E, so the optimum is the
truncated SVD of the whitened weight W L = U S Vᵀ, mapped back: Ŵ = U_r S_r V_rᵀ L⁻¹.

Why whitening rather than the paper's representative-input form (SVD of the output on the mean
activation, then a pseudo-inverse): the mean activation is one vector, so it only constrains Ŵ
along one input direction, and its pseudo-inverse is ill-conditioned on the near-null directions
that LayerNorm'd ViT activations have. The Cholesky form uses the full second moment of the
calibration tokens, is exactly optimal for the expected squared output error on that set, and
gives S whose tail Σ_{i≥r} S_i² / Σ S_i² *is* the normalised output error the allocator ranks
layers by. A small ridge (`damp` × mean diagonal) keeps L invertible when some input channels are
(almost) constant; if Cholesky still fails, an eigen-decomposition square root is used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from ..layers.low_rank_linear import LowRankLinear


def whitening(second_moment: torch.Tensor, damp: float = 1e-5) -> Tuple[torch.Tensor, torch.Tensor]:
    """(L, L⁻¹) with L Lᵀ = C + damp·mean(diag C)·I, float64."""
    c = second_moment.double()
    c = c + damp * c.diagonal().mean().clamp_min(1e-12) * torch.eye(c.shape[0], dtype=c.dtype, device=c.device)
    l, info = torch.linalg.cholesky_ex(c)
    if int(info) != 0:  # not positive definite numerically: symmetric square root via eigh
        evals, evecs = torch.linalg.eigh(c)
        evals = evals.clamp_min(evals.max() * 1e-12)
        l = evecs * evals.sqrt()
        return l, (evecs / evals.sqrt()).T
    return l, torch.linalg.solve_triangular(l, torch.eye(c.shape[0], dtype=c.dtype, device=c.device), upper=False)


@dataclass
class Spectrum:
    """Singular values of one layer (plain or whitened), cached so ranks can be tried for free."""

    s: torch.Tensor  # (k,) descending, float64
    in_features: int
    out_features: int

    def tail_energy(self) -> torch.Tensor:
        """tail[r] = Σ_{i≥r} s_i² / Σ s_i², for r = 0..k (tail[k] = 0): the normalised error at rank r."""
        e = self.s.pow(2)
        tail = torch.cat([e.flip(0).cumsum(0).flip(0), e.new_zeros(1)])
        return tail / e.sum().clamp_min(1e-30)


class ActivationSVD:
    """One SVD of W·L per layer; factors at any rank without recomputing."""

    def __init__(self, weight: torch.Tensor, second_moment: Optional[torch.Tensor] = None, damp: float = 1e-5):
        self.weight = weight.detach()
        w = self.weight.double()
        if second_moment is None:  # plain SVD (activation-agnostic)
            self.l = self.l_inv = None
            self.u, self.s, self.vh = torch.linalg.svd(w, full_matrices=False)
        else:
            self.l, self.l_inv = whitening(second_moment.to(w.device), damp)
            self.u, self.s, self.vh = torch.linalg.svd(w @ self.l, full_matrices=False)

    @property
    def spectrum(self) -> Spectrum:
        return Spectrum(self.s, self.weight.shape[1], self.weight.shape[0])

    def factors(self, rank: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(up (out, r), down (r, in)) with the singular values split evenly, in the weight's dtype."""
        root = self.s[:rank].sqrt()
        up = self.u[:, :rank] * root
        down = root[:, None] * self.vh[:rank]
        if self.l_inv is not None:
            down = down @ self.l_inv
        return up.to(self.weight.dtype), down.to(self.weight.dtype)

    def low_rank_linear(self, linear: torch.nn.Linear, rank: int) -> LowRankLinear:
        return LowRankLinear.from_factors(linear, *self.factors(rank))


def weighted_error(weight: torch.Tensor, approx: torch.Tensor, second_moment: torch.Tensor,
                   normalise: bool = True) -> float:
    """E‖X(W − Ŵ)ᵀ‖² (per token) = tr(E C Eᵀ), divided by E‖XWᵀ‖² when `normalise`."""
    c = second_moment.detach().double()
    e = weight.detach().double() - approx.detach().double()
    err = torch.einsum("oi,ij,oj->", e, c, e)
    if normalise:
        w = weight.detach().double()
        err = err / torch.einsum("oi,ij,oj->", w, c, w).clamp_min(1e-30)
    return float(err)


__all__ = ["whitening", "Spectrum", "ActivationSVD", "weighted_error"]
