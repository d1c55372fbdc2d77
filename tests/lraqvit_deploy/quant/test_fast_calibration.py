"""Fast calibration (issue 12): the alpha search quantizes only the rows it samples, one calibration
pass serves the whole `quantize_`, and neither changes a result.

The references below are the former implementations, written out: the search objective that
fake-quantized the WHOLE calibration tensor and then subsampled rows, and a `quantize_` for the
methods without channel scales that hooks the FP32 model and builds each QuantLinear by hand.
"""
from __future__ import annotations

import copy

import pytest
import torch

from conftest import images, low_rank, make_tiny
from lraqvit_deploy.layers import QuantLinear
from lraqvit_deploy.layers.fake_quant import (fake_quant_per_token_dynamic, fake_quant_symmetric,
                                              per_channel_weight_scale)
from lraqvit_deploy.layers.swap import replace_module
from lraqvit_deploy.quant import find_targets, float_copy, quant_config, quantize_
from lraqvit_deploy.quant.calibrate import collect_stats
from lraqvit_deploy.quant.methods.wads import _Objective, search_alpha

SCHEMES = [("per_tensor_static", True), ("per_token_static", True), ("per_token_dynamic", True),
           ("per_token_dynamic", False)]


# ----------------------------------------------------------------------------- the former search
def _old_quantize_activation(x, scheme, bits, symmetric, ste):
    qmax = 2 ** (bits - 1) - 1
    if scheme == "per_tensor_static":
        return fake_quant_symmetric(x, x.detach().abs().amax().clamp_min(1e-8) / qmax, bits, ste)
    if scheme == "per_token_static":
        return fake_quant_symmetric(x, x.detach().abs().amax(dim=(0, 2)).clamp_min(1e-8)[:, None] / qmax, bits, ste)
    return fake_quant_per_token_dynamic(x, bits, symmetric, ste)


class _OldObjective:
    """Eq. 14 as it was: fake-quantize all of X (N, T, C), then keep the sampled rows."""

    def __init__(self, x, weight, scheme, w_bits, a_bits, symmetric, weight_term):
        self.x, self.w = x.float(), weight.detach().float()
        self.scheme, self.w_bits, self.a_bits, self.symmetric = scheme, w_bits, a_bits, symmetric
        self.weight_term = weight_term
        self.rows = self.x.shape[0] * self.x.shape[1]
        self.ref = self.x.reshape(-1, self.x.shape[-1]) @ self.w.T

    def __call__(self, log_alpha, rows=None, ste=True):
        alpha = log_alpha.exp()
        xq = _old_quantize_activation(self.x / alpha, self.scheme, self.a_bits, self.symmetric, ste)
        xq = xq.reshape(-1, xq.shape[-1])
        aw = self.w * alpha[None, :]
        wq = fake_quant_symmetric(aw, per_channel_weight_scale(aw, self.w_bits)[:, None], self.w_bits, ste)
        ref = self.ref
        if rows is not None:
            xq, ref = xq[rows], ref[rows]
        loss = (xq @ wq.T - ref).pow(2).sum() * (self.rows / xq.shape[0])
        if self.weight_term:
            loss = loss + (wq - self.w).pow(2).sum()
        return loss


def _old_search(x, weight, scheme, iters, lr, symmetric, weight_term, max_rows, seed=0):
    obj = _OldObjective(x, weight, scheme, 8, 8, symmetric, weight_term)
    log_alpha = torch.zeros(weight.shape[1], requires_grad=True)
    opt = torch.optim.Adam([log_alpha], lr=lr)
    g = torch.Generator().manual_seed(seed)
    full = obj.rows <= max_rows
    with torch.no_grad():
        loss_init = float(obj(log_alpha, ste=False))
    best, best_loss = log_alpha.detach().clone(), loss_init
    tail = []  # the iterates of the second half, whose mean is a candidate too (as in search_alpha)
    for it in range(iters):
        rows = None if full else torch.randperm(obj.rows, generator=g)[:max_rows]
        loss = obj(log_alpha, rows)
        if full and float(loss.detach()) < best_loss:
            best, best_loss = log_alpha.detach().clone(), float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it >= iters // 2:
            tail.append(log_alpha.detach().clone())
    with torch.no_grad():
        candidates = [best, log_alpha.detach(), torch.stack(tail).sum(0) / len(tail)]
        losses = [float(obj(c, ste=False)) for c in candidates]
    i = min(range(3), key=losses.__getitem__)
    if losses[i] >= loss_init:
        return torch.ones(weight.shape[1]), loss_init, loss_init, log_alpha.detach()
    return candidates[i].exp(), loss_init, losses[i], log_alpha.detach()


def _tiny_inputs(n_images=16):
    """qkv / fc1 inputs of a tiny ViT on seeded images (N, 17, 64), with one outlier channel (as after LRA)."""
    model = make_tiny("vit")
    targets = [t for t in find_targets(model) if t.role in ("qkv", "fc1")][:2]
    stats = collect_stats(model, targets, images(model, n_images), keep_inputs=[t.name for t in targets])
    out = []
    for t in targets:
        x = stats[t.name].inputs.clone()
        x[..., 5] *= 20
        out.append((x, t.linear.weight.detach()))
    return out


@pytest.mark.parametrize("scheme,symmetric", SCHEMES)
def test_fast_objective_and_gradient_equal_quantize_all_then_subsample(scheme, symmetric, one_thread):
    """Same loss and the same gradient bits for the same alpha and the same sampled rows."""
    g = torch.Generator().manual_seed(0)
    for x, w in _tiny_inputs():
        rows_all = x.shape[0] * x.shape[1]
        for weight_term in (True, False):
            new = _Objective(x, w, scheme, 8, 8, symmetric, weight_term)
            old = _OldObjective(x, w, scheme, 8, 8, symmetric, weight_term)
            for rows in (None, torch.randperm(rows_all, generator=g)[:100]):
                la = (torch.randn(w.shape[1], generator=g) * 0.3)
                a, b = la.clone().requires_grad_(), la.clone().requires_grad_()
                lo, ln = old(a, rows), new(b, rows)
                lo.backward()
                ln.backward()
                torch.testing.assert_close(ln, lo, rtol=1e-6, atol=0)
                torch.testing.assert_close(b.grad, a.grad, rtol=1e-6, atol=1e-9)
                with torch.no_grad():
                    torch.testing.assert_close(new(la, rows, ste=False), old(la, rows, ste=False), rtol=1e-6, atol=0)


@pytest.mark.parametrize("scheme,symmetric", SCHEMES)
def test_fast_search_finds_the_same_alpha_as_quantize_all_then_subsample(scheme, symmetric, one_thread):
    """300 steps at lr 1e-2, 100 of 272 rows per step: the same alpha as the former search.

    The search is chaotic (straight-through rounding under Adam: a 1e-7 change in one gradient
    moves later roundings), so this holds only because each step's gradient has the same bits.
    """
    nontrivial = 0
    for x, w in _tiny_inputs():
        for weight_term in (True, False):
            ref_alpha, ref_init, ref_final, _ = _old_search(x, w, scheme, 300, 1e-2, symmetric, weight_term, 100)
            r = search_alpha(x, w, scheme, iters=300, lr=1e-2, symmetric=symmetric, weight_term=weight_term,
                             max_rows=100, seed=0)
            torch.testing.assert_close(r.alpha, ref_alpha, rtol=1e-6, atol=0)
            assert r.loss_init == pytest.approx(ref_init, rel=1e-6)
            assert r.loss_final == pytest.approx(ref_final, rel=1e-6)
            nontrivial += bool((r.alpha != 1).any())
    assert nontrivial >= 2  # the searches moved alpha, so the comparison means something


def test_fast_search_without_subsampling_matches_too(one_thread):
    x, w = _tiny_inputs(4)[0]  # 68 rows <= max_rows: every step sees all rows
    for scheme, symmetric in SCHEMES:
        ref_alpha, _, ref_final, _ = _old_search(x, w, scheme, 60, 3e-2, symmetric, True, 4096)
        r = search_alpha(x, w, scheme, iters=60, lr=3e-2, symmetric=symmetric)
        torch.testing.assert_close(r.alpha, ref_alpha, rtol=1e-6, atol=0)
        assert r.loss_final == pytest.approx(ref_final, rel=1e-6)


# ----------------------------------------------------------------------------- naive / per-token unchanged
def _reference_quantize(model, method, scheme, x):
    """quantize_ for a method without channel scales, by hand: hook every Linear, max |x|, swap."""
    config = quant_config(method, act_scheme=scheme, progress=False)
    targets = find_targets(model)
    seen = {t.name: [] for t in targets}
    hooks = [t.linear.register_forward_pre_hook(lambda m, a, n=t.name: seen[n].append(a[0].detach()))
             for t in targets]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for t in targets:
        inp = torch.cat(seen[t.name])
        inp = inp.reshape(inp.shape[0], -1, inp.shape[-1]).abs()
        q = QuantLinear.from_linear(t.linear, config.act_scheme, w_bits=8, a_bits=8,
                                    act_symmetric=config.act_symmetric, num_tokens=inp.shape[1])
        with torch.no_grad():
            if config.act_scheme == "per_tensor_static":
                q.act_scale.copy_(inp.amax().clamp_min(1e-8) / 127)
            elif config.act_scheme == "per_token_static":
                q.act_scale.copy_(inp.amax(dim=(0, 2)).clamp_min(1e-8) / 127)
            q.tensor_act_scale.copy_(inp.amax().clamp_min(1e-8) / 127)
        replace_module(model, t.name, q)
    return model


@pytest.mark.parametrize("family", ["vit", "swin", "dinov2"])
@pytest.mark.parametrize("lra", [False, True], ids=["dense", "lowrank"])
@pytest.mark.parametrize("method,scheme", [("naive", None), ("per-token", None), ("per-token", "per_token_static")])
def test_quantize_outputs_unchanged_for_naive_and_per_token(family, lra, method, scheme):
    model = make_tiny(family)
    if lra:
        low_rank(model)
    x = images(model)
    ref = _reference_quantize(copy.deepcopy(model), method, scheme, x)
    quantize_(model, quant_config(method, act_scheme=scheme, progress=False), x)
    ref_state, state = ref.state_dict(), model.state_dict()
    assert state.keys() == ref_state.keys()
    for k in state:
        assert torch.equal(state[k], ref_state[k]), k
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


# ----------------------------------------------------------------------------- one calibration pass
def _count_forwards(model):
    calls = []
    model.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    return calls


@pytest.mark.parametrize("family,lra", [("vit", True), ("swin", False), ("dinov2", False)])
@pytest.mark.parametrize("method,own", [
    ("wads", {"wads_iters": 15, "wads_lr": 1e-2, "fc2": "explicit", "act_scheme": "per_token_static"}),
    ("qads", {"wads_iters": 15, "wads_lr": 1e-2, "act_scheme": "per_tensor_static"}),
    ("smoothquant", {"fc2": "explicit"}),
    ("repq", {}),
])
def test_one_calibration_pass_and_the_scales_a_second_pass_would_give(family, lra, method, own):
    """The images go through the model once; the activation scales after folding are those of the folded model."""
    model = make_tiny(family)
    if lra:
        low_rank(model)
    x = images(model)
    calls = _count_forwards(model)
    s = quantize_(model, quant_config(method, progress=False, batch_size=4, **own), x)
    assert calls == [4, 4]  # 8 images, batch 4, one pass
    assert s.scaled_layers
    # a fresh pass over the folded FP32 model (explicit scales divided out) gives the same scales
    folded = float_copy(model)
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    explicit = {n: m.input_scale for n, m in quantized.items() if m.input_scale.numel()}
    assert set(explicit) == set(s.explicit_scale_layers)
    stats = collect_stats(folded, find_targets(folded), x, input_scales=explicit)
    for name, q in quantized.items():
        st = stats[name]
        torch.testing.assert_close(q.tensor_act_scale, st.tensor_absmax.clamp_min(1e-8) / 127, rtol=1e-5, atol=0)
        if q.act_scheme == "per_token_static":
            torch.testing.assert_close(q.act_scale, st.token_absmax.clamp_min(1e-8) / 127, rtol=1e-5, atol=0)
        elif q.act_scheme == "per_tensor_static":
            torch.testing.assert_close(q.act_scale, st.tensor_absmax.clamp_min(1e-8) / 127, rtol=1e-5, atol=0)


def test_summary_times_each_searched_layer():
    model = low_rank(make_tiny("vit"))
    s = quantize_(model, quant_config("qads", wads_iters=3, progress=False), images(model))
    assert s.scaled_layers and set(s.scaled_layers) <= set(s.layer_search_seconds)
    assert all(v >= 0 for v in s.layer_search_seconds.values())
    assert s.search_seconds >= sum(s.layer_search_seconds.values()) * 0.99
    # the objective of every search, before and after: a scaled layer's went down, none went up
    assert set(s.layer_objective) == set(s.layer_search_seconds)
    assert all(after <= before for before, after in s.layer_objective.values())
    assert all(s.layer_objective[n][1] < s.layer_objective[n][0] for n in s.scaled_layers)


def test_progress_bar_counts_layers_with_a_rate(capsys):
    model = make_tiny("vit")
    quantize_(model, quant_config("qads", wads_iters=2, progress=True), images(model))
    err = capsys.readouterr().err
    assert "qads scales" in err and ("layer/s" in err or "s/layer" in err)


# ----------------------------------------------------------------------------- device
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["wads", "smoothquant", "per-token"])
def test_quantize_runs_on_the_model_device(method):
    """A CUDA model is calibrated, searched and swapped on CUDA (the images may stay on the CPU)."""
    model = low_rank(make_tiny("vit"))
    x = images(model)
    with torch.no_grad():
        ref = model(x)
    own = {"wads_iters": 20} if method == "wads" else {}
    cpu = copy.deepcopy(model)
    quantize_(cpu, quant_config(method, progress=False, **own), x)
    gpu = model.cuda()
    s = quantize_(gpu, quant_config(method, progress=False, **own), x)
    for n, t in list(gpu.named_parameters()) + list(gpu.named_buffers()):
        assert t.is_cuda, n
    with torch.no_grad():
        out = gpu(x.cuda()).cpu()
        noise = (out - ref).pow(2).sum() / ref.pow(2).sum()
        assert noise < 1e-2  # > 20 dB SQNR, as on the CPU
        if method != "wads":  # no search: the same scales, up to float rounding
            torch.testing.assert_close(out, cpu(x), rtol=1e-2, atol=1e-2)
    if method == "wads":
        assert set(s.layer_search_seconds)


def test_fixed_rows_search_is_deterministic_and_never_worse_than_alpha_one(one_thread):
    """sampling="fixed": one seeded subset for every step; the alpha is chosen on all rows."""
    from lraqvit_deploy.errors import DeployError

    for x, w in _tiny_inputs():
        a = search_alpha(x, w, iters=40, max_rows=64, sampling="fixed", seed=3)
        b = search_alpha(x, w, iters=40, max_rows=64, sampling="fixed", seed=3)
        torch.testing.assert_close(a.alpha, b.alpha, rtol=0, atol=0)
        assert a.loss_final <= a.loss_init
        full = _Objective(x, w, "per_token_dynamic", 8, 8, True, True)
        with torch.no_grad():  # loss_final is the objective over ALL rows at the returned alpha
            assert float(full(a.alpha.log(), ste=False)) == pytest.approx(a.loss_final, rel=1e-5)
        c = search_alpha(x, w, iters=40, max_rows=64, sampling="fixed", seed=4)  # another subset, another path
        assert c.loss_final <= c.loss_init
    with pytest.raises(DeployError, match="wads_sampling = 'sometimes': must be one of fixed, fresh"):
        quant_config("wads", wads_sampling="sometimes")
    with pytest.raises(ValueError, match="sampling must be"):
        search_alpha(x, w, iters=1, sampling="other")


def test_wads_objective_variants(one_thread):
    """weight_term="scaled" measures Q(aW)/a - W; normalize makes the balance independent of the row count."""
    from lraqvit_deploy.errors import DeployError

    x, w = _tiny_inputs(4)[0]
    two = torch.full((w.shape[1],), 2.0).log()  # a uniform alpha = 2: per-token output term unchanged
    zero = torch.zeros(w.shape[1])
    with torch.no_grad():
        lit = _Objective(x, w, "per_token_dynamic", 8, 8, True, "literal")
        sca = _Objective(x, w, "per_token_dynamic", 8, 8, True, "scaled")
        none = _Objective(x, w, "per_token_dynamic", 8, 8, True, "none")
        out_only = float(none(two, ste=False))
        assert float(lit(zero, ste=False)) == pytest.approx(float(sca(zero, ste=False)), rel=1e-6)
        # literal: ||Q(2W) - W||^2 ~ ||W||^2; scaled: ||Q(2W)/2 - W||^2 = ||Q(W) - W||^2 (scale-equivariant)
        assert float(lit(two, ste=False)) - out_only == pytest.approx(float(w.pow(2).sum()), rel=0.05)
        assert float(sca(two, ste=False)) == pytest.approx(float(sca(zero, ste=False)), rel=1e-4)
        # normalize: the same value on the calibration set and on it twice over; unnormalized: doubled output term
        xx = torch.cat([x, x])
        a = _Objective(x, w, "per_token_dynamic", 8, 8, True, "scaled", normalize=True)
        b = _Objective(xx, w, "per_token_dynamic", 8, 8, True, "scaled", normalize=True)
        assert float(a(two, ste=False)) == pytest.approx(float(b(two, ste=False)), rel=1e-5)
        assert float(_Objective(xx, w, "per_token_dynamic", 8, 8, True, "none")(two, ste=False)) == \
            pytest.approx(2 * out_only, rel=1e-5)
    r = search_alpha(x, w, iters=30, weight_term="scaled", normalize=True, sampling="fixed")
    assert r.loss_final <= r.loss_init
    cfg = quant_config("wads", wads_weight_term="scaled", wads_normalize=True, wads_iters=5, progress=False)
    model = make_tiny("vit")
    quantize_(model, cfg, images(model))  # runs end to end with the variant
    with pytest.raises(DeployError, match="wads_weight_term = 'eq14': must be one of literal, scaled"):
        quant_config("wads", wads_weight_term="eq14")
    with pytest.raises(ValueError, match="weight_term must be one of"):
        _Objective(x, w, "per_token_dynamic", 8, 8, True, "other")


def test_patience_stops_a_search_that_no_longer_improves(one_thread):
    x, w = _tiny_inputs(4)[0]
    full = search_alpha(x, w, iters=400, lr=1e-2, sampling="fixed")
    short = search_alpha(x, w, iters=400, lr=1e-2, sampling="fixed", patience=5)
    assert full.steps == 400 and 5 <= short.steps < 400
    assert short.loss_final <= short.loss_init
    fresh = search_alpha(x, w, iters=50, max_rows=32, sampling="fresh", patience=5)  # noisy: never stops early
    assert fresh.steps == 50
