"""ONNX export that TensorRT 8.5's parser accepts, and the graph clean-up every variant gets.

`torch.onnx.export(..., dynamo=False, opset_version=16)`: the TorchScript exporter at opset
16 decomposes LayerNorm into ReduceMean/Sub/Pow/Sqrt/Div (ONNX `LayerNormalization` exists
from opset 17 and the exporter emits it there, but TensorRT's parser only reads it from 8.6),
writes GELU with Erf, and exports torch's fake-quantize ops as QuantizeLinear/DequantizeLinear.
The dynamo exporter (torch's default since 2.9) targets opset 18+, which 8.5 cannot read.
"""
from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from lraqvit_deploy.artifacts import atomic_write
from lraqvit_deploy.errors import DeployError

MAX_OPSET = 17  # TensorRT 8.5's ONNX parser reads opsets 7..17
DEFAULT_OPSET = 16  # the highest opset at which torch still decomposes LayerNorm
INPUT_NAME, OUTPUT_NAME = "input", "logits"


class FP32LayerNorm(nn.Module):
    """LayerNorm computed in FP32 inside an FP16 graph (its variance overflows FP16 on ViT outliers)."""

    def __init__(self, ln: nn.LayerNorm):
        super().__init__()
        self.ln = copy.deepcopy(ln).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x.float()).to(x.dtype)


def prepare_for_export(model: nn.Module, fp16: bool = False) -> nn.Module:
    """An eval copy with explicit attention math (no SDPA kernel) and, for FP16, FP32 LayerNorms."""
    m = copy.deepcopy(model).eval()
    for mod in m.modules():
        if hasattr(mod, "fused_attn"):
            mod.fused_attn = False
    if fp16:
        m = m.half()
        for name, mod in list(m.named_modules()):
            if isinstance(mod, nn.LayerNorm):
                parent_name, _, child = name.rpartition(".")
                setattr(m.get_submodule(parent_name) if parent_name else m, child, FP32LayerNorm(mod))
    return m


def export_onnx(model: nn.Module, path: Path, input_shape: Sequence[int], *, opset: int = DEFAULT_OPSET,
                fp16: bool = False, dynamic_batch: bool = True, prepared: bool = False) -> Path:
    """Export `model` (FP32, FP16 or containing QDQLinear) to `path`, folded and cleaned."""
    import onnx

    if opset > MAX_OPSET:
        raise DeployError(f"opset {opset} > {MAX_OPSET}: TensorRT 8.5 (Jetson AGX Xavier) cannot parse it.")
    if opset < 13:
        raise DeployError(f"opset {opset} < 13: per-channel QuantizeLinear needs opset 13.")
    m = model if prepared else prepare_for_export(model, fp16)
    x = torch.zeros(1, *input_shape, dtype=torch.float16 if fp16 else torch.float32)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(m, (x,), buf, dynamo=False, opset_version=opset, do_constant_folding=True,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None)
    proto = cleanup(onnx.load_from_string(buf.getvalue()))
    with atomic_write(path) as f:
        f.write(proto.SerializeToString())
    return Path(path)


def cleanup(proto):
    """onnx-graphsurgeon: fold constants (never Q/DQ; gs leaves those), drop dangling nodes, sort."""
    import onnx
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(proto)
    graph.toposort()
    graph.fold_constants(error_ok=False)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    out = gs.export_onnx(graph)
    out.ir_version = proto.ir_version  # keep the exporter's IR version (older runtimes refuse newer)
    del out.opset_import[:]
    out.opset_import.extend(proto.opset_import)
    onnx.checker.check_model(out)
    return out


def opset_of(proto) -> int:
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
