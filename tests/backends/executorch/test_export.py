"""ExecuTorch/XNNPACK lowering of tiny ViTs: FP32, QuantLinear INT8 (artifact scales), PT2E INT8; host runs."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from conftest import make_tiny

executorch = pytest.importorskip("executorch.runtime")

from lraqvit_deploy.backends.executorch.export import lower_to_xnnpack  # noqa: E402
from lraqvit_deploy.backends.executorch.quant_lowering import XnnpackDynamicQuantLinear, lower_quant_linears_  # noqa
from lraqvit_deploy.backends.executorch.runtime import load_forward  # noqa: E402
from lraqvit_deploy.errors import DeployError  # noqa: E402
from lraqvit_deploy.layers.quant_linear import QuantLinear  # noqa: E402


def quantize_blocks(model: nn.Module, act_symmetric: bool = False, act_scheme: str = "per_token_dynamic"):
    """Every Linear inside the encoder blocks -> QuantLinear (the simulator), head and patch embed stay FP32."""
    for blk in model.blocks:
        for parent in (blk.attn, blk.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, QuantLinear.from_linear(child, act_scheme, act_symmetric=act_symmetric))
    return model


def run_pte(buffer: bytes, tmp_path, xs):
    path = tmp_path / "m.pte"
    path.write_bytes(buffer)
    method, _ = load_forward(path)
    return torch.cat([method.execute([x[None]])[0] for x in xs])


@pytest.fixture(scope="module")
def tiny_fp32():
    model = make_tiny("vit")
    return model, lower_to_xnnpack(model, "fp32")


def test_fp32_program_matches_pytorch_and_delegates(tiny_fp32, tmp_path):
    model, prog = tiny_fp32
    xs = torch.randn(4, *prog.input_shape[1:])
    out = run_pte(prog.buffer, tmp_path, xs)
    with torch.no_grad():
        ref = model(xs)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    rep = prog.delegation
    # after the shape passes only LayerNorm stays outside XNNPACK (ExecuTorch 1.5.1 has no LN visitor)
    assert set(rep.non_delegated_by_op) == {"native_layer_norm"}
    assert rep.delegated_by_op["linear"] >= 9 and rep.delegated_fraction > 0.9
    assert model.blocks[0].attn.fused_attn is True or not hasattr(model.blocks[0].attn, "fused_attn")


def test_shape_passes_merge_delegate_segments(tiny_fp32):
    model, prog = tiny_fp32
    plain = lower_to_xnnpack(model, "fp32", shape_passes=False)
    assert "expand_copy" in plain.delegation.non_delegated_by_op
    assert prog.delegation.segments < plain.delegation.segments


def test_quant_linear_lowering_keeps_artifact_scales():
    """Eager check of the replacement: int8 weights are round(W / w_scale) with the artifact's (non-max) scale."""
    torch.manual_seed(0)
    q = QuantLinear.from_linear(nn.Linear(32, 16), act_symmetric=False)
    q.w_scale = q.w_scale * 0.8  # a clipping scale, as a search could produce: must not be recomputed
    low = XnnpackDynamicQuantLinear.from_quant_linear(q)
    assert torch.equal(low.w_scale, q.w_scale)
    assert low.w_int8.dtype == torch.int8 and int(low.w_int8.min()) == -128  # the simulator's clamp range
    x = torch.randn(2, 5, 32)
    from lraqvit_deploy.backends.executorch.quant_lowering import _ensure_quant_ops

    _ensure_quant_ops()
    torch.testing.assert_close(low(x), q(x), atol=1e-5, rtol=1e-5)


def test_quant_linear_program_matches_simulator(tmp_path):
    model = quantize_blocks(make_tiny("vit"), act_symmetric=False)
    prog = lower_to_xnnpack(model, "q8")
    assert prog.quantization == "quant_linear"
    xs = torch.randn(8, *prog.input_shape[1:])
    out = run_pte(prog.buffer, tmp_path, xs)
    with torch.no_grad():
        ref = model(xs)
    # XNNPACK's qd8 GEMM executes the simulator's arithmetic (asymmetric per-row activations)
    torch.testing.assert_close(out, ref, atol=1e-3, rtol=1e-3)
    assert torch.equal(out.argmax(-1), ref.argmax(-1))
    assert set(prog.delegation.non_delegated_by_op) == {"native_layer_norm"}
    assert not any("quantize" in op for op in prog.delegation.non_delegated_by_op)


def test_fc2_explicit_input_scale_runs_delegated(tmp_path):
    """fc2="explicit" (WADS / SmoothQuant): the per-channel x / input_scale before fc2 runs inside XNNPACK."""
    torch.manual_seed(0)
    model = quantize_blocks(make_tiny("vit"), act_symmetric=False)
    for blk in model.blocks:  # a wide spread of channel scales, so a dropped or inverted divide shows
        blk.mlp.fc2.input_scale = torch.exp(torch.empty(blk.mlp.fc2.in_features).uniform_(-2.0, 2.0))
    prog = lower_to_xnnpack(model, "q8")
    xs = torch.randn(8, *prog.input_shape[1:])
    out = run_pte(prog.buffer, tmp_path, xs)
    with torch.no_grad():
        ref = model(xs)
        for blk in model.blocks:
            blk.mlp.fc2.input_scale = torch.ones(0)
        without = model(xs)
    torch.testing.assert_close(out, ref, atol=1e-3, rtol=1e-3)
    assert (without - ref).abs().max() > 100 * (out - ref).abs().max()  # the scales matter
    assert set(prog.delegation.non_delegated_by_op) == {"native_layer_norm"}
    divides = sum(n for op, n in prog.delegation.delegated_by_op.items() if op.split(".")[0] == "div")
    assert divides >= len(model.blocks)  # one x / input_scale per fc2, inside the delegate


def test_static_quant_scheme_is_refused():
    model = quantize_blocks(make_tiny("vit"), act_symmetric=True, act_scheme="per_tensor_static")
    with pytest.raises(DeployError, match="per_token_dynamic"):
        lower_to_xnnpack(model, "q8")
    with pytest.raises(DeployError, match="--precision q8"):
        lower_to_xnnpack(quantize_blocks(make_tiny("vit")), "fp32")


def test_pt2e_dynamic_int8_of_fp32_model(tiny_fp32, tmp_path):
    model, fp32 = tiny_fp32
    prog = lower_to_xnnpack(model, "q8")
    assert prog.quantization == "pt2e_dynamic"
    assert len(prog.buffer) < 0.6 * len(fp32.buffer)  # int8 weights
    xs = torch.randn(4, *prog.input_shape[1:])
    out = run_pte(prog.buffer, tmp_path, xs)
    with torch.no_grad():
        ref = model(xs)
    # quantization error, not a lowering error: close in relative terms
    assert (out - ref).norm() / ref.norm() < 0.1


def _build(model, out, **kw):
    from lraqvit_deploy.backends.base import BuildData
    from lraqvit_deploy.backends.executorch.backend import AndroidBackend, AndroidBuildOptions

    opts = AndroidBuildOptions(**{"verify_images": 16, "progress": False, **kw})
    return AndroidBackend().build(model, out, opts, BuildData(model)).manifest


def test_build_writes_program_manifest_and_benches(tmp_path):
    from lraqvit_deploy.backends.executorch import host_bench
    from lraqvit_deploy.backends.executorch.backend import HostBenchOptions
    from lraqvit_deploy.cli.main import main

    model = quantize_blocks(make_tiny("deit"))
    out = tmp_path / "android"
    man = _build(model, out)
    files = sorted(p.name for p in out.iterdir())
    assert files == ["deit_tiny_patch16_224_xnnpack_q8.pte", "manifest.json"]
    disk = json.loads((out / "manifest.json").read_text())
    assert disk["sha256"] == man["sha256"] and len(disk["sha256"]) == 64
    assert disk["method"] == "forward" and disk["input"] == {"shape": [1, 3, 32, 32], "dtype": "float32",
                                                            "layout": "NCHW"}
    assert disk["agreement"] >= 0.995 and disk["top1"] is None  # random images: no labels
    ver = disk["verification"]
    assert ver["reference"].startswith("quantization simulator")
    assert 0 < ver["reference_self_agreement"] <= 1 and ver["synthetic"] and ver["min_agreement"] is None  # SQNR gates
    assert ver["sqnr_db"] is None or ver["sqnr_db"] >= ver["min_sqnr_db"] == 20.0
    assert 0 < disk["size_mb"] < 1 and disk["delegated_fraction"] > 0.9
    assert disk["preprocessing"]["mean"] is not None
    assert disk["num_classes"] == 10 != model.pretrained_cfg["num_classes"]  # the head, not timm's checkpoint cfg

    r = host_bench.bench(out, HostBenchOptions(iterations=5, warmup=1, threads=1))
    assert r.iterations == 5 and r.threads == 1 and 0 < r.min_ms <= r.median_ms <= r.p90_ms <= r.max_ms
    assert len(r.extra["times_ms"]) == 5

    js = tmp_path / "bench.json"
    assert main(["bench", "--target", "host", str(out), "-n", "3", "--warmup", "1", "--json", str(js)]) == 0
    res = json.loads(js.read_text())
    assert res["iterations"] == 3 and res["threads"] == 1 and res["median_ms"] > 0 and res["p90_ms"] > 0


def test_build_refuses_on_low_agreement_and_writes_nothing(tmp_path, monkeypatch):
    """A program that computes something else (here: another model's weights, as an export bug would) is refused."""
    import lraqvit_deploy.backends.executorch.export as export
    from lraqvit_deploy.errors import ToleranceError

    real = export.lower_to_xnnpack
    other = make_tiny("vit")
    torch.manual_seed(123)
    for p in other.parameters():
        nn.init.normal_(p, std=0.5)
    monkeypatch.setattr(export, "lower_to_xnnpack", lambda model, *a, **k: real(other, *a, **k))
    out = tmp_path / "android"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier build")
    with pytest.raises(ToleranceError, match="Nothing was written"):
        _build(make_tiny("vit"), out, verify_images=16)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]  # the existing folder is left as it was


def test_layernorm_formulation_is_exact_and_fully_delegated(tmp_path):
    from lraqvit_deploy.backends.executorch.layer_norm import XnnpackLayerNorm

    ln = nn.LayerNorm(64, eps=1e-6)
    nn.init.normal_(ln.weight)
    nn.init.normal_(ln.bias)
    x = torch.randn(2, 17, 64) * 3 + 1
    torch.testing.assert_close(XnnpackLayerNorm(ln)(x), ln(x), atol=1e-5, rtol=1e-5)

    model = make_tiny("vit")
    prog = lower_to_xnnpack(model, "fp32", delegate_layernorm=True)
    assert prog.delegation.non_delegated_ops == 0 and prog.delegation.segments == 1
    xs = torch.randn(2, *prog.input_shape[1:])
    with torch.no_grad():
        torch.testing.assert_close(run_pte(prog.buffer, tmp_path, xs), model(xs), atol=1e-4, rtol=1e-4)
    assert isinstance(model.norm, nn.LayerNorm)  # the caller's model is untouched


def test_near_tie_flips_are_counted_apart(tmp_path):
    """Near-tie flips (within twice the typical logit error) are counted apart in the gated agreement."""
    from lraqvit_deploy.backends.executorch.verify import Verification

    v = Verification(n_images=64, agreement=63 / 64, top1=None, reference_top1=None, max_abs_logit_diff=0.1,
                     reference="sim", data="d", near_tie_flips=1)
    assert v.gated_agreement == 1.0 and v.to_dict()["gated_agreement"] == 1.0 and v.to_dict()["agreement"] == 63 / 64
    model = quantize_blocks(make_tiny("deit"))
    man = _build(model, tmp_path / "a")
    ver = man["verification"]
    assert 0 <= ver["near_tie_flips"] <= round((1 - ver["agreement"]) * ver["n_images"])
    assert ver["gated_agreement"] >= ver["agreement"]
