"""`XnnpackLayerNorm`: LayerNorm written with ops XNNPACK delegates (opt-in: `--delegate-layernorm`).

ExecuTorch 1.5.1's XNNPACK partitioner has no LayerNorm, so each block's two LayerNorms run as
portable kernels and split the program into ~2 delegate segments per block. XNNPACK's `mean.dim`
does support a 4-D mean over dims (2, 3) with keepdim (global average pooling), so viewing the
(B, T, C) activation as (B, T, C, 1) expresses the normalisation in delegated ops. Numerically
it is the same LayerNorm (biased variance, eps inside the rsqrt); whether it is faster depends
on the device: measure both (`deploy bench --target host --op-profile`).
"""
from __future__ import annotations

import torch
import torch.nn as nn


class XnnpackLayerNorm(nn.Module):
    """LayerNorm over the last dim via (B, T, C, 1) means; shares weight/bias with the original."""

    def __init__(self, ln: nn.LayerNorm):
        super().__init__()
        self.weight, self.bias, self.eps = ln.weight, ln.bias, ln.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x4 = x.reshape(shape[0], -1, shape[-1], 1)
        centered = x4 - x4.mean(dim=(2, 3), keepdim=True)
        var = (centered * centered).mean(dim=(2, 3), keepdim=True)
        y = (centered * torch.rsqrt(var + self.eps)).reshape(shape)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y


def delegate_layernorm_(model: nn.Module) -> int:
    """Swap every last-dim nn.LayerNorm (in place); returns how many were swapped."""
    n = 0
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.LayerNorm) and len(mod.normalized_shape) == 1:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, XnnpackLayerNorm(mod))
            n += 1
    return n
