"""Per-layer rank and bit-width allocation: activation-aware SVD, greedy mixed rank (Azizi et al.),
low-rank error compensation, and MLoRQ's joint rank/bit ILP (METHODS.md §2-§3)."""
from .activation_svd import ActivationSVD, Spectrum, weighted_error, whitening
from .activations import LayerStats, collect_stats, encoder_linears
from .allocate import METHODS, Allocation, allocate
from .compensated_linear import CompensatedLinear, compensation_rank
from .compensation import compensate_model_, fit_compensation
from .finetune import partial_finetune_, partial_parameters
from .greedy import energy_ranks, layer_params, linear_budget, uniform_ranks
from .mlorq import check_target, layer_candidates, pareto_front, solve_ilp, unsupported_layers
from .plan import LayerChoice, Plan, apply_plan_, build_layer, ranks_of

__all__ = [
    "ActivationSVD", "Spectrum", "weighted_error", "whitening", "LayerStats", "collect_stats", "encoder_linears",
    "METHODS", "Allocation", "allocate", "CompensatedLinear", "compensation_rank", "compensate_model_",
    "fit_compensation", "partial_finetune_", "partial_parameters", "energy_ranks", "layer_params",
    "linear_budget", "uniform_ranks", "check_target", "layer_candidates", "pareto_front", "solve_ilp",
    "unsupported_layers", "LayerChoice", "Plan", "apply_plan_", "build_layer", "ranks_of",
]
