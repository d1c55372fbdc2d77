"""quantize_: every encoder-block Linear becomes a calibrated QuantLinear (dense and low-rank), and survives artifacts."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from conftest import images, low_rank, make_tiny
from lraqvit_deploy.artifacts import load_model_artifact, save_model_artifact
from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.layers import LowRankLinear, QuantLinear
from lraqvit_deploy.quant import NaiveConfig, PerTokenConfig, find_targets, quant_config, quantize_, quantized_size_mb


@torch.no_grad()
def sqnr_db(ref, out):
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - out).pow(2).sum()))


@pytest.mark.parametrize("family", ["vit", "swin", "dinov2"])
@pytest.mark.parametrize("lra", [False, True], ids=["dense", "lowrank"])
@pytest.mark.parametrize("method", ["naive", "per-token"])
def test_quantize_swaps_every_block_linear(family, lra, method):
    model = make_tiny(family)
    if lra:
        low_rank(model)
    names = [t.name for t in find_targets(model)]
    assert len(names) == (16 if lra else 8)  # 2 blocks x (qkv, proj, fc1, fc2), x2 halves when low-rank
    x = images(model)
    ref = model(x)
    summary = quantize_(model, quant_config(method, progress=False), x)
    swapped = {n for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    assert swapped == set(names)
    assert summary.n_layers == len(names)
    want = "per_tensor_static" if method == "naive" else "per_token_dynamic"
    for n in names:
        q = model.get_submodule(n)
        assert q.act_scheme == want and q.w_scale.shape == (q.out_features,)
        if want == "per_tensor_static":
            assert q.act_scale.shape == () and q.act_scale > 0
    head = model.head.fc if family == "swin" else model.head
    assert type(head) is nn.Linear  # head and patch embedding stay FP32
    assert sqnr_db(ref, model(x)) > 20


def test_per_token_static_scales_have_one_entry_per_token():
    model = make_tiny("vit")
    x = images(model)
    quantize_(model, quant_config("per-token", act_scheme="per_token_static", progress=False), x)
    q = model.blocks[0].attn.qkv
    assert q.act_scale.shape == (17,)  # 16 patches + cls
    # calibrated scale = max |x| per token position / 127 over the calibration set
    model2 = make_tiny("vit")
    captured = []
    model2.blocks[0].attn.qkv.register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    model2(x)
    want = captured[0].abs().amax(dim=(0, 2)) / 127
    torch.testing.assert_close(q.act_scale, want)


def test_quantize_twice_is_an_error():
    model = make_tiny("vit")
    x = images(model)
    quantize_(model, NaiveConfig(progress=False), x)
    with pytest.raises(DeployError, match="already quantized"):
        quantize_(model, NaiveConfig(progress=False), x)


def test_bad_config_is_a_deploy_error():
    with pytest.raises(DeployError, match="unknown quantization method"):
        quant_config("gptq")
    with pytest.raises(DeployError, match="asymmetric"):
        quant_config("naive", act_symmetric=False)
    with pytest.raises(DeployError, match="'wads_iters' does not apply to quantization method 'naive'"):
        quant_config("naive", wads_iters=3)


@pytest.mark.parametrize("method,scheme", [("naive", None), ("wads", "per_token_static"), ("wads", None)])
def test_artifact_round_trip(tmp_path, method, scheme):
    model = low_rank(make_tiny("vit"))
    x = images(model)
    search = {"wads_iters": 20, "fc2": "explicit"} if method == "wads" else {}
    quantize_(model, quant_config(method, act_scheme=scheme, progress=False, **search), x)
    save_model_artifact(tmp_path / "q", model)
    loaded = load_model_artifact(tmp_path / "q")
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear):
            l = loaded.get_submodule(name)
            assert isinstance(l, QuantLinear) and l.act_scheme == m.act_scheme
            assert l.act_symmetric == m.act_symmetric
            torch.testing.assert_close(l.act_scale, m.act_scale)
            torch.testing.assert_close(l.input_scale, m.input_scale)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_quantized_size_is_about_a_quarter_for_block_weights():
    model = make_tiny("vit")
    fp32 = sum(t.numel() * 4 for t in model.state_dict().values()) / 1e6
    block_w = sum(t.linear.weight.numel() for t in find_targets(model))
    quantize_(model, NaiveConfig(progress=False), images(model))
    size = quantized_size_mb(model)
    saved = fp32 - size  # 3 bytes per block weight, minus the (few) scales
    assert 0.9 * 3 * block_w / 1e6 < saved <= 3 * block_w / 1e6


@pytest.mark.slow
def test_testbed_per_token_int8_keeps_accuracy(testbed_model):
    from timm.data import resolve_data_config

    from lraqvit_deploy.data import FashionMNIST, calibration_batch, seeded_subset

    cfg = resolve_data_config(model=testbed_model)
    test = seeded_subset(FashionMNIST("test", cfg), 300, 0)
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.tensor([test[i][1] for i in range(len(test))])
    model = copy.deepcopy(testbed_model)
    quantize_(model, PerTokenConfig(progress=False),
              calibration_batch(FashionMNIST("train", cfg), 32, seed=0))
    with torch.no_grad():
        ref, out = testbed_model(x).argmax(-1), model(x).argmax(-1)
    assert (ref == out).float().mean() > 0.95  # INT8 changes few predictions
    assert (out == y).float().mean() > (ref == y).float().mean() - 0.015
    assert quantized_size_mb(model) < 0.3 * sum(t.numel() * 4 for t in testbed_model.state_dict().values()) / 1e6
