"""SwiGLU MLPs with one `fc1`: timm's two-Linear `SwiGLU` rewritten as its packed `GluMlp` form, exactly.

timm's `SwiGLU` (EVA-02 with `scale_mlp`, e.g. `eva02_base_*`) computes
`fc2(norm(silu(fc1_g(x)) * fc1_x(x)))`; `GluMlp(act_layer=SiLU, gate_last=False)` (timm's
`SwiGLUPacked`, what EVA-02 tiny/small build) computes `fc2(norm(silu(a) * b))` with
`a, b = fc1(x).chunk(2)`. Stacking `fc1_g` over `fc1_x` into one `fc1` gives the same numbers and
puts the block's MLP in the `mlp.fc1` / `mlp.fc2` slots that low rank, INT8 and WADS folding
work on (`vit_layout`); the hidden norm (`scale_mlp`) stays where it is, in front of `fc2`.
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn as nn


@torch.no_grad()
def pack_swiglu_(model: nn.Module) -> List[str]:
    """Replace every timm `SwiGLU` in `model` by an equal `GluMlp` with a single `fc1`; returns their names."""
    from timm.layers import GluMlp, SwiGLU

    done = []
    for name, mlp in list(model.named_modules()):
        if type(mlp) is not SwiGLU:
            continue
        g, x = mlp.fc1_g, mlp.fc1_x
        packed = GluMlp(g.in_features, 2 * g.out_features, mlp.fc2.out_features, act_layer=nn.SiLU,
                        bias=g.bias is not None, gate_last=False)
        fc1 = nn.Linear(g.in_features, 2 * g.out_features, bias=g.bias is not None,
                        device=g.weight.device, dtype=g.weight.dtype)
        fc1.weight.copy_(torch.cat((g.weight, x.weight)))
        if g.bias is not None:
            fc1.bias.copy_(torch.cat((g.bias, x.bias)))
        packed.fc1, packed.act, packed.drop1 = fc1, mlp.act, mlp.drop1
        packed.norm, packed.fc2, packed.drop2 = mlp.norm, mlp.fc2, mlp.drop2
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, packed.train(mlp.training))
        done.append(name)
    return done


__all__ = ["pack_swiglu_"]
