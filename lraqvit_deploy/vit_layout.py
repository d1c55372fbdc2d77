"""Where the compressible Linears sit in a timm ViT-family model, and what feeds each.

Every encoder block (`blocks.N` in ViT/DeiT/DINOv2/SigLIP/EVA/BEiT/CaiT, `layers.S.blocks.N` in
Swin, `transformers.S.blocks.N` in PiT) holds four Linears, one per role; Swin's patch merging adds
an optional fifth (LRA-QViT §3.1: patch embedding and head stay dense, and so do SigLIP's
attention-pool head and CaiT's class-attention blocks, which are not `blocks.N`):

  role        path              fed by (where a channel scale on its input folds, WADS §3.3)
  qkv         attn.qkv          norm1 (LayerNorm)          -> divide its weight and bias
  proj        attn.proj         attention @ v              -> divide v's output rows of qkv
                                (EVA's attn.norm if set)   -> divide its weight and bias
  fc1         mlp.fc1           norm2 (LayerNorm)          -> divide its weight and bias
  fc2         mlp.fc2           GELU / SwiGLU (or mlp.norm if any)  -> nothing linear: "none"
  reduction   downsample.reduction (Swin, optional)  downsample.norm (LayerNorm)

Post-norm blocks (Swin V2, EVA's post-norm variant: `x + norm1(attn(x))`) feed qkv and fc1 with
the residual stream itself, and Swin V2's patch merging normalises after its reduction: those
inputs have no producer to fold into ("none"). EVA-02, BEiT and Swin V2 attention is first
rewritten to a real `qkv` Linear (`models.attention`), EVA-02's two-Linear SwiGLU to one `fc1`
(`models.swiglu`), so these slots exist for every supported family.

and, once a layer is a `LowRankLinear`, its `up` is fed by the rows of its own `down`.
`FoldSite` names that producer; row scaling of a producer never changes its own per-channel
weight quantization (each row's scale moves with it), so the folds of different layers commute.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch.nn as nn

from .errors import DeployError

ROLES = ("qkv", "proj", "fc1", "fc2")
ROLE_PATHS = {"qkv": "attn.qkv", "proj": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
REDUCTION = "reduction"  # Swin's patch merging, `downsample.reduction`

_BLOCK = re.compile(r"(^|\.)blocks\.\d+$")
_IN_ENCODER = re.compile(r"(^|\.)(blocks\.\d+|downsample)\.")


@dataclass
class FoldSite:
    """The op feeding a Linear: 'layernorm' (module), 'rows' (module's output `rows`), or 'none'."""

    kind: str
    module: Optional[nn.Module] = None
    rows: Optional[slice] = None


@dataclass
class EncoderLinear:
    """One encoder Linear: its qualified name, the module, the op that feeds it, and its role."""

    name: str
    linear: nn.Module
    site: FoldSite
    role: str  # qkv | proj | fc1 | fc2 | reduction, with .down / .up for the halves of a low-rank pair

    @property
    def foldable(self) -> bool:
        return self.site.kind != "none"


def encoder_blocks(model: nn.Module) -> Dict[str, nn.Module]:
    """`{name: block}` of the encoder blocks, in forward order."""
    return {n: m for n, m in model.named_modules() if _BLOCK.search(n)}


def check_replaceable(model: nn.Module) -> None:
    """Refuse, in one line, a model whose attention still reads `qkv.weight` directly.

    `models.create_model` rewrites timm's EVA, BEiT and Swin V2 attention (separate q/v biases,
    `F.linear(x, qkv.weight, cat(q_bias, 0, v_bias))`) into a real `qkv` Linear; any other module
    that keeps separate biases would fail deep inside its forward pass once `qkv` is replaced.
    """
    from .models.attention import has_separate_qkv_bias
    from .models.families import supported_list

    for name, block in encoder_blocks(model).items():
        attn = getattr(block, "attn", None)
        if getattr(attn, "qkv", None) is None and isinstance(getattr(attn, "q_proj", None), nn.Module):
            raise DeployError(
                f"{name}.attn ({type(attn).__name__}) projects q, k and v with separate Linears (e.g. grouped-query "
                f"attention, k/v narrower than q), so it has no qkv slot and would stay dense; create_model stacks "
                f"EVA-02's equal-width q/k/v_proj into qkv, other such attention is not supported. "
                f"Supported: {supported_list()}.")
        if has_separate_qkv_bias(attn):
            raise DeployError(
                f"{name}.attn ({type(attn).__name__}) computes qkv from qkv.weight with separate q/v biases, so its "
                f"qkv cannot be replaced by a low-rank or INT8 layer; timm's EVA, BEiT and Swin V2 are rewritten to a "
                f"real qkv Linear by lraqvit_deploy.create_model (or lraqvit_deploy.models.standard_layout_ for a "
                f"model built otherwise), other such attention is not supported. Supported: {supported_list()}.")


def is_encoder_linear(name: str, module: nn.Module) -> bool:
    """True for a Linear inside an encoder block or a Swin patch merging (not patch embedding or head)."""
    return isinstance(module, nn.Linear) and _IN_ENCODER.search(name) is not None


# blocks computing `x + norm1(attn(x))`, `x + norm2(mlp(x))`: qkv and fc1 read the residual stream itself
_POST_NORM_BLOCKS = ("SwinTransformerV2Block", "SwinTransformerV2CrBlock", "EvaBlockPostNorm")


def _post_norm(block: nn.Module) -> bool:
    return type(block).__name__ in _POST_NORM_BLOCKS


def _reduction_site(downsample: nn.Module) -> FoldSite:
    """Swin (v1) and Swin V2-Cr normalise before the reduction; Swin V2's PatchMerging after it."""
    if type(downsample).__module__.endswith(".swin_transformer_v2"):
        return FoldSite("none")
    return _norm_site(getattr(downsample, "norm", None))


def _proj_site(attn: Optional[nn.Module]) -> FoldSite:
    """proj reads attention @ v, unless EVA's inner norm (`scale_attn_inner`) or its gate comes between."""
    if getattr(attn, "gate", None) is not None:
        return FoldSite("none")
    norm = getattr(attn, "norm", None)
    if isinstance(norm, nn.Module) and not isinstance(norm, nn.Identity):
        return _norm_site(norm)
    return _v_site(getattr(attn, "qkv", None))


def _norm_site(norm: Optional[nn.Module]) -> FoldSite:
    if isinstance(norm, nn.LayerNorm) and norm.elementwise_affine:
        return FoldSite("layernorm", norm)
    return FoldSite("none")


def _v_site(qkv: Optional[nn.Module]) -> FoldSite:
    """v's output rows of the qkv projection: proj's input channel j is qkv row 2*C + j."""
    from .layers.low_rank_linear import LowRankLinear

    producer = qkv.up if isinstance(qkv, LowRankLinear) else qkv
    if not isinstance(producer, nn.Linear) or producer.out_features % 3:
        return FoldSite("none")
    c = producer.out_features // 3
    return FoldSite("rows", producer, slice(2 * c, 3 * c))


def _get(module: nn.Module, path: str) -> Optional[nn.Module]:
    for part in path.split("."):
        module = getattr(module, part, None)
        if not isinstance(module, nn.Module):
            return None
    return module


def _block_layers(name: str, block: nn.Module, roles: Sequence[str]) -> Iterator[EncoderLinear]:
    attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
    post = _post_norm(block)
    feeds = {"qkv": lambda: FoldSite("none") if post else _norm_site(getattr(block, "norm1", None)),
             "proj": lambda: _proj_site(attn),
             "fc1": lambda: FoldSite("none") if post else _norm_site(getattr(block, "norm2", None)),
             "fc2": lambda: _norm_site(getattr(mlp, "norm", None))}
    for role in ROLES:
        mod = _get(block, ROLE_PATHS[role])
        if role in roles and mod is not None:
            yield EncoderLinear(f"{name}.{ROLE_PATHS[role]}", mod, feeds[role](), role)


def encoder_layers(model: nn.Module, roles: Sequence[str] = ROLES,
                   include_downsample: bool = False) -> List[EncoderLinear]:
    """Every module in a compressible slot (`roles` of each block; Swin's reduction if asked), in forward order.

    The module is whatever sits there now: a dense `nn.Linear`, a `LowRankLinear`, a `QuantLinear`...
    """
    out: List[EncoderLinear] = []
    for name, m in model.named_modules():
        if _BLOCK.search(name):
            out += _block_layers(name, m, roles)
        elif include_downsample and name.endswith("downsample") and isinstance(getattr(m, REDUCTION, None), nn.Module):
            out.append(EncoderLinear(f"{name}.{REDUCTION}", m.reduction, _reduction_site(m), REDUCTION))
    return out


def encoder_linears(model: nn.Module, roles: Sequence[str] = ROLES,
                    include_downsample: bool = False) -> Dict[str, nn.Linear]:
    """`{name: Linear}` of the still-dense encoder Linears (exactly `nn.Linear`), in forward order."""
    return {t.name: t.linear for t in encoder_layers(model, roles, include_downsample) if type(t.linear) is nn.Linear}


def _expand(t: EncoderLinear) -> Iterator[EncoderLinear]:
    from .layers.low_rank_linear import LowRankLinear
    from .layers.quant_linear import QuantLinear

    mod = t.linear
    if isinstance(mod, QuantLinear):
        raise DeployError(f"{t.name} is already quantized; quantize a model only once (reload the FP32 artifact).")
    if isinstance(mod, LowRankLinear):
        yield EncoderLinear(f"{t.name}.down", mod.down, t.site, f"{t.role}.down")
        yield EncoderLinear(f"{t.name}.up", mod.up, FoldSite("rows", mod.down, slice(None)), f"{t.role}.up")
    elif isinstance(mod, nn.Linear):
        yield t


def quantizable_linears(model: nn.Module) -> List[EncoderLinear]:
    """Every encoder-block nn.Linear to quantize (both halves of a LowRankLinear), with its fold site."""
    return [e for t in encoder_layers(model) for e in _expand(t)]


def linear_shapes(linears: Dict[str, nn.Module]) -> Dict[str, Tuple[int, int]]:
    """`{name: (in_features, out_features)}`: the SDK's one shape convention, nn.Linear's argument order."""
    return {n: (m.in_features, m.out_features) for n, m in linears.items()}


__all__ = ["ROLES", "ROLE_PATHS", "REDUCTION", "FoldSite", "EncoderLinear", "encoder_blocks", "is_encoder_linear",
           "encoder_layers", "encoder_linears", "quantizable_linears", "linear_shapes"]


@contextlib.contextmanager
def unfused_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily set timm's per-module `fused_attn` to False (the explicit q @ k.T / softmax / @ v that
    exporters lower whole; `F.scaled_dot_product_attention` leaves `where`/`any` ops outside XNNPACK)."""
    mods = [m for m in model.modules() if hasattr(m, "fused_attn")]
    saved = [m.fused_attn for m in mods]
    for m in mods:
        m.fused_attn = False
    try:
        yield model
    finally:
        for m, v in zip(mods, saved):
            m.fused_attn = v
