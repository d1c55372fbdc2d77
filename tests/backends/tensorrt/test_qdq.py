"""qdq.engine_model: which per-tensor INT8 model the engine runs, from FP32 models and INT8 artifacts."""
import pytest
import torch

from lraqvit_deploy.backends.tensorrt import qdq
from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.quant import float_copy, quant_config, quantize_
from lraqvit_deploy.model_info import record


def _images(n, seed):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _artifact(model, method, **fields):
    cfg = quant_config(method, progress=False, **fields)
    s = quantize_(model, cfg, _images(16, 3))
    record(model, quant={"config": cfg.to_dict(), **s.__dict__})
    return model


def _schemes(m):
    return {q.act_scheme for q in qdq.quant_linears(m).values()}


def test_wads_artifact_is_requantized_under_the_per_tensor_quantizer(tiny_vit):
    art = _artifact(tiny_vit, "wads", wads_iters=10)
    assert _schemes(art) == {"per_token_dynamic"}
    before = {n: m.linear.weight.clone() for n, m in qdq.quant_linears(art).items()}
    sim, info = qdq.engine_model(art, _images(16, 4))
    assert info["mode"] == "requantize" and info["method"] == "wads" and info["matches_artifact"] is False
    assert info["config"]["act_scheme"] == "per_tensor_static" and info["config"]["wads_iters"] == 10  # artifact's settings
    assert info["artifact_quantizer"]["act_scheme"] == "per_token_dynamic"
    assert _schemes(sim) == {"per_tensor_static"} and _schemes(art) == {"per_token_dynamic"}  # input untouched
    assert all(torch.equal(m.linear.weight, before[n]) for n, m in qdq.quant_linears(art).items())
    # the engine's model is exactly `quantize_(float weights, wads with per_tensor_static)`
    ref = float_copy(art)
    quantize_(ref, quant_config("wads", act_scheme="per_tensor_static", wads_iters=10, progress=False), _images(16, 4))
    x = _images(8, 5)
    with torch.no_grad():
        assert torch.equal(sim(x), ref(x))


def test_fp32_model_with_wads_gets_per_tensor_wads(tiny_vit):
    sim, info = qdq.engine_model(tiny_vit, _images(16, 4), "wads", overrides={"wads_iters": 5})
    assert info["mode"] == "requantize" and info["matches_artifact"] is None and _schemes(sim) == {"per_tensor_static"}
    assert info["config"]["method"] == "wads" and info["config"]["wads_iters"] == 5


def test_per_tensor_artifact_is_kept_as_is(tiny_vit):
    art = _artifact(tiny_vit, "naive")
    sim, info = qdq.engine_model(art, _images(16, 4))
    assert info["mode"] == "keep" and info["matches_artifact"] is True and info["calib_images"] == 0
    x = _images(8, 5)
    with torch.no_grad():
        assert torch.equal(sim(x), art(x))


def test_legacy_modes_and_errors(tiny_vit):
    art = _artifact(tiny_vit, "per-token")
    sim, info = qdq.engine_model(art, None)  # no images: the per-tensor scales recorded at quantization
    assert info["mode"] == "recorded" and "NOT the artifact's" in info["how"] and _schemes(sim) == {"per_tensor_static"}
    sim, info = qdq.engine_model(art, _images(16, 4), mode="recalibrate")
    assert "recalibrated" in info["how"] and info["matches_artifact"] is False
    with pytest.raises(DeployError, match="per-token INT8"):
        qdq.engine_model(art, None, mode="keep")
    with pytest.raises(DeployError, match="calibration images"):
        qdq.engine_model(float_copy(art), None)
    with pytest.raises(DeployError, match="int8 mode"):
        qdq.engine_model(art, None, mode="bogus")
