"""Per-layer rank and bit-width allocation: uniform and greedy mixed rank (Azizi et al.) to a parameter
budget, and MLoRQ's joint rank/bit ILP to a memory budget (METHODS.md §2-§3). `apply_plan_` builds a plan.

The activation-aware SVD, activation statistics, error compensation and partial fine-tune live in
`lraqvit_deploy.lowrank`; their names are re-exported here for callers written against this package.
"""
from ..lowrank.activation_svd import ActivationSVD, Spectrum, weighted_error, whitening
from ..lowrank.activations import LayerStats, collect_stats
from ..lowrank.compensation import compensate_model_, fit_compensation
from ..lowrank.finetune import partial_finetune_, partial_parameters
from ..lowrank.svd import uniform_ranks
from ..layers.compensated_linear import CompensatedLinear, compensation_rank
from ..vit_layout import encoder_linears
from .allocate import METHODS, Allocation, allocate
from .greedy import energy_ranks, layer_params, linear_budget
from .mlorq import check_target, layer_candidates, pareto_front, solve_ilp, unsupported_layers
from .plan import LayerChoice, Plan, apply_plan_, build_layer, ranks_of

__all__ = [
    "METHODS", "Allocation", "allocate", "energy_ranks", "layer_params", "linear_budget", "uniform_ranks",
    "check_target", "layer_candidates", "pareto_front", "solve_ilp", "unsupported_layers", "LayerChoice", "Plan",
    "apply_plan_", "build_layer", "ranks_of",
    # re-exported from lraqvit_deploy.lowrank / .layers / .vit_layout
    "ActivationSVD", "Spectrum", "weighted_error", "whitening", "LayerStats", "collect_stats", "encoder_linears",
    "CompensatedLinear", "compensation_rank", "compensate_model_", "fit_compensation", "partial_finetune_",
    "partial_parameters",
]
