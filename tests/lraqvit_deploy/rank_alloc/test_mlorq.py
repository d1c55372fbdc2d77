"""MLoRQ joint rank/bit allocation: candidate losses, Pareto fronts, ILP optimality, target checks."""
from __future__ import annotations

import copy
import itertools

import pytest
import torch

from conftest import make_tiny
from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.rank_alloc import (LayerChoice, allocate, apply_plan_, build_layer, check_target,
                                       collect_stats, encoder_linears, layer_candidates, pareto_front, solve_ilp,
                                       unsupported_layers, weighted_error)
from lraqvit_deploy.rank_alloc.mlorq import Candidate, memory_mb


def _images(n=16, size=32, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _cand(loss, bits, tag):
    return Candidate(LayerChoice(w_bits=tag), loss, bits)


def test_ilp_matches_brute_force_on_small_case():
    # 3 layers x 3 candidates (loss, bits); hand check for budget 14: a(0.5,4)+b(1.0,5)+c(0.2,5)=1.7
    # beats e.g. a(0.1,8)+b(2.0,3)+c(1.5,3)=3.6 and a(0.5,4)+b(2.0,3)+c(0.05,7)=2.55
    layers = {
        "a": [_cand(3.0, 2, 2), _cand(0.5, 4, 4), _cand(0.1, 8, 8)],
        "b": [_cand(2.0, 3, 3), _cand(1.0, 5, 5), _cand(0.3, 9, 6)],
        "c": [_cand(1.5, 3, 3), _cand(0.2, 5, 5), _cand(0.05, 7, 7)],
    }
    for budget in (8, 10, 12, 14, 17, 20, 24):
        best = min((combo for combo in itertools.product(*layers.values()) if sum(c.bits for c in combo) <= budget),
                   key=lambda combo: sum(c.loss for c in combo))
        got = solve_ilp(layers, budget)
        assert sum(c.bits for c in got.values()) <= budget
        assert sum(c.loss for c in got.values()) == pytest.approx(sum(c.loss for c in best)), budget
    got = solve_ilp(layers, 14)
    assert [got[n].choice.w_bits for n in "abc"] == [4, 5, 5]
    with pytest.raises(DeployError, match="budget"):
        solve_ilp(layers, 7)


def test_pareto_front_drops_dominated():
    cands = [_cand(1.0, 4, 1), _cand(2.0, 5, 2), _cand(0.5, 6, 3), _cand(0.5, 7, 4), _cand(3.0, 2, 5)]
    front = pareto_front(cands)
    assert [c.choice.w_bits for c in front] == [5, 1, 3]


def test_candidate_losses_match_built_layers(tiny_vit):
    """The fast trace formula for each candidate equals the error of the module actually built from it."""
    stats = collect_stats(tiny_vit, _images(), progress=False)
    name = "blocks.0.mlp.fc1"
    lin = tiny_vit.get_submodule(name)
    cands = layer_candidates(lin, stats[name], dense_bits=(2, 4, 8), factor_bits=(4, 8),
                             rank_fractions=(0.25, 0.5))
    assert len(cands) == 1 + 3 + 2 * 4
    c = stats[name].second_moment
    for cand in cands:
        mod = build_layer(lin, cand.choice, stats[name])
        w_hat = mod.to_linear().weight if hasattr(mod, "to_linear") and not cand.choice.factor_bits else None
        if w_hat is None:  # dense quantized, or quantized factors: dense weight through the module itself
            eye = torch.eye(lin.in_features)
            w_hat = (mod(eye) - mod(torch.zeros(1, lin.in_features))).T
        assert weighted_error(lin.weight, w_hat, c) == pytest.approx(cand.loss, rel=1e-3, abs=1e-6), cand.choice
    losses = {cand.choice: cand.loss for cand in cands}
    assert losses[LayerChoice(w_bits=2)] > losses[LayerChoice(w_bits=4)] > losses[LayerChoice(w_bits=8)]


def test_plan_loss_scores_any_plan_like_the_search(tiny_vit):
    """`plan_loss` gives a searched candidate its search loss, and a choice off the search grid (a uniform
    plan's rank) the error of the layer built from it; `choice_of` reads each built layer back."""
    from lraqvit_deploy.layers.rb_lra import RBLRALinear
    from lraqvit_deploy.rank_alloc.latency import choice_of
    from lraqvit_deploy.rank_alloc.mlorq import plan_loss

    stats = collect_stats(tiny_vit, _images(), progress=False)
    name = "blocks.1.attn.qkv"
    lin = tiny_vit.get_submodule(name)
    linears = {name: lin}
    for cand in layer_candidates(lin, stats[name], dense_bits=(4, 8), factor_bits=(4, 8), rank_fractions=(0.5,),
                                 target="android"):
        assert plan_loss(linears, stats, {name: cand.choice})[name] == pytest.approx(cand.loss, rel=1e-9, abs=1e-12)
    c = stats[name].second_moment
    for choice in (LayerChoice(rank=7, factor_bits=(8, 8)), LayerChoice(rank=10, factor_bits=(4, 8),
                                                                         factor_groups=(None, 32)),
                   LayerChoice(w_bits=4, group=32), LayerChoice()):
        mod = build_layer(lin, choice, stats[name])
        eye = torch.eye(lin.in_features)
        w_hat = (mod(eye) - mod(torch.zeros(1, lin.in_features))).T
        got = plan_loss(linears, stats, {name: choice})[name]
        assert got == pytest.approx(weighted_error(lin.weight, w_hat, c), rel=1e-3, abs=1e-6), choice
        assert choice_of(mod) == choice
    assert plan_loss(linears, stats, {name: LayerChoice(rank=4, factor_bits=(8, 8))})[name] > \
        plan_loss(linears, stats, {name: LayerChoice(rank=12, factor_bits=(8, 8))})[name] > 0
    with pytest.raises(DeployError, match="no cost-table form"):
        choice_of(RBLRALinear(16, 16, 4))


def test_mlorq_plan_fits_memory_budget_and_runs(tiny_vit, tmp_path):
    from lraqvit_deploy.artifacts import load_model_artifact, save_model_artifact

    linears = encoder_linears(tiny_vit)
    fp32_mb = sum(p.numel() for p in tiny_vit.parameters()) * 4 / 1e6
    budget = 0.25 * fp32_mb
    alloc = allocate(tiny_vit, "mlorq", memory_budget_mb=budget, images=_images(), progress=False,
                     factor_bits=(4, 8), rank_fractions=(0.25, 0.5))
    assert alloc.summary["memory_mb"] <= budget
    assert memory_mb(tiny_vit, alloc.plan, linears) == alloc.summary["memory_mb"]
    smallest = {n: LayerChoice(w_bits=2) for n in linears}
    assert alloc.summary["memory_mb"] > memory_mb(tiny_vit, smallest, linears)  # it used the budget
    model = apply_plan_(copy.deepcopy(tiny_vit), alloc.plan, alloc.stats)
    x = _images(2, seed=3)
    y = model(x)
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    save_model_artifact(tmp_path / "art", model)
    torch.testing.assert_close(load_model_artifact(tmp_path / "art")(x), y)


def test_target_check_names_unrunnable_layers():
    plan = {"blocks.0.attn.qkv": LayerChoice(w_bits=8), "blocks.0.mlp.fc1": LayerChoice(w_bits=4),
            "blocks.0.mlp.fc2": LayerChoice(rank=8, factor_bits=(3, 8))}
    assert unsupported_layers(plan, "sim") == {}
    assert set(unsupported_layers(plan, "xnnpack")) == {"blocks.0.mlp.fc2"}
    assert set(unsupported_layers(plan, "tensorrt")) == {"blocks.0.mlp.fc1", "blocks.0.mlp.fc2"}
    with pytest.raises(DeployError, match="tensorrt") as e:
        check_target(plan, "tensorrt")
    assert "blocks.0.mlp.fc1" in str(e.value)
    check_target({"x": LayerChoice(w_bits=8)}, "tensorrt")


def test_allocate_checks_its_inputs(tiny_vit):
    # (the command-line flags that used to be tested here moved to lraqvit_deploy.recipe / cli)
    alloc = allocate(tiny_vit, "uniform", param_reduction=0.5, progress=False)
    assert set(alloc.ranks) == set(encoder_linears(tiny_vit))
    with pytest.raises(DeployError, match="memory-budget"):
        allocate(tiny_vit, "mlorq", images=torch.randn(2, 3, 32, 32), progress=False)
    with pytest.raises(DeployError, match="calibration"):
        allocate(tiny_vit, "energy", param_reduction=0.5, progress=False)

