"""Which timm model families the SDK compresses and lowers, and why the others are refused.

A family is a timm name prefix (the text before the first `_`). Supported families reduce to the
encoder-block layout of `vit_layout` (qkv, proj, fc1, fc2 Linears fed by LayerNorms), after the
exact rewrites of `models.attention` and `models.swiglu`. The refused families are named with the
reason, so a refusal says why and what is supported instead (docs/models.md has the table).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from ..errors import DeployError


@dataclass(frozen=True)
class Family:
    """One timm family: its name prefixes, a display name, and what the SDK does with it."""

    prefixes: Tuple[str, ...]
    title: str
    supported: bool
    note: str  # supported: what is rewritten or left dense; refused: why
    example: str = ""  # a timm name of the family (supported ones)
    tiny: Dict[str, Any] = field(default_factory=dict)  # timm kwargs of a one-block, width-32 instance (smoke tests)


_VIT_TINY = dict(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2)
_SWIN_TINY = dict(img_size=16, patch_size=2, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2))


FAMILIES = (
    Family(("deit",), "DeiT", True, "timm VisionTransformer; the distillation token's head stays dense",
           "deit_tiny_patch16_224", _VIT_TINY),
    Family(("deit3",), "DeiT III", True, "VisionTransformer with LayerScale", "deit3_small_patch16_224", _VIT_TINY),
    Family(("vit",), "ViT / DINOv2 / CLIP / SigLIP", True,
           "VisionTransformer; SigLIP's attention-pool head stays dense, like every head",
           "vit_base_patch16_siglip_224", _VIT_TINY),
    Family(("swin",), "Swin", True, "patch merging's reduction is an optional fifth slot",
           "swin_tiny_patch4_window7_224", _SWIN_TINY),
    Family(("swinv2",), "Swin V2", True,
           "q/v biases folded into a real qkv Linear; cosine attention and log-spaced CPB kept; post-norm "
           "blocks: qkv and fc1 have no fold site", "swinv2_tiny_window8_256", _SWIN_TINY),
    Family(("eva", "eva02"), "EVA / EVA-02", True,
           "q/v biases folded into (or q/k/v projections stacked as) a real qkv Linear; RoPE kept; SwiGLU "
           "packed into one fc1", "eva02_tiny_patch14_224", dict(_VIT_TINY, img_size=14, patch_size=7)),
    Family(("beit", "beitv2"), "BEiT", True, "q/v biases folded into a real qkv Linear; relative position bias kept",
           "beit_base_patch16_224", _VIT_TINY),
    Family(("cait",), "CaiT", True, "talking-heads blocks compressed; the class-attention blocks stay dense",
           "cait_xxs24_224", dict(_VIT_TINY, depth_token_only=1)),
    Family(("pit",), "PiT", True, "each stage's blocks compressed; the convolutional pooling stays dense",
           "pit_ti_224", dict(img_size=16, patch_size=4, stride=2, base_dims=[16, 16], depth=[1, 1], heads=[2, 2])),
    Family(("xcit",), "XCiT", False,
           "its attention is cross-covariance attention over channels with a learned temperature, and every "
           "block adds a convolutional local patch interaction, not the token-attention block layout"),
    Family(("levit",), "LeViT", False,
           "a convolutional stem and Linear+BatchNorm layers with attention biases instead of LayerNorm-fed "
           "Linears"),
    Family(("mobilevit", "mobilevitv2"), "MobileViT", False,
           "a convolutional MobileNet whose transformer inserts work on unfolded patches between 1x1 convolutions"),
    Family(("fastvit",), "FastViT", False, "convolutional RepMixer token mixing (attention only in the last stage of its SA variants)"),
    Family(("efficientformer", "efficientformerv2"), "EfficientFormer", False,
           "pooling and convolutional token mixers, with 4D attention only in late stages"),
    Family(("pvt",), "PVT v2", False,
           "spatial-reduction attention (separate q and kv Linears after a strided convolution) and a "
           "depthwise convolution inside every MLP"),
    Family(("twins",), "Twins", False,
           "locally grouped and sub-sampled (strided-convolution) attention with separate q and kv Linears"),
    Family(("mvitv2",), "MViT v2", False, "pooling attention (convolutions pool q, k and v) with channel expansion"),
    Family(("crossvit",), "CrossViT", False,
           "two branches of different patch sizes fused by cross-attention between their class tokens"),
    Family(("tnt",), "TNT", False, "inner (pixel) and outer (patch) transformers in every block"),
)


def family_of(name: str) -> Optional[Family]:
    """The family of a timm model name, by its prefix; None when the SDK does not know it."""
    prefix = name.split("_")[0]
    return next((f for f in FAMILIES if prefix in f.prefixes), None)


def supported_prefixes() -> Tuple[str, ...]:
    return tuple(p for f in FAMILIES if f.supported for p in f.prefixes)


def supported_list() -> str:
    """`DeiT (deit_), ... PiT (pit_)`: the supported families on one line, for refusals."""
    return ", ".join(f"{f.title} ({', '.join(p + '_' for p in f.prefixes)})" for f in FAMILIES if f.supported)


def check_family(name: str, testbed: str = "testbed") -> Family:
    """The supported family of `name`, or one DeployError line saying why not and what is supported."""
    fam = family_of(name)
    if fam is None:
        raise DeployError(f"model {name!r} is not a ViT-family timm model; supported: {supported_list()} "
                          f"(e.g. deit_tiny_patch16_224), or '{testbed}'.")
    if not fam.supported:
        raise DeployError(f"model {name!r} ({fam.title}) is not supported: {fam.note}. Supported: {supported_list()}.")
    return fam


__all__ = ["Family", "FAMILIES", "family_of", "supported_prefixes", "supported_list", "check_family"]
