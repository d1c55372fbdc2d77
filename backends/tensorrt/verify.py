"""Checks of an exported ONNX on this host: structure TensorRT 8.5 accepts, and onnxruntime numerics.

The structural check is what TensorRT's explicit-quantization rules need and its 8.5 parser
allows; onnxruntime (CPU) then runs the Q/DQ graph with real INT8 QuantizeLinear arithmetic so
its predictions can be compared with the PyTorch simulator's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from lraqvit_deploy.errors import ToleranceError

from .onnx_export import INPUT_NAME, MAX_OPSET, opset_of

# Ops TensorRT 8.5's ONNX parser has no importer for, that torch can emit for a ViT.
TRT85_UNSUPPORTED = {"LayerNormalization", "GroupNormalization", "Gelu", "Attention", "RotaryEmbedding",
                     "DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul", "ConvInteger", "QLinearConv"}
ENCODER_SCOPES = ("blocks.",)  # transformer blocks (Swin: layers.i/blocks.j); patch merging is between them


@dataclass
class StructureReport:
    opset: int
    n_nodes: int
    ops: Dict[str, int]
    qdq_matmuls: List[str]  # weight MatMul/Gemm nodes with Q/DQ on both inputs
    float_matmuls: List[str]  # encoder MatMul/Gemm with a weight input but no Q/DQ
    problems: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _in_encoder(node_name: str) -> bool:
    return any(part.startswith(ENCODER_SCOPES) for part in node_name.split("/"))


def check_structure(proto, expected_qdq_matmuls: Optional[int] = None, max_opset: int = MAX_OPSET,
                    require_qdq: bool = True) -> StructureReport:
    """Opset, op set and Q/DQ placement of an ONNX model for TensorRT 8.5/10/11.

    Rules: opset <= 17, default domain only, no op the 8.5 parser rejects; every encoder
    MatMul/Gemm with a weight input has DequantizeLinear on both inputs; every Q/DQ is
    symmetric INT8 (zero point 0) with strictly positive scales, scalar for activations and
    1-D along the output channel for weights. `require_qdq=False` checks an FP32/FP16 export.
    """
    from onnx import numpy_helper

    g = proto.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:  # Constant nodes count as initializers here
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            inits[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    producer = {o: n for n in g.node for o in n.output}
    ops: Dict[str, int] = {}
    for n in g.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    problems: List[str] = []
    opset = opset_of(proto)
    if opset > max_opset:
        problems.append(f"opset {opset} > {max_opset} (TensorRT 8.5 parses opsets up to 17)")
    for domain in {o.domain for o in proto.opset_import} - {"", "ai.onnx"}:
        problems.append(f"custom op domain {domain!r}: TensorRT has no importer for it")
    for op in sorted(TRT85_UNSUPPORTED & set(ops)):
        problems.append(f"{ops[op]} x {op}: not parsed by TensorRT 8.5")

    def const_source(name: str) -> Optional[str]:
        """The initializer a tensor comes from through Transpose/Q/DQ/Cast, if any."""
        seen = 0
        while name not in inits and name in producer and seen < 4:
            p = producer[name]
            if p.op_type not in ("Transpose", "QuantizeLinear", "DequantizeLinear", "Cast", "Identity"):
                return None
            name, seen = p.input[0], seen + 1
        return name if name in inits else None

    qdq, floats = [], []
    for n in g.node:
        if n.op_type not in ("MatMul", "Gemm"):
            continue
        a, b = n.input[0], n.input[1]
        if const_source(a) is None and const_source(b) is None:
            continue  # activation x activation (attention scores, attn @ v): float, as in the simulator
        dq = [producer.get(t) is not None and producer[t].op_type == "DequantizeLinear" for t in (a, b)]
        if all(dq):
            qdq.append(n.name)
        elif _in_encoder(n.name):
            floats.append(n.name)
            if require_qdq:
                problems.append(f"{n.name}: encoder {n.op_type} without DequantizeLinear on "
                                f"{'both inputs' if not any(dq) else 'input ' + str(dq.index(False))}")
    for n in g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale = inits.get(n.input[1])
        zp = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if scale is None:
            problems.append(f"{n.name}: scale is not a constant (TensorRT needs static scales)")
            continue
        if not np.all(scale > 0):
            problems.append(f"{n.name}: scales must be strictly positive (TensorRT #4527)")
        if zp is None or zp.dtype != np.int8 or np.any(zp != 0):
            problems.append(f"{n.name}: zero point must be int8 zeros (TensorRT quantization is symmetric)")
        weight = const_source(n.input[0]) is not None
        if scale.ndim > 1 or (not weight and scale.size != 1):
            problems.append(f"{n.name}: activation scales must be per-tensor, weight scales 1-D")
    if expected_qdq_matmuls is not None and len(qdq) != expected_qdq_matmuls:
        problems.append(f"{len(qdq)} MatMul/Gemm carry Q/DQ, expected {expected_qdq_matmuls} (one per QuantLinear)")
    return StructureReport(opset, len(g.node), ops, qdq, floats, problems)


def ort_session(path: Path, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_logits(session, x: np.ndarray) -> np.ndarray:
    want = session.get_inputs()[0].type
    x = x.astype(np.float16 if "float16" in want else np.float32)
    return session.run(None, {INPUT_NAME: x})[0].astype(np.float32)


def compare_predictions(model, onnx_path: Path, ds, batch_size: int = 50, threads: int = 1,
                        progress: bool = True, twin=None) -> Dict[str, float]:
    """Top-1 of the torch model and of the ONNX on `ds`, and their prediction agreement (0-1).

    `twin`: the same model computed in another float order (e.g. unfused attention); its
    agreement with `model` is the floor any re-implementation can reach, because a per-tensor
    INT8 ViT amplifies a last-bit difference that flips one rounding into different logits.
    """
    import torch
    from tqdm import tqdm

    from lraqvit_deploy.data import make_loader

    sess = ort_session(onnx_path, threads)
    ref, got, labels, twins = [], [], [], []
    model.eval()
    with torch.no_grad():
        for x, y in tqdm(make_loader(ds, batch_size), desc=f"verify {Path(onnx_path).name}", disable=not progress,
                         leave=False):
            ref.append(model(x).argmax(-1).numpy())
            if twin is not None:
                twins.append(twin(x).argmax(-1).numpy())
            got.append(ort_logits(sess, x.numpy()).argmax(-1))
            labels.append(np.asarray(y))
    ref_a, got_a, lab = np.concatenate(ref), np.concatenate(got), np.concatenate(labels)
    out = {"agreement": float((ref_a == got_a).mean()), "top1": float(100 * (got_a == lab).mean()),
           "top1_torch": float(100 * (ref_a == lab).mean()), "n_images": int(len(lab))}
    if twin is not None:
        out["twin_agreement"] = float((ref_a == np.concatenate(twins)).mean())
    return out


def require_agreement(result: Dict[str, float], minimum: float, what: str) -> None:
    if result["agreement"] < minimum:
        raise ToleranceError(f"{what}: onnxruntime agrees with the PyTorch simulator on only "
                             f"{100 * result['agreement']:.2f}% of predictions (< {100 * minimum:.1f}%). The "
                             "export is wrong; lower --min-agreement only to inspect the output.")


def ort_latency_ms(path: Path, input_shape: Tuple[int, ...], iterations: int = 20, warmup: int = 3,
                   threads: int = 1) -> Dict[str, float]:
    """onnxruntime CPU latency of one batch-1 inference (median/p90/...) on this host."""
    import time

    from lraqvit_deploy.benchmark import summarize

    sess = ort_session(path, threads)
    x = np.random.default_rng(0).standard_normal((1, *input_shape)).astype(np.float32)
    for _ in range(warmup):
        ort_logits(sess, x)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        ort_logits(sess, x)
        times.append(1e3 * (time.perf_counter() - t0))
    return summarize(times)
