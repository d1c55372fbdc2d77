"""Quantization configs: one class per method, `quant_config` by CLI name, handlers keyed by config type."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import make_tiny
from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.quant import (METHODS, QUANT_METHODS, BaseQuantConfig, NaiveConfig, QuantConfig,
                                  SmoothQuantConfig, WADSConfig, quant_config, quantize_, register_quant_handler)
from lraqvit_deploy.quant.api import quantize_layers_

MANIFEST_KEYS = {"method", "act_scheme", "act_symmetric", "w_bits", "a_bits", "batch_size", "seed", "version"}


@pytest.mark.parametrize("name", METHODS)
def test_quant_config_builds_the_method_class_and_round_trips(name):
    cfg = quant_config(name, progress=False)
    assert type(cfg) is QUANT_METHODS[name] and cfg.method == name
    d = cfg.to_dict()
    assert MANIFEST_KEYS <= set(d) and d["method"] == name and "progress" not in d
    rebuilt = quant_config(**{"name": d.pop("method"), **d})
    assert rebuilt.to_dict() == cfg.to_dict()


def test_method_fields_and_manifest_keys():
    assert set(WADSConfig().to_dict()) == MANIFEST_KEYS | {"wads_iters", "wads_lr", "wads_max_rows", "wads_sampling", "wads_weight_term", "wads_normalize", "wads_patience", "fc2"}
    sq = quant_config("smoothquant", smooth_migration=0.3)  # the manifest key is accepted as an alias
    assert sq.migration == 0.3 and sq.to_dict()["smooth_migration"] == 0.3
    assert NaiveConfig().act_scheme == "per_tensor_static" and WADSConfig().act_scheme == "per_token_dynamic"
    assert WADSConfig().act_symmetric is False and NaiveConfig().act_symmetric is True


def test_errors_name_the_value_and_the_fix():
    with pytest.raises(DeployError, match="unknown quantization method 'gptq'; choose one of naive"):
        quant_config("gptq")
    with pytest.raises(DeployError, match=r"'fc2' does not apply to quantization method 'repq' \(it is an option "
                                          r"of qads, smoothquant, wads\)"):
        quant_config("repq", fc2="explicit")
    with pytest.raises(DeployError, match="no method has it"):
        quant_config("wads", alpha=0.5)
    with pytest.raises(DeployError, match="migration = 2.0: must be <= 1"):
        SmoothQuantConfig(migration=2.0)
    with pytest.raises(DeployError, match="fc2 = 'fold': must be one of skip, explicit"):
        WADSConfig(fc2="fold")
    with pytest.raises(DeployError, match="wads_iters = -1: must be >= 0"):
        quant_config("qads", wads_iters=-1)


def test_legacy_quant_config_ignores_fields_that_do_not_apply():
    cfg = QuantConfig(method="naive", wads_iters=5, fc2="explicit", smooth_migration=0.2, progress=False)
    assert type(cfg) is NaiveConfig and "wads_iters" not in cfg.to_dict()
    assert type(QuantConfig()) is WADSConfig
    with pytest.raises(DeployError, match="unknown quantization option"):
        QuantConfig(method="wads", wads_itres=5)


def test_quantize_dispatches_on_the_config_type():
    @dataclasses.dataclass(frozen=True)
    class HalfBitsConfig(BaseQuantConfig):
        method = "test-only"

    calls = []

    @register_quant_handler(HalfBitsConfig)
    def _transform(model, config, images):
        calls.append(type(config))
        return quantize_layers_(model, config, images)

    model = make_tiny("vit")
    summary = quantize_(model, HalfBitsConfig(w_bits=4, progress=False), torch.randn(4, 3, 32, 32))
    assert calls == [HalfBitsConfig] and summary.method == "test-only" and summary.n_layers == 8
    assert model.blocks[0].attn.qkv.w_bits == 4

    @dataclasses.dataclass(frozen=True)
    class Unregistered(BaseQuantConfig):
        pass

    with pytest.raises(DeployError, match="no quantization handler for Unregistered"):
        quantize_(make_tiny("vit"), Unregistered(), torch.randn(2, 3, 32, 32))
