"""ONNX export that TensorRT 8.5's parser accepts, and the graph clean-up every variant gets.

`torch.onnx.export(..., dynamo=False, opset_version=16)`: the TorchScript exporter at opset
16 decomposes LayerNorm into ReduceMean/Sub/Pow/Sqrt/Div (ONNX `LayerNormalization` exists
from opset 17 and the exporter emits it there, but TensorRT's parser only reads it from 8.6),
writes GELU with Erf, and exports torch's fake-quantize ops as QuantizeLinear/DequantizeLinear.
The dynamo exporter (torch's default since 2.9) targets opset 18+, which 8.5 cannot read.

Two rewrites follow the export:
  * `int8_weights`: every weight QuantizeLinear (constant FP32 input) is applied offline, so the
    graph stores the weight as an int8 initializer feeding DequantizeLinear directly (NVIDIA
    Model-Optimizer's `qdq_to_dq`, `modelopt/onnx/quantization/qdq_utils.py`). The ONNX then
    weighs about as much as the INT8 weights instead of more than the FP32 model.
  * `mark_layernorms`: the nodes of each decomposed LayerNorm get `LN_TAG` in their name, which
    TensorRT's ONNX parser copies into its layer names, so `engine.py` can keep them in FP32.
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

from lraqvit_deploy.jetson.engine import LN_TAG

MAX_OPSET = 17  # TensorRT 8.5's ONNX parser reads opsets 7..17
DEFAULT_OPSET = 16  # the highest opset at which torch still decomposes LayerNorm
INPUT_NAME, OUTPUT_NAME = "input", "logits"
# LN_TAG goes into the name of every node of a decomposed LayerNorm (ReduceMean/Sub/Pow/ReduceMean/
# Add/Sqrt/Div and the affine Mul/Add). TensorRT names each layer after its ONNX node (onnx-tensorrt
# 8.5 `ImporterContext::registerLayer`, uniquified with a `_N` suffix), so the tag reaches the network.
METADATA_LN_NODES = "lraqvit.layernorm_fp32_nodes"
METADATA_INT8_WEIGHTS = "lraqvit.int8_weight_initializers"


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
    n_int8 = int8_weights(proto)
    n_ln = mark_layernorms(proto)
    _set_metadata(proto, {METADATA_INT8_WEIGHTS: str(n_int8), METADATA_LN_NODES: str(n_ln)})
    onnx.checker.check_model(proto)
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


def _set_metadata(proto, items) -> None:
    keep = [p for p in proto.metadata_props if p.key not in items]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for k, v in items.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v


def _consumers(graph):
    out = {}
    for n in graph.node:
        for t in n.input:
            out.setdefault(t, []).append(n)
    return out


def int8_weights(proto) -> int:
    """Apply every weight QuantizeLinear offline: FP32 initializer -> Q -> DQ becomes int8 initializer -> DQ.

    `q = saturate(round_half_even(W / scale) + zero_point)` along the node's axis, exactly ONNX
    QuantizeLinear and the simulator's `round(W / w_scale)` (IEEE float32 division, ties to even),
    so onnxruntime's numbers do not change. The DequantizeLinear keeps its scale, zero point
    (int8 zeros) and axis. Activation Q/DQ pairs are left alone. Returns how many weights it
    converted; edits `proto` in place.

    TensorRT 8.5 takes this form for explicit quantization: its ONNX parser reads INT8
    initializers as kINT8 weights (onnx-tensorrt 8.5-GA `onnx2trt_utils.cpp` `convertOnnxWeights`)
    and imports DequantizeLinear on a constant input through `QuantDequantLinearHelper`
    (`builtin_op_importers.cpp`: input 0 may be any type but UINT8; the constant becomes an
    IConstantLayer feeding IDequantizeLayer), which `NvInfer.h` (release/8.5, IDequantizeLayer)
    documents as "accepts a signed 8-bit integer input tensor"; per-channel dequantization "is
    supported only for input that is rooted at an IConstantLayer (i.e. weights)".
    """
    import numpy as np
    from onnx import helper, numpy_helper

    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    consumers = _consumers(g)
    graph_outputs = {o.name for o in g.output}
    drop, done = [], 0
    for n in g.node:
        if n.op_type != "QuantizeLinear" or n.input[0] not in inits or len(n.input) < 3:
            continue
        w_name, s_name, z_name = n.input[0], n.input[1], n.input[2]
        if s_name not in inits or z_name not in inits:
            continue
        users = consumers.get(n.output[0], [])
        if n.output[0] in graph_outputs or not users or any(u.op_type != "DequantizeLinear" for u in users):
            continue
        if len(consumers.get(w_name, [])) != 1:  # a weight also read elsewhere stays FP32 (never the case here)
            continue
        w = numpy_helper.to_array(inits[w_name])
        if w.dtype not in (np.float32, np.float16):
            continue
        scale = numpy_helper.to_array(inits[s_name]).astype(w.dtype)
        zero = numpy_helper.to_array(inits[z_name])
        if zero.dtype != np.int8:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        axis = int(attrs.get("axis", 1))
        if scale.ndim == 1 and scale.size > 1:
            shape = [1] * w.ndim
            shape[axis % w.ndim] = scale.size
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        q = np.clip(np.rint(w / scale) + zero.astype(np.float32), -128, 127).astype(np.int8)
        inits[w_name].CopyFrom(numpy_helper.from_array(q, w_name))
        for u in users:
            u.input[0] = w_name
        drop.append(n)
        done += 1
    for n in drop:
        g.node.remove(n)
    return done


def _const_value(graph_inits, name):
    from onnx import numpy_helper

    return numpy_helper.to_array(graph_inits[name]) if name in graph_inits else None


def find_layernorms(proto):
    """The node groups of each decomposed LayerNorm in `proto` (a list of lists of NodeProto).

    Matches torch's opset < 17 decomposition, after constant folding:
    ReduceMean(x) -> Sub(x, mean) -> Pow(d, 2) -> ReduceMean -> Add(eps) -> Sqrt -> Div(d, .)
    and the optional affine Mul(gamma) -> Add(beta) when their other input is a constant.
    """
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    consumers = _consumers(g)

    def only(t, op):
        users = [u for u in consumers.get(t, []) if u.op_type == op]
        return users[0] if len(users) == 1 else None

    groups = []
    for m1 in g.node:
        if m1.op_type != "ReduceMean":
            continue
        x = m1.input[0]
        sub = next((u for u in consumers.get(m1.output[0], []) if u.op_type == "Sub" and list(u.input) == [x, m1.output[0]]), None)
        if sub is None:
            continue
        pow_ = only(sub.output[0], "Pow")
        div = next((u for u in consumers.get(sub.output[0], []) if u.op_type == "Div" and u.input[0] == sub.output[0]), None)
        if pow_ is None or div is None:
            continue
        m2 = only(pow_.output[0], "ReduceMean")
        add = only(m2.output[0], "Add") if m2 is not None else None
        sqrt = only(add.output[0], "Sqrt") if add is not None else None
        if sqrt is None or div.input[1] != sqrt.output[0]:
            continue
        group = [m1, sub, pow_, m2, add, sqrt, div]
        mul = only(div.output[0], "Mul")
        if mul is not None and (set(mul.input) - {div.output[0]}) <= set(inits):
            group.append(mul)
            beta = only(mul.output[0], "Add")
            if beta is not None and (set(beta.input) - {mul.output[0]}) <= set(inits):
                group.append(beta)
        groups.append(group)
    return groups


def mark_layernorms(proto) -> int:
    """Put `LN_TAG` into the name of every node of each decomposed LayerNorm; returns the node count.

    `/blocks/blocks.0/norm1/ReduceMean` becomes `/blocks/blocks.0/norm1/lraqvit_ln_fp32/ReduceMean`
    (idempotent). `engine.precision_plan` then pins the TensorRT layers named so to FP32.
    """
    count = 0
    for group in find_layernorms(proto):
        for i, n in enumerate(group):
            if LN_TAG not in n.name:
                head, _, tail = (n.name or f"{n.op_type}_{i}").rpartition("/")
                n.name = f"{head}/{LN_TAG}/{tail}" if head else f"{LN_TAG}/{tail}"
            count += 1
    return count
