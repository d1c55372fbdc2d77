"""Which Linears get quantized, and where a channel scale on their input can be folded away.

A channel scale alpha on a Linear's input means y = (alpha * W) (x / alpha): the Linear's columns
absorb alpha and the op that produces x must output x / alpha. In a pre-norm ViT block:

  qkv, fc1            x comes from LayerNorm       -> divide its weight and bias by alpha
  proj                x is attention @ v            -> divide v's output rows of qkv by alpha
  LowRankLinear.up    x is the rank-r intermediate  -> divide the rows of `down` by alpha
  fc2 (and fc2.down)  x comes from GELU             -> nothing linear to fold into ("none")

Row scaling of a producer never changes its own per-channel weight quantization (each row's
scale moves with it), so the folds of different layers commute.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional

import torch
import torch.nn as nn

from ..errors import DeployError
from ..layers.low_rank_linear import LowRankLinear
from ..layers.quant_linear import QuantLinear


@dataclass
class FoldSite:
    """The op feeding a target Linear: 'layernorm' (module), 'rows' (module's output `rows`), or 'none'."""

    kind: str
    module: Optional[nn.Module] = None
    rows: Optional[slice] = None


@dataclass
class Target:
    """One Linear to quantize: its qualified name, the module, and the op that feeds it."""

    name: str
    linear: nn.Linear
    site: FoldSite
    role: str  # qkv | proj | fc1 | fc2, with .down / .up for low-rank pairs

    @property
    def foldable(self) -> bool:
        return self.site.kind != "none"


def _norm_site(norm: nn.Module) -> FoldSite:
    if isinstance(norm, nn.LayerNorm) and norm.elementwise_affine:
        return FoldSite("layernorm", norm)
    return FoldSite("none")


def _expand(name: str, role: str, mod: nn.Module, site: FoldSite) -> Iterator[Target]:
    if isinstance(mod, QuantLinear):
        raise DeployError(f"{name} is already quantized; quantize a model only once (reload the FP32 artifact).")
    if isinstance(mod, LowRankLinear):
        yield Target(f"{name}.down", mod.down, site, f"{role}.down")
        yield Target(f"{name}.up", mod.up, FoldSite("rows", mod.down, slice(None)), f"{role}.up")
    elif isinstance(mod, nn.Linear):
        yield Target(name, mod, site, role)


def _v_site(qkv: nn.Module) -> FoldSite:
    """v's output rows of the qkv projection: proj's input channel j is qkv row 2*C + j."""
    producer = qkv.up if isinstance(qkv, LowRankLinear) else qkv
    if not isinstance(producer, nn.Linear) or producer.out_features % 3:
        return FoldSite("none")
    c = producer.out_features // 3
    return FoldSite("rows", producer, slice(2 * c, 3 * c))


def _is_block(m: nn.Module) -> bool:
    attn, mlp = getattr(m, "attn", None), getattr(m, "mlp", None)
    return (attn is not None and mlp is not None and all(hasattr(attn, a) for a in ("qkv", "proj"))
            and all(hasattr(mlp, a) for a in ("fc1", "fc2")) and hasattr(m, "norm1") and hasattr(m, "norm2"))


def find_targets(model: nn.Module) -> List[Target]:
    """Every encoder-block Linear (qkv, proj, fc1, fc2; both halves of a LowRankLinear), in forward order."""
    out: List[Target] = []
    for bname, block in model.named_modules():
        if not _is_block(block):
            continue
        attn, mlp = block.attn, block.mlp
        out += _expand(f"{bname}.attn.qkv", "qkv", attn.qkv, _norm_site(block.norm1))
        out += _expand(f"{bname}.attn.proj", "proj", attn.proj, _v_site(attn.qkv))
        out += _expand(f"{bname}.mlp.fc1", "fc1", mlp.fc1, _norm_site(block.norm2))
        mid = getattr(mlp, "norm", None)
        out += _expand(f"{bname}.mlp.fc2", "fc2", mlp.fc2, _norm_site(mid) if mid is not None else FoldSite("none"))
    return out


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
