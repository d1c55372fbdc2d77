"""Which Linears to factorise and at what rank (LRA-QViT §3.1).

A rank-r pair of an (in -> out) Linear holds r (in + out) weights instead of in x out, so it
saves parameters only below the break-even rank in x out / (in + out). The default allocation is
uniform: every target layer keeps the same fraction k of its break-even rank (r = k x break-even,
rounded to `rank_multiple`), with k the largest value that reaches the requested reduction of the
WHOLE model. A per-layer rank dict replaces this allocation.

Layer shapes are `{name: (in_features, out_features)}` throughout (nn.Linear's argument order,
`vit_layout.linear_shapes`).
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Sequence, Tuple

import torch.nn as nn

from ..errors import DeployError
from ..evaluate import count_params
from ..layers.low_rank_linear import break_even_rank, low_rank_params
from ..vit_layout import encoder_linears, linear_shapes
from .configs import DEFAULT_TARGETS, LowRankConfig

Shapes = Mapping[str, Tuple[int, int]]  # {name: (in_features, out_features)}


def find_targets(model: nn.Module, targets: Sequence[str] = DEFAULT_TARGETS,
                 include_patch_merging: bool = False) -> Dict[str, nn.Linear]:
    """Dense Linears named in `targets` inside encoder blocks (timm ViT/DeiT/DINOv2/Swin layouts)."""
    return encoder_linears(model, targets, include_patch_merging)


def _round_rank(r: float, multiple: int, max_rank: int) -> int:
    r = max(multiple, int(round(r / multiple)) * multiple)
    return min(r, max_rank)


def uniform_ranks_at(shapes: Shapes, keep: float, multiple: int = 1) -> Dict[str, int]:
    """Every layer at `keep` x its break-even rank, rounded to `multiple` (at least `multiple`, at most min(in, out))."""
    return {n: _round_rank(keep * break_even_rank(i, o), multiple, min(i, o)) for n, (i, o) in shapes.items()}


def pair_weights(shapes: Shapes, ranks: Mapping[str, int]) -> int:
    """Weights of the rank-r pairs of `ranks` (every layer named in it)."""
    return sum(low_rank_params(*shapes[n], r) for n, r in ranks.items())


def uniform_ranks(shapes: Shapes, budget: int, multiple: int = 1) -> Dict[str, int]:
    """The uniform allocation: the largest common keep-fraction k in [0, 1] of every layer's break-even rank
    (`uniform_ranks_at`) whose pairs hold at most `budget` weights. At k = 0 every layer is at rank `multiple`.
    """
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if pair_weights(shapes, uniform_ranks_at(shapes, mid, multiple)) <= budget:
            lo = mid
        else:
            hi = mid
    return uniform_ranks_at(shapes, lo, multiple)


def check_ranks(shapes: Shapes, ranks: Mapping[str, int], hint: str = "") -> None:
    """Refuse any rank that does not shrink its layer (a pair at or above break-even saves nothing)."""
    for n, r in ranks.items():
        i, o = shapes[n]
        if not 1 <= r <= min(o, i):
            raise DeployError(f"{n}: rank {r} is out of range 1..{min(o, i)} for a ({o} x {i}) Linear.")
        if low_rank_params(i, o, r) >= o * i:
            raise DeployError(
                f"{n}: rank {r} keeps {low_rank_params(i, o, r):,} weights as a low-rank pair but the dense "
                f"({o} x {i}) layer has {o * i:,}; it saves nothing (ranks must stay below "
                f"{break_even_rank(i, o):.1f}). {hint}".rstrip())


def plan_ranks(model: nn.Module, config: LowRankConfig) -> Dict[str, int]:
    """{module name: rank} for every layer `config` compresses."""
    layers = find_targets(model, config.targets, config.include_patch_merging)
    if not layers:
        raise DeployError(f"{type(model).__name__} has no Linear named {list(config.targets)} inside encoder "
                          "blocks (timm ViT/DeiT/Swin/DINOv2 layouts); is it already compressed?")
    shapes = linear_shapes(layers)
    if config.ranks is not None:
        unknown = sorted(set(config.ranks) - set(shapes))
        if unknown:
            raise DeployError(f"ranks name layers that are not compressible targets: {unknown[:4]}; "
                              f"valid names look like {sorted(shapes)[:2]}.")
        ranks = dict(config.ranks)
        check_ranks(shapes, ranks)
        return ranks

    total = count_params(model)
    dense = sum(i * o for i, o in shapes.values())
    budget = dense - math.ceil(config.param_reduction * total)  # pairs may keep this many weights
    most = dense - pair_weights(shapes, uniform_ranks_at(shapes, 0.0, config.rank_multiple))
    if dense - most > budget:
        raise DeployError(
            f"--param-reduction {config.param_reduction:.3f} is out of reach: factorising "
            f"{len(shapes)} layers at the smallest rank ({config.rank_multiple}) removes at most "
            f"{most / total:.1%} of {total:,} parameters. Ask for less.")
    ranks = uniform_ranks(shapes, budget, config.rank_multiple)
    check_ranks(shapes, ranks, hint=(f"At --param-reduction {config.param_reduction} with --rank-multiple "
                                     f"{config.rank_multiple} this layer rounds up to break-even; ask for a "
                                     "larger reduction or a smaller --rank-multiple."))
    return ranks


def rank_summary(model: nn.Module, ranks: Mapping[str, int]) -> Dict[str, int]:
    """Parameter accounting of a rank plan against the dense `model` it was planned for."""
    shapes = linear_shapes({n: model.get_submodule(n) for n in ranks})
    total = count_params(model)
    saved = sum(i * o for i, o in shapes.values()) - pair_weights(shapes, ranks)
    return {"params_before": total, "params_after": total - saved, "params_saved": saved}
