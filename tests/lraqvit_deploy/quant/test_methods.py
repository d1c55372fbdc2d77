"""Quantizer properties, folding exactness, and WADS' search (on tiny models: seconds)."""
from __future__ import annotations

import copy

import pytest
import torch

from conftest import make_tiny
from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.layers import QuantLinear
from lraqvit_deploy.layers.quant_linear import (fake_quant_per_token_dynamic, fake_quant_symmetric,
                                                per_channel_weight_scale)
from lraqvit_deploy.quant import WADSConfig, find_targets, fold_scale, quant_config, quantize_
from lraqvit_deploy.quant.methods.wads import _Objective, search_alpha, select_layers, weight_error
from conftest import images, low_rank


# ----------------------------------------------------------------------------- quantizers
def test_fake_quant_is_idempotent_and_within_half_a_step():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 32, generator=g) * 3
    s = x.abs().amax() / 127
    q = fake_quant_symmetric(x, s)
    torch.testing.assert_close(fake_quant_symmetric(q, s), q)
    assert (q - x).abs().max() <= s / 2 + 1e-6
    assert len(torch.unique(torch.round(q / s))) <= 256


def test_weight_scale_is_per_output_channel_and_invariant_to_row_scaling():
    w = torch.randn(8, 16)
    s = per_channel_weight_scale(w)
    torch.testing.assert_close(s, w.abs().amax(1) / 127)
    c = torch.rand(8, 1) + 0.5
    q1 = fake_quant_symmetric(w, s[:, None])
    q2 = fake_quant_symmetric(w * c, per_channel_weight_scale(w * c)[:, None])
    torch.testing.assert_close(q2, q1 * c)  # what makes folding into a producer's rows free


def test_per_token_beats_per_tensor_on_outlier_tokens():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 17, 64, generator=g)
    x[0, 0] *= 100  # one outlier token (the cls token after LRA)
    per_tensor = fake_quant_symmetric(x, x.abs().amax() / 127)
    per_token = fake_quant_symmetric(x, x.abs().amax(dim=(0, 2))[:, None] / 127)
    err_tensor = (per_tensor - x)[0, 1:].pow(2).mean()
    err_token = (per_token - x)[0, 1:].pow(2).mean()
    assert err_token < err_tensor / 100  # the ordinary tokens keep their precision
    # the static per-token QuantLinear reproduces that scale layout
    q = QuantLinear(64, 8, act_scheme="per_token_static", num_tokens=17)
    q.act_scale.copy_(x.abs().amax(dim=(0, 2)) / 127)
    torch.testing.assert_close(q.quantize_input(x), per_token)


def test_asymmetric_dynamic_uses_the_full_int8_range_per_row():
    x = torch.rand(4, 32) * 5 + 1  # all positive: symmetric wastes half the codes
    sym = fake_quant_per_token_dynamic(x, symmetric=True)
    asym = fake_quant_per_token_dynamic(x, symmetric=False)
    assert (asym - x).abs().max() < (sym - x).abs().max()
    # the row's range [min(0, lo), max(0, hi)] maps onto 255 steps
    step = x.amax(1, keepdim=True) / 255
    assert ((asym - x).abs() <= step / 2 + 1e-5).all()


# ----------------------------------------------------------------------------- folding
@pytest.mark.parametrize("family", ["vit", "swin"])
@pytest.mark.parametrize("lra", [False, True], ids=["dense", "lowrank"])
def test_folding_any_alpha_leaves_the_fp32_outputs_unchanged(family, lra):
    model = make_tiny(family).double()
    if lra:
        low_rank(model)
    x = images(model).double()
    ref = model(x)
    g = torch.Generator().manual_seed(1)
    folded = 0
    for t in find_targets(model):
        if t.foldable:
            fold_scale(t, torch.rand(t.linear.in_features, generator=g, dtype=torch.float64) * 4 + 0.1)
            folded += 1
    assert folded == (14 if lra else 6)  # every Linear but fc2 (fc2.down) has a producer to fold into
    out = model(x)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


def test_fold_into_gelu_is_refused():
    model = make_tiny("vit")
    fc2 = next(t for t in find_targets(model) if t.role == "fc2")
    with pytest.raises(DeployError, match="no preceding linear op"):
        fold_scale(fc2, torch.ones(fc2.linear.in_features))


@pytest.mark.parametrize("method", ["smoothquant", "repq", "qads", "wads"])
def test_scaling_methods_keep_fp32_function(method):
    """Folding the found alphas is exact: with quantization switched off the model is unchanged."""
    model = low_rank(make_tiny("vit"))
    x = images(model)
    ref = model(x)
    q = copy.deepcopy(model)
    own = {"smoothquant": {"fc2": "explicit"}, "repq": {}}.get(method, {"wads_iters": 3, "wads_lr": 1e-2, "fc2": "explicit"})
    s = quantize_(q, quant_config(method, progress=False, **own), x)
    assert s.scaled_layers  # something was scaled
    for m in q.modules():
        if isinstance(m, QuantLinear):  # undo only the quantization: FP32 weight, x / input_scale
            m.act_scheme, m.w_bits = "none", 32
            m.w_scale = torch.full_like(m.w_scale, 1e-30)
            m.quantized_weight = lambda m=m: m.linear.weight
    torch.testing.assert_close(q(x), ref, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- WADS
def test_wads_never_increases_its_own_loss():
    g = torch.Generator().manual_seed(0)
    for trial in range(3):
        x = torch.randn(4, 9, 32, generator=g)
        x[..., trial] *= 40  # an outlier channel
        w = torch.randn(24, 32, generator=g) * 0.1
        for scheme in ("per_tensor_static", "per_token_static", "per_token_dynamic"):
            r = search_alpha(x, w, scheme, iters=15, lr=0.05)
            obj = _Objective(x, w, scheme, 8, 8, True, True)
            assert r.loss_final <= r.loss_init
            assert float(obj(torch.zeros(32), ste=False)) == pytest.approx(r.loss_init)
            assert float(obj(r.alpha.log(), ste=False)) == pytest.approx(r.loss_final, rel=1e-5)


def test_wads_reduces_the_loss_with_an_outlier_channel_under_per_tensor():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 9, 32, generator=g)
    x[..., 3] *= 50
    w = torch.randn(24, 32, generator=g) * 0.1
    r = search_alpha(x, w, "per_tensor_static", iters=40, lr=0.1)
    assert r.loss_final < 0.5 * r.loss_init
    assert r.alpha[3] > r.alpha.median()  # the outlier channel is scaled down on the activation side


def test_weight_term_keeps_alpha_closer_to_one_than_qads():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 9, 32, generator=g)
    x[..., 3] *= 50
    w = torch.randn(24, 32, generator=g)
    wads = search_alpha(x, w, "per_tensor_static", iters=40, lr=0.1, weight_term=True)
    qads = search_alpha(x, w, "per_tensor_static", iters=40, lr=0.1, weight_term=False)
    assert wads.alpha.log().abs().mean() < qads.alpha.log().abs().mean()


def test_threshold_keeps_layers_below_the_mean_weight_error():
    assert select_layers({"a": 1.0, "b": 2.0, "c": 6.0}) == ["a", "b"]
    w = torch.randn(16, 16)
    assert weight_error(w) > 0 and weight_error(torch.zeros(16, 16)) == 0


def test_wads_only_scales_below_threshold_layers():
    model = low_rank(make_tiny("vit"))
    errors = {t.name: weight_error(t.linear.weight) for t in find_targets(model)}
    allowed = set(select_layers(errors))
    s = quantize_(model, WADSConfig(wads_iters=5, progress=False), images(model))
    assert set(s.scaled_layers) <= allowed
    assert not any(n.endswith("fc2") or n.endswith("fc2.down") for n in s.scaled_layers)  # fc2='skip'
