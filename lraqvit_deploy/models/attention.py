"""Attention with a real `qkv` Linear: EVA / EVA-02, BEiT (v1, v2) and Swin V2 rewritten exactly.

timm's `EvaAttention`, BEiT's `Attention` and Swin V2's `WindowAttention` keep the query and value
biases apart from the projection (the key has none) and compute

    qkv = F.linear(x, self.qkv.weight, torch.cat((q_bias, k_bias, v_bias)))   # k_bias: zeros

whenever `q_bias` is set, else `qkv = self.qkv(x)`. `fold_qkv_bias_` moves the concatenated bias
into `qkv.bias` and clears `q_bias` / `k_bias` / `v_bias`, so timm's own forward takes its plain
`self.qkv(x)` branch. EVA-02 base / large (`qkv_fused=False`) project with three Linears
`q_proj`, `k_proj` (no bias), `v_proj`; they are stacked into the same `qkv` (EvaAttention uses
`qkv` whenever it is set). Either way: the same numbers in FP32 (one matmul plus the same bias), and `qkv` is now an
ordinary module slot that a `LowRankLinear` or `QuantLinear` can fill. Everything after the
projection stays timm's code: EVA-02's rotary embedding (RoPE), BEiT's relative position bias,
Swin V2's scaled cosine attention and its log-spaced continuous position bias (`cpb_mlp`).

Weights in timm's own layout (checkpoints) are loaded before the rewrite (`models.factory`); an
artifact is rebuilt through the same rewrite, so its saved `qkv.bias` fits.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn as nn

_BIASES = ("q_bias", "k_bias", "v_bias")


def _separate_bias_types() -> Tuple[type, ...]:
    """timm's attention classes whose forward falls back to `self.qkv(x)` when `q_bias` is None."""
    from timm.models.beit import Attention as BeitAttention
    from timm.models.eva import EvaAttention
    from timm.models.swin_transformer_v2 import WindowAttention as SwinV2WindowAttention

    return EvaAttention, BeitAttention, SwinV2WindowAttention


def has_separate_qkv_bias(module: nn.Module) -> bool:
    """True when `module` adds its own q/v biases to `qkv.weight` instead of calling `qkv`."""
    return isinstance(module, nn.Module) and any(getattr(module, b, None) is not None for b in ("q_bias", "v_bias"))


@torch.no_grad()
def fold_qkv_bias_(model: nn.Module) -> List[str]:
    """Give every separate-bias attention of `model` a `qkv` Linear with bias `cat(q_bias, 0, v_bias)`, in place.

    Returns the names of the rewritten attention modules. An attention of another class that also
    keeps separate biases is left alone (`vit_layout.check_replaceable` refuses it by name).
    """
    from timm.models.eva import EvaAttention

    kinds = _separate_bias_types()
    done = []
    for name, attn in model.named_modules():
        if type(attn) is EvaAttention and attn.qkv is None and isinstance(attn.q_proj, nn.Linear):
            _stack_qkv_(attn)
            done.append(name)
            continue
        if not isinstance(attn, kinds) or not has_separate_qkv_bias(attn):
            continue
        old = attn.qkv
        if not isinstance(old, nn.Linear) or old.bias is not None:
            continue
        q, v = attn.q_bias, attn.v_bias
        k = attn.k_bias if attn.k_bias is not None else torch.zeros_like(q)
        qkv = nn.Linear(old.in_features, old.out_features, bias=True, device=old.weight.device, dtype=old.weight.dtype)
        qkv.weight.copy_(old.weight)
        qkv.bias.copy_(torch.cat((q, k, v)))
        qkv.weight.requires_grad_(old.weight.requires_grad)
        qkv.bias.requires_grad_(q.requires_grad)
        attn.qkv = qkv
        for b in _BIASES:
            setattr(attn, b, None)  # a registered Parameter / buffer set to None leaves the state dict
        if hasattr(attn, "qkv_bias_separate"):
            attn.qkv_bias_separate = False
        done.append(name)
    return done


def _stack_qkv_(attn: nn.Module) -> None:
    """EvaAttention's `q_proj`, `k_proj`, `v_proj` -> one `qkv` Linear (rows q, k, v; k's bias zero)."""
    projs = (attn.q_proj, attn.k_proj, attn.v_proj)
    w = torch.cat([p.weight for p in projs])
    has_bias = any(p.bias is not None for p in projs)
    qkv = nn.Linear(w.shape[1], w.shape[0], bias=has_bias, device=w.device, dtype=w.dtype)
    qkv.weight.copy_(w)
    if has_bias:
        qkv.bias.copy_(torch.cat([p.bias if p.bias is not None else torch.zeros_like(p.weight[:, 0]) for p in projs]))
    attn.qkv = qkv
    attn.q_proj = attn.k_proj = attn.v_proj = None


__all__ = ["fold_qkv_bias_", "has_separate_qkv_bias"]
