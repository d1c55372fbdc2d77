"""Rank allocation: activation-aware SVD, greedy mixed rank, budgets, compensation (tiny ViTs)."""
from __future__ import annotations

import copy

import pytest
import torch

from conftest import make_tiny
from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.layers import LowRankLinear
from lraqvit_deploy.rank_alloc import (ActivationSVD, LayerChoice, Spectrum, allocate, apply_plan_, collect_stats,
                                       compensate_model_, encoder_linears, energy_ranks, fit_compensation,
                                       layer_params, partial_finetune_, uniform_ranks, weighted_error)
from lraqvit_deploy.calibration import capture_io
from lraqvit_deploy.lowrank.compensation import normalised_error
from lraqvit_deploy.rank_alloc.greedy import total_params


def _images(n=24, size=32, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _anisotropic(n_in=48, n_out=40, tokens=500, seed=0):
    """A weight and inputs whose channels have very different scales (as ViT activations do)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_out, n_in, generator=g)
    x = torch.randn(tokens, n_in, generator=g) * torch.logspace(-1.5, 1, n_in)
    x = x @ torch.linalg.qr(torch.randn(n_in, n_in, generator=g))[0]  # correlate the channels
    return w, x


def test_encoder_linears_finds_block_layers(tiny_any):
    names = list(encoder_linears(tiny_any))
    assert names and all("blocks" in n for n in names)
    assert not any(n.startswith("head") for n in names)


def test_activation_svd_beats_plain_svd_on_weighted_error():
    w, x = _anisotropic()
    c = x.double().T @ x.double() / len(x)
    for r in (4, 10, 20):
        plain = ActivationSVD(w).factors(r)
        aware = ActivationSVD(w, c).factors(r)
        e_plain = weighted_error(w, plain[0] @ plain[1], c)
        e_aware = weighted_error(w, aware[0] @ aware[1], c)
        assert e_aware < 0.8 * e_plain, (r, e_aware, e_plain)
        # the whitened spectrum's tail *is* the normalised output error at that rank
        tail = float(ActivationSVD(w, c).spectrum.tail_energy()[r])
        assert e_aware == pytest.approx(tail, rel=1e-3, abs=1e-9)


def test_activation_svd_plain_equals_truncated_svd():
    w, _ = _anisotropic()
    up, down = ActivationSVD(w).factors(7)
    s = torch.linalg.svdvals(w.double())
    assert float((w - up @ down).norm()) == pytest.approx(float(s[7:].norm()), rel=1e-4)


def test_collect_stats_matches_manual_second_moment(tiny_vit):
    imgs = _images(6)
    stats = collect_stats(tiny_vit, imgs, progress=False)
    assert set(stats) == set(encoder_linears(tiny_vit))
    x, _ = capture_io(tiny_vit, "blocks.1.mlp.fc2", imgs)
    st = stats["blocks.1.mlp.fc2"]
    assert st.n_tokens == x.shape[0]
    torch.testing.assert_close(st.second_moment, x.double().T @ x.double() / x.shape[0])


def _spectra(seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, (n_in, n_out, decay) in enumerate([(64, 192, 0.3), (64, 64, 0.02), (64, 256, 0.1), (256, 64, 0.05)]):
        k = min(n_in, n_out)
        s = torch.exp(-decay * torch.arange(k, dtype=torch.float64)) * (1 + 0.01 * torch.rand(k, generator=g))
        out[f"l{i}"] = Spectrum(s.sort(descending=True).values, n_in, n_out)
    return out


@pytest.mark.parametrize("frac", [0.2, 0.45, 0.6, 0.8])
def test_energy_ranks_meet_budget_exactly(frac):
    spectra = _spectra()
    shapes = {n: (s.in_features, s.out_features) for n, s in spectra.items()}
    dense = sum(i * o for i, o in shapes.values())
    budget = int((1 - frac) * dense)
    ranks = energy_ranks(spectra, budget)
    used = total_params(shapes, ranks)
    assert used <= budget
    # exact: no layer could take one more rank (or go back to dense) inside the budget
    for n, (i, o) in shapes.items():
        r = ranks[n]
        if r is None:
            continue
        nxt = None if (r + 1) * (i + o) >= i * o else r + 1
        assert used - layer_params(i, o, r) + layer_params(i, o, nxt) > budget, n


def test_energy_ranks_cut_the_fast_decaying_layer_most():
    spectra = _spectra()
    ranks = energy_ranks(spectra, int(0.5 * sum(s.in_features * s.out_features for s in spectra.values())))
    ratio = {n: (ranks[n] or len(s.s)) / len(s.s) for n, s in spectra.items()}
    assert ratio["l0"] < ratio["l1"]  # decay 0.3 vs 0.02: l0 keeps its energy in far fewer ranks
    assert ratio["l0"] == min(ratio.values())


def test_energy_beats_uniform_on_total_energy():
    spectra = _spectra()
    shapes = {n: (s.in_features, s.out_features) for n, s in spectra.items()}
    budget = int(0.4 * sum(i * o for i, o in shapes.values()))

    def lost(ranks):
        return sum(float(s.tail_energy()[ranks[n] or len(s.s)]) for n, s in spectra.items())

    assert lost(energy_ranks(spectra, budget)) < lost(uniform_ranks(shapes, budget))


@pytest.mark.parametrize("method", ["uniform", "energy"])
def test_allocate_meets_whole_model_reduction(tiny_vit, method):
    n0 = sum(p.numel() for p in tiny_vit.parameters())
    alloc = allocate(tiny_vit, method, param_reduction=0.4, images=_images(8), progress=False)
    model = apply_plan_(copy.deepcopy(tiny_vit), alloc.plan, alloc.stats)
    n1 = sum(p.numel() for p in model.parameters())
    assert n1 == alloc.summary["params_after"]
    assert n1 <= 0.6 * n0
    smallest_step = min(m.in_features + m.out_features for m in encoder_linears(tiny_vit).values())
    if method == "energy":
        assert 0.6 * n0 - n1 < smallest_step + 1  # the leftover is below one rank of any layer
    assert model(_images(2)).shape == (2, 10)


def test_allocate_with_compensation_stays_in_budget(tiny_vit):
    n0 = sum(p.numel() for p in tiny_vit.parameters())
    alloc = allocate(tiny_vit, "energy", param_reduction=0.5, images=_images(8), compensation_fraction=0.05,
                     progress=False)
    model = apply_plan_(copy.deepcopy(tiny_vit), alloc.plan, alloc.stats)
    compensate_model_(model, tiny_vit, _images(8, seed=1), progress=False)
    assert sum(p.numel() for p in model.parameters()) == alloc.summary["params_after"] <= 0.5 * n0


def test_allocate_rejects_impossible_budget(tiny_vit):
    with pytest.raises(DeployError, match="reduction"):
        allocate(tiny_vit, "uniform", param_reduction=0.999, progress=False)
    with pytest.raises(DeployError, match="calibration"):
        allocate(tiny_vit, "energy", param_reduction=0.5, progress=False)


@pytest.mark.parametrize("solver", ["closed_form", "gd"])
def test_compensation_reduces_layer_error(solver):
    w, x = _anisotropic(tokens=800)
    lin = torch.nn.Linear(48, 40)
    with torch.no_grad():
        lin.weight.copy_(w)
    base = LowRankLinear.from_linear(lin, 6)  # plain SVD: far from optimal on these inputs
    target = lin(x).detach()
    fit_x, fit_t, test_x, test_t = x[:600], target[:600], x[600:], target[600:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # hundreds of tiny steps: thread hand-offs would dominate
    try:
        comp = fit_compensation(base, fit_x, fit_t, fraction=0.1, solver=solver, iters=300, lr=1e-2)
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        before, after = normalised_error(base(test_x), test_t), normalised_error(comp(test_x), test_t)
        merged = comp.merge()
        torch.testing.assert_close(merged(test_x), comp(test_x), rtol=1e-4, atol=1e-4)
    assert merged.rank == 6 + comp.q
    assert after < 0.8 * before, (before, after)


def test_compensate_model_sequential_reduces_every_layer(tiny_vit):
    ref = tiny_vit
    model = apply_plan_(copy.deepcopy(ref), {n: LayerChoice(rank=8) for n in encoder_linears(ref)})
    reports = compensate_model_(model, ref, _images(16), progress=False)
    assert len(reports) == 8
    assert all(r.error_after < r.error_before for r in reports.values())
    assert all(isinstance(m, LowRankLinear) and m.rank == 8 + r.q
               for (n, r), m in zip(reports.items(), (model.get_submodule(n) for n in reports)))


def test_partial_finetune_touches_only_allowed_params(tiny_vit):
    teacher = copy.deepcopy(tiny_vit)
    model = apply_plan_(copy.deepcopy(tiny_vit), {n: LayerChoice(rank=8) for n in encoder_linears(tiny_vit)})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ds = torch.utils.data.TensorDataset(_images(32), torch.randint(0, 10, (32,)))
    losses = partial_finetune_(model, teacher, ds, epochs=1, lr=1e-2, batch_size=8, progress=False)
    assert len(losses) == 4
    for n, p in model.named_parameters():
        allowed = n.endswith("bias") or "norm" in n or n.startswith(("head", "patch_embed"))
        if not allowed:
            assert torch.equal(before[n], p), f"{n} must stay frozen"
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if n.startswith("head"))
