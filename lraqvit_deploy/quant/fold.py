"""Folding a channel scale on a Linear's input into the op that produces that input.

A channel scale alpha on a Linear's input means y = (alpha * W) (x / alpha): the Linear's columns
absorb alpha and the op that produces x must output x / alpha. Which op that is for each encoder
Linear (LayerNorm, v's rows of qkv, `down`'s rows, or nothing after GELU) is `vit_layout`'s table;
`find_targets` is `vit_layout.quantizable_linears`.
"""
from __future__ import annotations

import torch

from ..errors import DeployError
from ..vit_layout import EncoderLinear, FoldSite
from ..vit_layout import quantizable_linears as find_targets

Target = EncoderLinear  # one Linear to quantize: name, module, fold site, role


@torch.no_grad()
def fold_scale(target: Target, alpha: torch.Tensor) -> None:
    """Make the producer emit x / alpha and the target's columns absorb alpha (outputs unchanged)."""
    site = target.site
    if site.kind == "none":
        raise DeployError(f"{target.name}: no preceding linear op to fold a channel scale into.")
    alpha = alpha.to(target.linear.weight)
    target.linear.weight.mul_(alpha[None, :])
    if site.kind == "layernorm":
        site.module.weight.div_(alpha)
        if site.module.bias is not None:
            site.module.bias.div_(alpha)
    elif site.kind == "rows":
        site.module.weight[site.rows].div_(alpha[:, None])
        if site.module.bias is not None:
            site.module.bias[site.rows].div_(alpha)
    else:  # pragma: no cover - FoldSite kinds are closed
        raise ValueError(site.kind)


__all__ = ["FoldSite", "Target", "find_targets", "fold_scale"]
