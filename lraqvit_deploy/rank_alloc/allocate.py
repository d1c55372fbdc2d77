"""One entry point: `allocate(model, method, ...)` → a per-layer `Plan` (ranks, and bits for MLoRQ)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

import torch
import torch.nn as nn

from ..lowrank.activation_svd import ActivationSVD
from ..lowrank.activations import LayerStats, collect_stats
from ..lowrank.compensation import compensation_params
from ..lowrank.svd import uniform_ranks
from ..errors import DeployError
from ..evaluate import count_params
from ..vit_layout import encoder_linears, linear_shapes
from .greedy import dense_or_ranks, energy_ranks, linear_budget, total_params
from .plan import LayerChoice, Plan, ranks_of

METHODS = ("uniform", "energy", "mlorq")


@dataclass
class Allocation:
    """The chosen plan plus what it was chosen for; `stats` are kept for building activation-aware factors."""

    method: str
    plan: Plan
    summary: Dict[str, Any] = field(default_factory=dict)
    stats: Optional[Mapping[str, LayerStats]] = None

    @property
    def ranks(self) -> Dict[str, Optional[int]]:
        return ranks_of(self.plan)

    def to_dict(self) -> Dict[str, Any]:
        return {"method": self.method, **self.summary, "layers": {n: c.to_dict() for n, c in self.plan.items()}}


def allocate(model: nn.Module, method: str, param_reduction: Optional[float] = None,
             memory_budget_mb: Optional[float] = None, images: Optional[torch.Tensor] = None,
             activation_aware: bool = True, compensation_fraction: float = 0.0, progress: bool = True,
             stats: Optional[Mapping[str, LayerStats]] = None, size_budget_mb: Optional[float] = None,
             target: Optional[str] = None, latency_budget_ms: Optional[float] = None,
             speedup: Optional[float] = None, latency=None, **mlorq_kw) -> Allocation:
    """Allocate ranks (uniform / energy, to `param_reduction` of the whole model's parameters) or ranks and
    bits (mlorq: to `size_budget_mb` of the built `target` program, "android" or "jetson"; or, in
    simulation, to `memory_budget_mb` of weights at any bits). `images` (N, 3, H, W) calibrate the activation
    statistics when a method needs them; `compensation_fraction` > 0 reserves that share of each
    low-rank layer's dense size for error-compensation branches inside the same budget.

    mlorq under a latency budget (`latency_budget_ms`, or `speedup` over the dense FP32 model; target
    "android"): each candidate is priced by `latency`, a `rank_alloc.latency.LatencyModel` (default: the
    cost table cached for this host at 1 thread), alone or with `size_budget_mb` (`latency.latency_plan`).
    """
    if method not in METHODS:
        raise DeployError(f"--rank-alloc must be one of {METHODS}, got {method!r}.")
    linears = encoder_linears(model)
    if not linears:
        raise DeployError(f"{type(model).__name__} has no Linear inside encoder blocks; is it a timm ViT/DeiT/Swin?")
    shapes = linear_shapes(linears)
    under_latency = method == "mlorq" and (latency_budget_ms is not None or speedup is not None)
    if under_latency:  # the cost table before the statistics: a missing one is one line
        from ..quant.forms import TARGETS

        if target not in TARGETS:
            raise DeployError(f"a latency budget plans a built program: give --target android or jetson (got {target!r}).")
        if latency is None:
            from .latency import latency_model

            latency = latency_model(model, target=target)
    needs_stats = method == "mlorq" or (method == "energy" and activation_aware) or compensation_fraction > 0
    if needs_stats and stats is None:
        if images is None:
            raise DeployError(f"--rank-alloc {method} needs calibration images (activation statistics).")
        stats = collect_stats(model, images, linears, progress=progress)
    if under_latency:
        from .latency import latency_plan

        kw = {k: v for k, v in mlorq_kw.items() if k in ("dense_bits", "factor_bits", "rank_fractions")}
        plan, summary = latency_plan(model, linears, stats, target, latency, latency_budget_ms, speedup,
                                     size_budget_mb, progress=progress, **kw)
        return Allocation(method, plan, {"target": target, **summary, "forms": _form_counts(plan)}, stats)
    if method == "mlorq" and size_budget_mb is not None:
        from ..quant.forms import TARGETS

        if target not in TARGETS:
            raise DeployError(f"--size-budget-mb plans the program of a target: give --target android or jetson "
                              f"(got {target!r}).")
        from .mlorq import size_plan

        kw = {k: v for k, v in mlorq_kw.items() if k in ("dense_bits", "factor_bits", "rank_fractions")}
        plan, planned = size_plan(model, linears, stats, size_budget_mb, target, progress=progress, **kw)
        return Allocation(method, plan, {"size_budget_mb": size_budget_mb, "target": target,
                                         "planned_size_mb": round(planned / 1e6, 6),
                                         "forms": _form_counts(plan)}, stats)
    if method == "mlorq":
        if memory_budget_mb is None:
            raise DeployError("--rank-alloc mlorq needs --size-budget-mb with --target (or --memory-budget-mb "
                              "for a simulation at any bits).")
        from .mlorq import memory_mb, mlorq_plan

        plan = mlorq_plan(model, linears, stats, memory_budget_mb, progress=progress, **mlorq_kw)
        return Allocation(method, plan, {"memory_budget_mb": memory_budget_mb,
                                         "memory_mb": memory_mb(model, plan, linears)}, stats)
    if param_reduction is None:
        raise DeployError(f"--rank-alloc {method} needs --param-reduction.")
    if method == "energy":
        from tqdm import tqdm

        spectra = {n: ActivationSVD(m.weight, stats[n].second_moment if activation_aware else None).spectrum
                   for n, m in tqdm(linears.items(), desc="layer SVDs", disable=not progress, leave=False)}
        choose = lambda budget: energy_ranks(spectra, budget)  # noqa: E731
    else:
        choose = lambda budget: dense_or_ranks(shapes, uniform_ranks(shapes, budget))  # noqa: E731
    extra = 0
    for _ in range(10):  # fixed point: compensation only goes to layers that end up low-rank
        budget = linear_budget(model, linears, param_reduction) - extra
        ranks = choose(budget)
        new_extra = compensation_params(shapes, ranks, compensation_fraction) if compensation_fraction else 0
        if new_extra <= extra:
            break
        extra = new_extra
    n_total = count_params(model)
    kept = n_total - sum(i * o for i, o in shapes.values()) + total_params(shapes, ranks) + new_extra
    summary = {"param_reduction": param_reduction, "activation_aware": activation_aware and method == "energy",
               "compensation_fraction": compensation_fraction, "params_before": n_total, "params_after": kept,
               "achieved_reduction": 1 - kept / n_total}
    return Allocation(method, {n: LayerChoice(rank=r) for n, r in ranks.items()}, summary, stats)


def _form_counts(plan: Mapping[str, LayerChoice]) -> Dict[str, int]:
    """How many layers take each choice label (e.g. {"w4g32": 30, "r96:w8/w4": 8})."""
    out: Dict[str, int] = {}
    for c in plan.values():
        key = c.label if c.rank is None else f"rank r:{c.label.split(':', 1)[1]}"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))
