"""Which Linears to factorise and at what rank (LRA-QViT §3.1).

A rank-r pair of an (out, in) Linear holds r (out + in) weights instead of out x in, so it
saves parameters only below the break-even rank out x in / (out + in). The default allocation is
uniform: every target layer keeps the same fraction k of its dense weights (r = k x break-even,
rounded to `rank_multiple`), with k the largest value that reaches the requested reduction of the
WHOLE model. A per-layer rank dict replaces this allocation.
"""
from __future__ import annotations

import re
from typing import Dict, Tuple

import torch.nn as nn

from ..errors import DeployError
from .configs import LowRankConfig

_IN_BLOCK = re.compile(r"(^|\.)blocks\.\d+\.")


def find_targets(model: nn.Module, targets: Tuple[str, ...] = ("qkv", "proj", "fc1", "fc2"),
                 include_patch_merging: bool = False) -> Dict[str, nn.Linear]:
    """Dense Linears named in `targets` inside encoder blocks (timm ViT/DeiT/DINOv2/Swin layouts)."""
    found = {}
    for name, m in model.named_modules():
        if type(m) is not nn.Linear:
            continue
        leaf = name.rpartition(".")[2]
        if (leaf in targets and _IN_BLOCK.search(name)) or (include_patch_merging and name.endswith("downsample.reduction")):
            found[name] = m
    return found


def break_even_rank(out_features: int, in_features: int) -> float:
    return out_features * in_features / (out_features + in_features)


def pair_params(out_features: int, in_features: int, rank: int) -> int:
    """Weights of a rank-r pair (the bias is the same as the dense layer's)."""
    return rank * (out_features + in_features)


def _round_rank(r: float, multiple: int, max_rank: int) -> int:
    r = max(multiple, int(round(r / multiple)) * multiple)
    return min(r, max_rank)


def _uniform_ranks(shapes: Dict[str, Tuple[int, int]], keep: float, multiple: int) -> Dict[str, int]:
    return {n: _round_rank(keep * break_even_rank(o, i), multiple, min(o, i)) for n, (o, i) in shapes.items()}


def _saved(shapes: Dict[str, Tuple[int, int]], ranks: Dict[str, int]) -> int:
    return sum(o * i - pair_params(o, i, ranks[n]) for n, (o, i) in shapes.items())


def check_ranks(shapes: Dict[str, Tuple[int, int]], ranks: Dict[str, int], hint: str = "") -> None:
    """Refuse any rank that does not shrink its layer (a pair at or above break-even saves nothing)."""
    for n, r in ranks.items():
        o, i = shapes[n]
        if not 1 <= r <= min(o, i):
            raise DeployError(f"{n}: rank {r} is out of range 1..{min(o, i)} for a ({o} x {i}) Linear.")
        if pair_params(o, i, r) >= o * i:
            raise DeployError(
                f"{n}: rank {r} keeps {pair_params(o, i, r):,} weights as a low-rank pair but the dense "
                f"({o} x {i}) layer has {o * i:,}; it saves nothing (ranks must stay below "
                f"{break_even_rank(o, i):.1f}). {hint}".rstrip())


def plan_ranks(model: nn.Module, config: LowRankConfig) -> Dict[str, int]:
    """{module name: rank} for every layer `config` compresses."""
    layers = find_targets(model, config.targets, config.include_patch_merging)
    if not layers:
        raise DeployError(f"{type(model).__name__} has no Linear named {list(config.targets)} inside encoder "
                          "blocks (timm ViT/DeiT/Swin/DINOv2 layouts); is it already compressed?")
    shapes = {n: (m.out_features, m.in_features) for n, m in layers.items()}
    if config.ranks is not None:
        unknown = sorted(set(config.ranks) - set(shapes))
        if unknown:
            raise DeployError(f"ranks name layers that are not compressible targets: {unknown[:4]}; "
                              f"valid names look like {sorted(shapes)[:2]}.")
        ranks = dict(config.ranks)
        check_ranks(shapes, ranks)
        return ranks

    total = sum(p.numel() for p in model.parameters())
    want = config.param_reduction * total
    most = _saved(shapes, _uniform_ranks(shapes, 0.0, config.rank_multiple))
    if most < want:
        raise DeployError(
            f"--param-reduction {config.param_reduction:.3f} is out of reach: factorising "
            f"{len(shapes)} layers at the smallest rank ({config.rank_multiple}) removes at most "
            f"{most / total:.1%} of {total:,} parameters. Ask for less.")
    lo, hi = 0.0, 1.0  # largest keep-fraction whose saving still reaches the target
    for _ in range(50):
        mid = (lo + hi) / 2
        if _saved(shapes, _uniform_ranks(shapes, mid, config.rank_multiple)) >= want:
            lo = mid
        else:
            hi = mid
    ranks = _uniform_ranks(shapes, lo, config.rank_multiple)
    check_ranks(shapes, ranks, hint=(f"At --param-reduction {config.param_reduction} with --rank-multiple "
                                     f"{config.rank_multiple} this layer rounds up to break-even; ask for a "
                                     "larger reduction or a smaller --rank-multiple."))
    return ranks


def rank_summary(model: nn.Module, ranks: Dict[str, int]) -> Dict[str, int]:
    """Parameter accounting of a rank plan against the dense `model` it was planned for."""
    shapes = {n: (model.get_submodule(n).out_features, model.get_submodule(n).in_features) for n in ranks}
    total = sum(p.numel() for p in model.parameters())
    saved = _saved(shapes, ranks)
    return {"params_before": total, "params_after": total - saved, "params_saved": saved}
