"""CompensatedLinear: exact merge, and an artifact holding one reloads with identical outputs."""
from __future__ import annotations

import torch

from conftest import make_tiny
from lraqvit_deploy.artifacts import load_model_artifact, save_model_artifact
from lraqvit_deploy.lowrank import fit_compensation
from lraqvit_deploy.layers import CompensatedLinear, LowRankLinear, replace_module


def _compensated_model():
    model = make_tiny("vit")
    g = torch.Generator().manual_seed(0)
    for name in ("blocks.0.attn.qkv", "blocks.1.mlp.fc2"):
        linear = model.get_submodule(name)
        base = LowRankLinear.from_linear(linear, 8)
        x = torch.randn(200, linear.in_features, generator=g)
        with torch.no_grad():
            target = linear(x)
        replace_module(model, name, fit_compensation(base, x, target, fraction=0.1))
    return model.eval()


def test_merge_is_exact():
    comp = _compensated_model().get_submodule("blocks.0.attn.qkv")
    assert isinstance(comp, CompensatedLinear) and comp.g.weight.abs().sum() > 0
    x = torch.randn(4, 5, comp.in_features)
    with torch.no_grad():
        torch.testing.assert_close(comp.merge()(x), comp(x), rtol=1e-5, atol=1e-5)


def test_artifact_with_compensated_linear_reloads(tmp_path):
    model = _compensated_model()
    save_model_artifact(tmp_path / "a", model)
    loaded = load_model_artifact(tmp_path / "a")
    comp = loaded.get_submodule("blocks.1.mlp.fc2")
    assert isinstance(comp, CompensatedLinear) and isinstance(comp.base, LowRankLinear)
    assert (comp.base.rank, comp.q) == (8, model.get_submodule("blocks.1.mlp.fc2").q)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
