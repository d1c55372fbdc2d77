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
from lraqvit_deploy.measure.closeness import compare_logits, gate_problems

from lraqvit_deploy.jetson.engine import LN_TAG
from .onnx_export import INPUT_NAME, MAX_OPSET, opset_of

# Ops TensorRT 8.5's ONNX parser has no importer for, that torch can emit for a ViT.
TRT85_UNSUPPORTED = {"LayerNormalization", "GroupNormalization", "Gelu", "Attention", "RotaryEmbedding",
                     "DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul", "ConvInteger", "QLinearConv"}
ENCODER_SCOPES = ("blocks.",)  # transformer blocks (Swin: layers.i/blocks.j); patch merging is between them
# Linears inside a block that are not encoder layers and stay float, like the attention scores they act on:
# CaiT's talking-heads mixing (attn.proj_l / attn.proj_w, heads x heads weights on the scores).
FLOAT_SCOPES = ("proj_l", "proj_w")


@dataclass
class StructureReport:
    opset: int
    n_nodes: int
    ops: Dict[str, int]
    qdq_matmuls: List[str]  # weight MatMul/Gemm nodes with Q/DQ on both inputs
    float_matmuls: List[str]  # encoder MatMul/Gemm with a weight input but no Q/DQ
    problems: List[str] = field(default_factory=list)
    int8_weights: int = 0  # weight DequantizeLinear fed by an int8 initializer (the stored form)
    float_weights: int = 0  # weight DequantizeLinear fed by QuantizeLinear of an FP32 initializer
    layernorms: int = 0  # decomposed LayerNorms found
    layernorm_tagged: int = 0  # of those, with engine.LN_TAG in every node name

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _in_encoder(node_name: str) -> bool:
    parts = node_name.split("/")
    return any(p.startswith(ENCODER_SCOPES) for p in parts) and not any(p in FLOAT_SCOPES for p in parts)


def weight_axis(op: str, input_index: int, rank: int, trans_b: int = 0) -> Optional[int]:
    """The output-channel axis of a weight feeding `op` at `input_index`, i.e. where per-channel scales go.

    MatMul `y = x @ B`, B (..., K, N): N, the last axis (1 for our 2-D (in, out) weights, the
    transposed Linear weight). Gemm B: (K, N) -> 1, or (N, K) with transB=1 -> 0. The same map as
    NVIDIA Model-Optimizer's real-weight conversion (`modelopt/onnx/quantization/qdq_utils.py`).
    None for an input that is not a weight operand (MatMul/Gemm input A).
    """
    if input_index != 1:
        return None
    if op == "Gemm":
        return 0 if trans_b else 1
    return rank - 1


def check_structure(proto, expected_qdq_matmuls: Optional[int] = None, max_opset: int = MAX_OPSET,
                    require_qdq: bool = True, int8_weights: Optional[bool] = None) -> StructureReport:
    """Opset, op set and Q/DQ placement of an ONNX model for TensorRT 8.5/10/11.

    Rules: opset <= 17, default domain only, no op the 8.5 parser rejects; every encoder
    MatMul/Gemm with a weight input has DequantizeLinear on both inputs; every Q/DQ is
    symmetric INT8 (zero point int8 0) with strictly positive scales, scalar for activations;
    each weight DequantizeLinear is per output channel: its `axis` is the weight's output-channel
    axis (`weight_axis`: 1 for the exported (in, out) MatMul weight), its scale and zero point are
    1-D of that axis' length, and its int8 weights lie in [-127, 127] (TensorRT's weight range).
    `int8_weights=True` also requires weights stored as int8 initializers (int8 -> DQ, no Q;
    what `onnx_export.int8_weights` writes), None accepts both forms. An FP16 graph (FP16 input)
    must compute every LayerNorm in FP32 (behind a Cast), which strongly typed engines need.
    `require_qdq=False` checks an FP32/FP16 export.
    """
    from onnx import helper, numpy_helper

    from .onnx_export import find_layernorms

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

    def attrs(node) -> Dict[str, Any]:
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

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
    n_int8 = n_float = 0
    for n in g.node:
        if n.op_type not in ("MatMul", "Gemm"):
            continue
        a, b = n.input[0], n.input[1]
        if const_source(a) is None and const_source(b) is None:
            continue  # activation x activation (attention scores, attn @ v): float, as in the simulator
        dq = [producer.get(t) is not None and producer[t].op_type == "DequantizeLinear" for t in (a, b)]
        if not all(dq):
            if _in_encoder(n.name):
                floats.append(n.name)
                if require_qdq:
                    problems.append(f"{n.name}: encoder {n.op_type} without DequantizeLinear on "
                                    f"{'both inputs' if not any(dq) else 'input ' + str(dq.index(False))}")
            continue
        qdq.append(n.name)
        widx = 1 if const_source(b) is not None else 0
        wdq = producer[n.input[widx]]
        src = wdq.input[0]
        if src in inits:  # the stored form: int8 initializer -> DequantizeLinear
            w = inits[src]
            if w.dtype != np.int8:
                problems.append(f"{wdq.name}: weight initializer is {w.dtype}, DequantizeLinear needs int8")
                continue
            n_int8 += 1
            if w.size and int(w.min()) < -127:
                problems.append(f"{wdq.name}: int8 weight -128 found; TensorRT's INT8 weight range is [-127, 127]")
        elif src in producer and producer[src].op_type == "QuantizeLinear" and producer[src].input[0] in inits:
            w = inits[producer[src].input[0]]
            n_float += 1
            if int8_weights:
                problems.append(f"{wdq.name}: FP32 weight behind QuantizeLinear; store it as an int8 initializer "
                                "(onnx_export.int8_weights)")
            q_axis = attrs(producer[src]).get("axis", 1)
            if q_axis != attrs(wdq).get("axis", 1):
                problems.append(f"{producer[src].name}: weight QuantizeLinear axis {q_axis} != its DequantizeLinear's")
        else:
            problems.append(f"{wdq.name}: weight DequantizeLinear input is neither an int8 initializer nor "
                            "QuantizeLinear(initializer)")
            continue
        if widx != 1:
            problems.append(f"{n.name}: the weight feeds input A of {n.op_type}; TensorRT's per-channel weight "
                            "quantization expects it on input B")
            continue
        scale = inits.get(wdq.input[1])
        zp = inits.get(wdq.input[2]) if len(wdq.input) > 2 and wdq.input[2] else None
        if scale is None or scale.size == 1:
            continue  # non-constant scale: reported below; per-tensor weight scale: allowed, no axis
        want = weight_axis(n.op_type, widx, w.ndim, attrs(n).get("transB", 0))
        axis = int(attrs(wdq).get("axis", 1))
        axis = axis + w.ndim if axis < 0 else axis
        if axis != want:
            problems.append(f"{wdq.name}: per-channel axis {axis}, but the output channel of this {n.op_type} "
                            f"weight {tuple(w.shape)} is axis {want}")
        elif scale.shape != (w.shape[axis],):
            problems.append(f"{wdq.name}: scale shape {scale.shape}, expected ({w.shape[axis]},) for weight "
                            f"{tuple(w.shape)} axis {axis}")
        if zp is not None and zp.shape != scale.shape:
            problems.append(f"{wdq.name}: zero point shape {zp.shape} != scale shape {scale.shape}")
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
        if not weight and n.op_type == "DequantizeLinear":
            q = producer.get(n.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                problems.append(f"{n.name}: activation DequantizeLinear not fed by a QuantizeLinear")
            elif q.input[1] in inits and not np.array_equal(inits[q.input[1]], scale):
                problems.append(f"{n.name}: activation Q/DQ pair with different scales")
    if expected_qdq_matmuls is not None and len(qdq) != expected_qdq_matmuls:
        problems.append(f"{len(qdq)} MatMul/Gemm carry Q/DQ, expected {expected_qdq_matmuls} (one per QuantLinear)")
    groups = find_layernorms(proto)
    tagged = sum(all(LN_TAG in m.name for m in grp) for grp in groups)
    fp16_graph = bool(g.input) and g.input[0].type.tensor_type.elem_type == 10  # TensorProto.FLOAT16
    if fp16_graph:  # LayerNorm's mean/variance over channels (ReduceMean, axes [-1]) must read FP32 tensors
        import onnx

        typed = onnx.shape_inference.infer_shapes(proto)
        dtype = {v.name: v.type.tensor_type.elem_type for v in (*typed.graph.value_info, *typed.graph.input)}
        dtype.update({i.name: i.data_type for i in g.initializer})
        for n in g.node:
            if n.op_type == "ReduceMean" and list(attrs(n).get("axes", [])) in ([-1],) and dtype.get(n.input[0]) != 1:
                problems.append(f"{n.name}: LayerNorm statistics of an FP16 graph not computed in FP32 (input "
                                f"dtype {dtype.get(n.input[0])}); a strongly typed engine would run them in FP16")
    return StructureReport(opset, len(g.node), ops, qdq, floats, problems, n_int8, n_float, len(groups), tagged)


def ort_session(path: Path, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # errors only: its optimizer logs every DequantizeLinear(int8 constant) it keeps
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_logits(session, x: np.ndarray) -> np.ndarray:
    want = session.get_inputs()[0].type
    x = x.astype(np.float16 if "float16" in want else np.float32)
    return session.run(None, {INPUT_NAME: x})[0].astype(np.float32)


def compare_predictions(model, onnx_path: Path, ds, batch_size: int = 50, threads: int = 1,
                        progress: bool = True, twin=None, keep_logits: bool = False) -> Dict[str, Any]:
    """The ONNX (onnxruntime) against the torch `model` on `ds`: agreement, logit closeness, top-1.

    Returns `agreement` (0-1), `sqnr_db`, `cosine_mean`, `cosine_min`, `max_abs_diff`
    (`measure.closeness.compare_logits`), `top1` (ONNX) and `top1_torch` in percent, or None when `ds` has no real
    labels (any label < 0: synthetic images), `labelled`, `n_images`. `twin`: the same model
    computed in another float order (e.g. unfused attention); its agreement with `model` is the
    floor any re-implementation can reach, because a per-tensor INT8 ViT amplifies a last-bit
    difference that flips one rounding into different logits. `keep_logits` adds the arrays.
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
            ref.append(model(x).float().numpy())
            if twin is not None:
                twins.append(twin(x).argmax(-1).numpy())
            got.append(ort_logits(sess, x.numpy()))
            labels.append(np.asarray(y))
    ref_l, got_l, lab = np.concatenate(ref), np.concatenate(got), np.concatenate(labels)
    out: Dict[str, Any] = compare_logits(got_l, ref_l, lab)  # lraqvit_deploy.measure.closeness
    out["top1_torch"] = out.pop("top1_reference")
    out["labelled"] = out["top1"] is not None
    if twin is not None:
        out["twin_agreement"] = float((ref_l.argmax(-1) == np.concatenate(twins)).mean())
    if keep_logits:
        out["logits"], out["reference_logits"], out["labels"] = got_l, ref_l, lab
    return out


# Output gates of an exported ONNX (onnxruntime) against its torch reference, per ONNX. Agreement is
# gated only on labelled images (real data); SQNR (dB, over all logits) and mean row cosine on every
# model, synthetic inputs included. Measured on this host (docs/jetson.md, "Gates"): test bed
# (12 blocks, 200 images) INT8 Q/DQ vs the per-tensor simulator 21.0 dB / cosine 0.995 / agreement
# 0.955 (synthetic inputs 22.0 dB, agreement 0.875: why agreement is not gated there), injected
# export bugs (one layer's weight scales x1.5 or x2) 4.5-7.3 dB / cosine 0.82-0.89; FP32 ONNX vs
# torch 113 dB; FP16 ONNX vs FP32 torch 53 dB (agreement 0.995). Tiny 2-block ViTs: INT8 91-139 dB.
HOST_GATES: Dict[str, Dict[str, Optional[float]]] = {
    "int8": {"min_agreement": 0.9, "min_sqnr_db": 15.0, "min_cosine": 0.98},
    "fp32": {"min_agreement": 0.99, "min_sqnr_db": 60.0, "min_cosine": 0.99999},
    "fp16": {"min_agreement": 0.98, "min_sqnr_db": 30.0, "min_cosine": 0.999},
}
# On the device the INT8 engine runs its float layers in FP16 (weak typing), FP32 engines may use
# TF32 (Ampere+; not Xavier) and TensorRT reorders float math, so the gates against the same
# references are looser. Set from the host numbers above, not yet measured on a Jetson.
DEVICE_GATES: Dict[str, Dict[str, Optional[float]]] = {
    "int8": {"min_agreement": 0.9, "min_sqnr_db": 12.0, "min_cosine": 0.97},
    "fp16": {"min_agreement": 0.98, "min_sqnr_db": 25.0, "min_cosine": 0.999},
    "fp32": {"min_agreement": 0.98, "min_sqnr_db": 30.0, "min_cosine": 0.999},
}


def gates_for(precision: str, min_agreement: Optional[float] = None, min_sqnr_db: Optional[float] = None,
              min_cosine: Optional[float] = None, table: Optional[Dict[str, Dict[str, Optional[float]]]] = None
              ) -> Dict[str, Optional[float]]:
    """`table[precision]` (default HOST_GATES) with the given overrides."""
    g = dict((table or HOST_GATES)[precision])
    for k, v in (("min_agreement", min_agreement), ("min_sqnr_db", min_sqnr_db), ("min_cosine", min_cosine)):
        if v is not None:
            g[k] = v
    return g


def require_gates(result: Dict[str, Any], gates: Dict[str, Optional[float]], what: str) -> None:
    """Raise ToleranceError naming every gate `result` (from `compare_predictions`) fails."""
    failed = gate_problems(result, gates, agreement_needs_labels=True)
    if failed:
        raise ToleranceError(f"{what}: onnxruntime vs the PyTorch reference on {result['n_images']} images: "
                             + "; ".join(failed) + ". The ONNX does not compute what the reference computes: "
                             "if the closeness gates pass and only agreement fails, the logits are near-tied "
                             "(random weights, few images: verify on more labelled images); otherwise the export "
                             "is wrong. Relax a gate (--trt-min-agreement, min_sqnr_db, min_cosine) only to "
                             "inspect the output (docs/jetson.md, 'Gates').")


def require_agreement(result: Dict[str, float], minimum: float, what: str) -> None:
    if not (result["agreement"] >= minimum):  # NaN fails
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
