"""onnx_export: int8 weight initializers (no weight QuantizeLinear), size, LayerNorm tagging."""
import copy

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from conftest import make_tiny
from lraqvit_deploy.backends.tensorrt import onnx_export, qdq, verify
from lraqvit_deploy.jetson import engine
from lraqvit_deploy.backends.tensorrt.onnx_export import export_onnx


def _per_tensor(model, size=32):
    sim, _ = qdq.engine_model(model, torch.randn(16, 3, size, size, generator=torch.Generator().manual_seed(2)))
    return sim


def test_weights_are_int8_initializers_bit_exact_with_the_simulator(tmp_path, tiny_vit):
    sim = _per_tensor(tiny_vit)
    proto = onnx.load(str(export_onnx(qdq.to_qdq_export(sim), tmp_path / "q.onnx", (3, 32, 32))))
    inits = {i.name: i for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    weight_dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert len(weight_dq) == len(qdq.quant_linears(sim)) == 8
    for n in weight_dq:  # int8 initializer -> DequantizeLinear, per-channel along the output axis
        assert inits[n.input[0]].data_type == onnx.TensorProto.INT8 and n.input[0] not in producer
        assert {a.name: a.i for a in n.attribute}["axis"] == 1
    for name, ql in qdq.quant_linears(sim).items():
        stored = numpy_helper.to_array(inits[f"{name}.weight_t"])
        want = torch.clamp(torch.round(ql.linear.weight / ql.w_scale[:, None]), -128, 127).to(torch.int8).t().numpy()
        assert stored.dtype == np.int8 and np.array_equal(stored, want), name
        assert stored.min() >= -127  # scale = max|W|/127: TensorRT's weight range is never left
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] in inits for n in proto.graph.node)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta[onnx_export.METADATA_INT8_WEIGHTS] == "8"


def test_qdq_onnx_weighs_about_the_int8_weights(tmp_path):
    """A tiny ViT whose encoder dominates (like DeiT-B): Q/DQ ONNX <= 0.3 x FP32 ONNX + small overhead."""
    from lraqvit_deploy.models import ModelSpec, build_architecture

    torch.manual_seed(0)
    spec = ModelSpec("vit_tiny_patch16_224", "vit_tiny_patch16_224",
                     dict(img_size=32, patch_size=8, embed_dim=128, depth=4, num_heads=2, num_classes=10), "random")
    model = build_architecture(spec).eval()
    fp32 = export_onnx(model, tmp_path / "f.onnx", (3, 32, 32)).stat().st_size
    sim = _per_tensor(model)
    q = export_onnx(qdq.to_qdq_export(sim), tmp_path / "q.onnx", (3, 32, 32)).stat().st_size
    assert q <= 0.3 * fp32 + 16_000, (q, fp32)
    # and precisely: the FP32 ONNX minus 3 of the 4 bytes of every quantized weight, plus scales/zero points
    w32 = sum(4 * m.linear.weight.numel() for m in qdq.quant_linears(sim).values())
    channels = sum(m.out_features for m in qdq.quant_linears(sim).values())
    assert q <= fp32 - 0.75 * w32 + 5 * channels + 16_000, (q, fp32, w32)


def test_layernorms_tagged_in_every_export_and_fp32_inside_fp16(tmp_path, tiny_vit):
    sim = _per_tensor(copy.deepcopy(tiny_vit))
    n_ln = 5  # 2 blocks x (norm1, norm2) + the final norm
    for kind, path in (("fp32", export_onnx(tiny_vit, tmp_path / "f.onnx", (3, 32, 32))),
                       ("fp16", export_onnx(tiny_vit, tmp_path / "h.onnx", (3, 32, 32), fp16=True)),
                       ("int8", export_onnx(qdq.to_qdq_export(sim), tmp_path / "q.onnx", (3, 32, 32)))):
        proto = onnx.load(str(path))
        groups = onnx_export.find_layernorms(proto)
        assert len(groups) == n_ln, kind
        assert all(engine.LN_TAG in n.name for g in groups for n in g), kind
        assert [n.op_type for n in groups[0]] == ["ReduceMean", "Sub", "Pow", "ReduceMean", "Add", "Sqrt", "Div",
                                                  "Mul", "Add"]
        rep = verify.check_structure(proto, require_qdq=kind == "int8")
        assert rep.ok and rep.layernorms == rep.layernorm_tagged == n_ln, (kind, rep.problems)
        assert onnx_export.mark_layernorms(proto) == 9 * n_ln  # idempotent: names keep one tag
        assert all(n.name.count(engine.LN_TAG) <= 1 for n in proto.graph.node)
    # the FP16 graph computes each LayerNorm in FP32 between Casts (what strongly typed engines run)
    proto = onnx.load(str(tmp_path / "h.onnx"))
    producer = {o: n for n in proto.graph.node for o in n.output}
    for g in onnx_export.find_layernorms(proto):
        cast = producer[g[0].input[0]]
        assert cast.op_type == "Cast" and cast.attribute[0].i == onnx.TensorProto.FLOAT


def test_onnxruntime_numbers_unchanged_by_int8_storage(tmp_path, monkeypatch):
    """The same Q/DQ graph with FP32 weights behind QuantizeLinear and with int8 initializers: identical logits."""
    sim = _per_tensor(make_tiny("deit"))
    new = export_onnx(qdq.to_qdq_export(sim), tmp_path / "new.onnx", (3, 32, 32))
    monkeypatch.setattr(onnx_export, "int8_weights", lambda proto: 0)
    old = export_onnx(qdq.to_qdq_export(sim), tmp_path / "old.onnx", (3, 32, 32))
    assert verify.check_structure(onnx.load(str(old))).float_weights == 8
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    a = verify.ort_logits(verify.ort_session(new), x)
    b = verify.ort_logits(verify.ort_session(old), x)
    np.testing.assert_array_equal(a, b)
    assert new.stat().st_size < 0.6 * old.stat().st_size
