"""Rank allocation to a parameter budget: the greedy energy allocation of Azizi et al. (Algorithm 1);
the uniform allocation (the RB-LRA baseline) is `compress.svd.uniform_ranks`, shared with `compress_`.

A layer (in, out) at rank r costs min(in·out, r·(in+out)) weights: at or above the break-even rank
r* = ⌈in·out/(in+out)⌉ it stays dense (rank `None` in the result). The budget counts weights of the
allocated Linears only; `linear_budget` converts a whole-model parameter reduction into it. Shapes
are `{name: (in_features, out_features)}` (`vit_layout.linear_shapes`).
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional

import torch.nn as nn

from ..lowrank.activation_svd import Spectrum
from ..errors import DeployError
from ..evaluate import count_params
from ..layers.low_rank_linear import low_rank_params, saves_parameters

Ranks = Dict[str, Optional[int]]  # None = keep dense


def layer_params(in_f: int, out_f: int, rank: Optional[int]) -> int:
    """Weights of a layer at `rank` (None = dense)."""
    return in_f * out_f if rank is None else min(in_f * out_f, low_rank_params(in_f, out_f, rank))


def dense_or(in_f: int, out_f: int, rank: int) -> Optional[int]:
    """`rank`, or None (stay dense) when a rank-r pair would not save weights."""
    return rank if saves_parameters(in_f, out_f, rank) else None


def dense_or_ranks(shapes: Mapping[str, tuple], ranks: Mapping[str, int]) -> Ranks:
    """`dense_or` for every layer of `ranks`."""
    return {n: dense_or(*shapes[n], r) for n, r in ranks.items()}


def total_params(shapes: Mapping[str, tuple], ranks: Ranks) -> int:
    """Σ layer weights; `shapes[name] = (in, out)`."""
    return sum(layer_params(i, o, ranks[n]) for n, (i, o) in shapes.items())


def linear_budget(model: nn.Module, linears: Mapping[str, nn.Linear], param_reduction: float,
                  extra_per_layer: Optional[Mapping[str, int]] = None) -> int:
    """Weights the allocated Linears may keep so the whole model has `param_reduction` fewer parameters.

    Everything else (embeddings, norms, biases, head, `extra_per_layer` such as compensation
    branches) is counted as fixed.
    """
    if not 0.0 < param_reduction < 1.0:
        raise DeployError(f"--param-reduction must be in (0, 1), got {param_reduction}.")
    n_total = count_params(model)
    n_weights = sum(m.weight.numel() for m in linears.values())
    fixed = n_total - n_weights + sum((extra_per_layer or {}).values())
    budget = math.floor((1.0 - param_reduction) * n_total) - fixed
    floor = sum(m.in_features + m.out_features for m in linears.values())  # everything at rank 1
    if budget < floor:
        raise DeployError(f"a {param_reduction:.0%} parameter reduction leaves {budget} weights for "
                          f"{len(linears)} encoder Linears, below the {floor} that rank 1 everywhere needs; "
                          "ask for a smaller reduction.")
    return budget


def energy_ranks(spectra: Mapping[str, Spectrum], budget: int, gamma: float = 80.0, iters: int = 500,
                 fill: bool = True) -> Ranks:
    """Greedy mixed-rank allocation (Algorithm 1).

    Start at full rank (dense). Step t targets N(t) = N_target + (N_0 − N_target)·exp(−t/γ) weights;
    the deficit is cut from the one layer whose cut loses the least normalised energy Σ removed s² / Σ s²
    (one SVD per layer; the cached spectra make every trial free). After `iters` steps the remaining
    excess is cut the same way, then (`fill`) ranks are given back greedily, best energy per weight
    first, while they fit: the result is ≤ `budget` and no single +1 rank would still fit.
    """
    names = list(spectra)
    shape = {n: (spectra[n].in_features, spectra[n].out_features) for n in names}
    tails = {n: spectra[n].tail_energy().tolist() for n in names}
    kmax = {n: len(spectra[n].s) for n in names}
    rank = {n: kmax[n] for n in names}  # full rank == dense
    cost = {n: layer_params(*shape[n], dense_or(*shape[n], rank[n])) for n in names}
    n0 = sum(cost.values())
    if budget >= n0:
        return {n: None for n in names}
    if budget < sum(i + o for i, o in shape.values()):
        raise DeployError(f"budget of {budget} weights is below rank 1 in every layer.")

    def cut(deficit: int) -> bool:
        """Remove ≥ `deficit` weights from the layer losing least energy (or the most one can give)."""
        best = None
        for n in names:
            i, o = shape[n]
            r_new = min((cost[n] - deficit) // (i + o), rank[n] - 1, (i * o - 1) // (i + o))
            r_new = max(r_new, 1)
            removed = cost[n] - low_rank_params(i, o, r_new)
            if removed <= 0:
                continue
            loss = tails[n][r_new] - tails[n][rank[n]]
            key = (removed < deficit, loss, -removed)  # cuts covering the deficit first, then least loss
            if best is None or key < best[0]:
                best = (key, n, r_new)
        if best is None:
            return False
        _, n, r_new = best
        rank[n], cost[n] = r_new, low_rank_params(*shape[n], r_new)
        return True

    current = n0
    for t in range(1, iters + 1):
        target = budget + (n0 - budget) * math.exp(-t / gamma)
        deficit = math.ceil(current - target)
        if deficit > 0 and cut(deficit):
            current = sum(cost.values())
    while current > budget:
        if not cut(current - budget):
            raise DeployError(f"cannot reach {budget} weights.")
        current = sum(cost.values())
    while fill:  # give back single ranks, best energy per weight first, while they fit
        best = None
        for n in names:
            i, o = shape[n]
            if rank[n] >= kmax[n]:
                continue
            r_new = rank[n] + 1 if saves_parameters(i, o, rank[n] + 1) else kmax[n]
            extra = layer_params(i, o, dense_or(i, o, r_new)) - cost[n]
            if current + extra > budget:
                continue
            gain = (tails[n][rank[n]] - tails[n][r_new]) / max(extra, 1)
            if best is None or gain > best[0]:
                best = (gain, n, r_new, extra)
        if best is None:
            break
        _, n, r_new, extra = best
        rank[n], cost[n] = r_new, cost[n] + extra
        current += extra
    return {n: dense_or(*shape[n], rank[n]) for n in names}


__all__ = ["Ranks", "layer_params", "dense_or", "dense_or_ranks", "total_params", "linear_budget", "energy_ranks"]
