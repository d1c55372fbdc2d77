"""verify.check_structure reads the weight DequantizeLinear (axis, scale/zero-point shapes, int8 storage)."""
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from lraqvit_deploy.backends.tensorrt import onnx_export, qdq, verify
from lraqvit_deploy.backends.tensorrt.onnx_export import export_onnx


@pytest.fixture
def qdq_proto(tmp_path, tiny_vit):
    sim, _ = qdq.engine_model(tiny_vit, torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(2)))
    return onnx.load(str(export_onnx(qdq.to_qdq_export(sim), tmp_path / "q.onnx", (3, 32, 32))))


def _weight_dq(proto, layer="blocks.0.mlp.fc1"):
    return next(n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == f"{layer}.weight_t")


def _init(proto, name):
    return next(i for i in proto.graph.initializer if i.name == name)


def test_weight_axis_rule():
    assert verify.weight_axis("MatMul", 1, 2) == 1  # (in, out): the transposed Linear weight
    assert verify.weight_axis("MatMul", 1, 3) == 2
    assert verify.weight_axis("Gemm", 1, 2, trans_b=1) == 0 and verify.weight_axis("Gemm", 1, 2, trans_b=0) == 1
    assert verify.weight_axis("MatMul", 0, 2) is None


def test_export_passes_and_reports_int8_storage(qdq_proto):
    rep = verify.check_structure(qdq_proto, 8, int8_weights=True)
    assert rep.ok, rep.problems
    assert rep.int8_weights == 8 and rep.float_weights == 0


def test_wrong_axis_is_caught(qdq_proto):
    dq = _weight_dq(qdq_proto)
    for a in dq.attribute:
        if a.name == "axis":
            a.i = 0  # the input channel of the (in, out) weight
    rep = verify.check_structure(qdq_proto)
    assert any("per-channel axis 0" in p and "axis 1" in p for p in rep.problems), rep.problems


def test_wrong_scale_or_zero_point_shape_is_caught(qdq_proto):
    dq = _weight_dq(qdq_proto)
    s = _init(qdq_proto, dq.input[1])
    s.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(s)[:-1].copy(), s.name))
    rep = verify.check_structure(qdq_proto)
    assert any("scale shape" in p for p in rep.problems), rep.problems
    dq2 = _weight_dq(qdq_proto, "blocks.1.attn.qkv")
    z = _init(qdq_proto, dq2.input[2])
    z.CopyFrom(numpy_helper.from_array(np.zeros(3, np.int8), z.name))
    assert any("zero point shape" in p for p in verify.check_structure(qdq_proto).problems)


def test_minus_128_and_non_int8_weights_are_caught(qdq_proto):
    w = _init(qdq_proto, "blocks.0.attn.proj.weight_t")
    a = numpy_helper.to_array(w).copy()
    a[0, 0] = -128
    w.CopyFrom(numpy_helper.from_array(a, w.name))
    assert any("[-127, 127]" in p for p in verify.check_structure(qdq_proto).problems)
    w.CopyFrom(numpy_helper.from_array(a.astype(np.int32), w.name))
    assert any("needs int8" in p for p in verify.check_structure(qdq_proto).problems)


def test_fp32_weights_behind_quantize_flagged_only_when_int8_required(tmp_path, tiny_vit, monkeypatch):
    sim, _ = qdq.engine_model(tiny_vit, torch.randn(8, 3, 32, 32))
    monkeypatch.setattr(onnx_export, "int8_weights", lambda proto: 0)
    proto = onnx.load(str(export_onnx(qdq.to_qdq_export(sim), tmp_path / "old.onnx", (3, 32, 32))))
    rep = verify.check_structure(proto, 8)
    assert rep.ok and rep.float_weights == 8 and rep.int8_weights == 0  # valid for TensorRT, just larger
    strict = verify.check_structure(proto, 8, int8_weights=True)
    assert sum("FP32 weight behind QuantizeLinear" in p for p in strict.problems) == 8


def test_fp16_layernorm_outside_fp32_is_caught(tmp_path, tiny_vit):
    """An FP16 export without the FP32 LayerNorm wrapper: a strongly typed engine would run LN in FP16."""
    m = onnx_export.prepare_for_export(tiny_vit).half()
    proto = onnx.load(str(export_onnx(m, tmp_path / "h.onnx", (3, 32, 32), fp16=True, prepared=True)))
    rep = verify.check_structure(proto, require_qdq=False)
    assert sum("not computed in FP32" in p for p in rep.problems) == 10  # 5 LayerNorms x 2 ReduceMean


def test_gates():
    from lraqvit_deploy.measure.closeness import gate_problems

    def check_gates(m, g):
        return gate_problems(m, g, agreement_needs_labels=True)

    m = {"agreement": 0.5, "sqnr_db": 30.0, "cosine_mean": 0.999, "top1": 40.0}
    g = {"min_agreement": 0.9, "min_sqnr_db": 20.0, "min_cosine": 0.99}
    assert check_gates(m, g) == ["top-1 agreement 50.00% < 90.0% (near-tie flips counted as agreeing: 0)"]
    assert check_gates({**m, "top1": None}, g) == []  # no labels (synthetic images): agreement not gated
    assert len(check_gates({**m, "sqnr_db": 10.0, "cosine_mean": 0.9}, {**g, "min_agreement": None})) == 2
    assert verify.gates_for("int8", min_sqnr_db=3.0)["min_sqnr_db"] == 3.0
    assert verify.gates_for("int8")["min_sqnr_db"] == verify.HOST_GATES["int8"]["min_sqnr_db"]


def test_host_gates_fail_on_nan_onnx_logits():
    """onnxruntime logits holding a NaN fail `require_gates` in one line, whatever the gates (NaN < x is False)."""
    import math

    from lraqvit_deploy.errors import ToleranceError

    ref = np.eye(5, dtype=np.float32) * 4
    labels = np.arange(5)
    ok = verify.compare_logits(ref + 0.01, ref, labels)
    verify.require_gates(ok, verify.gates_for("int8"), "m_qdq.onnx")  # the control
    got = ref.copy()
    got[0, 0] = math.nan
    bad = verify.compare_logits(got, ref, labels)
    for gates in (verify.gates_for("int8"), {"min_agreement": 0.0, "min_sqnr_db": 0.0, "min_cosine": -1.0}):
        with pytest.raises(ToleranceError, match=r"m_qdq.onnx: .*NaN/inf logits on 1 of 5 images") as e:
            verify.require_gates(bad, gates, "m_qdq.onnx")
        assert "\n" not in str(e.value)
    with pytest.raises(ToleranceError, match="agrees with the PyTorch simulator on only nan%"):
        verify.require_agreement({"agreement": math.nan}, 0.9, "m_qdq.onnx")
