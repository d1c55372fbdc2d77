"""WADS lowers a real layer's quantized output error when its input has an outlier channel.

The layers are the qkv and fc1 Linears of a tiny ViT, fed by the model's own LayerNorms on real forward passes.
The planted outlier is what real ViTs carry: one LayerNorm output channel 200x larger than the rest, its weight
column in the following Linear 200x smaller (the model computes the same function). Per-token INT8 then spends
its range on that channel. WADS (the default `WADSConfig`: its own search, `alpha_search`, and its own fold into
the LayerNorm, `fold_scale`) is compared with the same layer quantized without it, on held-out images.
Measured (4 model seeds, AMD EPYC AVX-512): WADS lowers the relative output error 4.5-7.1x (qkv) and 6.0-6.8x
(fc1); without the outlier the search finds nothing better than alpha = 1 and the layer is unchanged.
"""
from __future__ import annotations

import pytest
import torch

from conftest import images, make_tiny
from lraqvit_deploy.layers import QuantLinear
from lraqvit_deploy.quant import WADSConfig, find_targets, fold_scale
from lraqvit_deploy.quant.calibrate import InputStats
from lraqvit_deploy.quant.methods.wads import alpha_search

OUTLIER = 200.0


def _inputs(model, layer, x):
    got = []
    h = model.get_submodule(layer).register_forward_hook(lambda m, i, o: got.append(i[0].detach()))
    with torch.no_grad():
        model(x)
    h.remove()
    return torch.cat(got)


def _errors(layer: str, norm: str, outlier: float):
    """(relative output error of the per-token INT8 layer without WADS, with WADS) on held-out images."""
    model = make_tiny("vit")
    with torch.no_grad():
        ln, lin = model.get_submodule(norm), model.get_submodule(layer)
        ln.weight[7] *= outlier
        ln.bias[7] *= outlier
        lin.weight[:, 7] /= outlier  # the same function, an outlier channel on the Linear's input
    calib, held_out = images(model, 16, seed=0), images(model, 16, seed=1)
    x = _inputs(model, layer, held_out)
    with torch.no_grad():
        ref = torch.nn.functional.linear(x, lin.weight, lin.bias)

    def error(q: QuantLinear, inputs: torch.Tensor) -> float:
        with torch.no_grad():
            return float((q(inputs) - ref).pow(2).sum() / ref.pow(2).sum())

    cfg = WADSConfig(progress=False)
    plain = error(QuantLinear.from_linear(lin, cfg.act_scheme, act_symmetric=cfg.act_symmetric), x)
    target = next(t for t in find_targets(model) if t.name == layer)
    xc = _inputs(model, layer, calib)
    stats = InputStats(xc.abs().amax(), xc.abs().amax(dim=(0, 2)), xc.abs().amax(dim=(0, 1)), inputs=xc)
    res = alpha_search(cfg, weight_term=True)(target, stats)
    if res.loss_final < res.loss_init:  # what quantize_ keeps
        fold_scale(target, res.alpha)  # the LayerNorm now emits x / alpha, the Linear's columns hold alpha W
    wads = error(QuantLinear.from_linear(target.linear, cfg.act_scheme, act_symmetric=cfg.act_symmetric),
                 _inputs(model, layer, held_out))
    return plain, wads


@pytest.mark.parametrize("layer,norm", [("blocks.0.attn.qkv", "blocks.0.norm1"), ("blocks.0.mlp.fc1", "blocks.0.norm2")])
def test_wads_lowers_the_output_error_of_a_layer_with_an_outlier_channel(layer, norm, one_thread):
    plain, wads = _errors(layer, norm, OUTLIER)
    clean_plain, clean_wads = _errors(layer, norm, 1.0)
    assert plain > 100 * clean_plain  # the outlier really hurts per-token INT8 (measured ~1,300x)
    assert wads < plain / 3, (plain, wads)  # measured 4.5-7.1x lower
    assert clean_wads <= clean_plain * 1.01  # and without the outlier WADS does no harm
