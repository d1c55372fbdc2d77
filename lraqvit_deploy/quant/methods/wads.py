"""WADS: weight-aware distribution scaling (LRA-QViT §3.3, Eq. 12-14).

A channel scale alpha on a layer's input trades activation range against weight range:
Y = Q(X / alpha) Q(alpha W). WADS searches alpha per input channel by minimising

    ||Q(X / alpha) Q(alpha W)^T - X W^T||^2  +  ||Q(alpha W) - W||^2          (Eq. 14)

with straight-through rounding (Adam steps on log alpha over calibration rows; see
`AlphaSearchConfig` for the budget). The
second term keeps alpha from moving activation outliers into the weights; QADS is the first
term alone (Eq. 12). Only layers whose own weight error ||Q(W) - W||^2 is below the mean over
all quantized layers get an alpha (`select_layers`): they have weight precision to spare.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

from ...layers.fake_quant import fake_quant_per_token_dynamic, fake_quant_symmetric, fake_quant_weight
from .._registry import register_quant_handler
from ..api import quantize_layers_, scalable
from ..calibrate import InputStats
from ..configs import WADSConfig, AlphaSearchConfig
from ..fold import Target


def weight_error(weight: torch.Tensor, bits: int = 8, group_size: Optional[int] = None) -> float:
    """L(w) = ||Q(W) - W||^2 with symmetric per-channel (or per-block) scales."""
    w = weight.detach().float()
    return float((fake_quant_weight(w, bits, group_size) - w).pow(2).sum())


def select_layers(errors: Dict[str, float]) -> List[str]:
    """The layers whose weight error is below the mean over all of them (WADS' threshold)."""
    if not errors:
        return []
    mean = sum(errors.values()) / len(errors)
    return [name for name, e in errors.items() if e < mean]


def quantize_activation(x: torch.Tensor, scheme: str, bits: int = 8, symmetric: bool = True,
                        ste: bool = False) -> torch.Tensor:
    """Fake-quantize calibration inputs x (N, T, C) the way QuantLinear will, scales from x itself."""
    qmax = 2 ** (bits - 1) - 1
    if scheme == "per_tensor_static":
        return fake_quant_symmetric(x, x.detach().abs().amax().clamp_min(1e-8) / qmax, bits, ste)
    if scheme == "per_token_static":
        scale = x.detach().abs().amax(dim=(0, 2)).clamp_min(1e-8)[:, None] / qmax
        return fake_quant_symmetric(x, scale, bits, ste)
    if scheme == "per_token_dynamic":
        return fake_quant_per_token_dynamic(x, bits, symmetric, ste)
    raise ValueError(f"unknown activation scheme {scheme!r}")


@dataclass
class AlphaSearch:
    """Result of one layer's search: the alpha and the objective before (alpha = 1) and after."""

    alpha: torch.Tensor
    loss_init: float
    loss_final: float
    steps: int = 0  # the search steps taken (fewer than iters when patience stopped it)


class _RowsOf(torch.autograd.Function):
    """alpha (C,) as the (len(rows), C) rows `rows` of alpha broadcast over all `n` calibration rows.

    Forward: a broadcast view, no copy. Backward: the gradient placed at its rows of an (n, C)
    zero tensor and summed over them, the very reduction autograd runs when alpha divides all n
    rows and only `rows` reach the loss: the search's gradients keep the bits of quantizing
    everything and subsampling after (tests/lraqvit_deploy/quant/test_fast_calibration.py).
    """

    @staticmethod
    def forward(ctx, alpha: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
        ctx.save_for_backward(rows)
        ctx.n = n
        return alpha.expand(len(rows), -1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (rows,) = ctx.saved_tensors
        full = grad.new_zeros(ctx.n, grad.shape[1]).index_copy_(0, rows, grad)
        return full.sum(dim=0), None, None


WEIGHT_TERMS = ("literal", "scaled", "none")


class _Objective:
    """Eq. 14 (or Eq. 12 without the weight term) on calibration inputs X (N, T, C).

    weight_term: "literal" (Eq. 14 as printed, ||Q(aW) - W||^2; True), "scaled" (the quantization
    error of the weight the layer effectively runs, ||Q(aW)/a - W||^2) or "none" (Eq. 12; False).
    normalize: the output term as a fraction of ||X W^T||^2 over the same rows and the weight term
    as a fraction of ||W||^2, so calibration size and token count do not shift their balance.

    A search step samples rows (tokens) and quantizes only those. That is exact for every scheme:
    per_token_dynamic quantizes each row with its own scale, and the static schemes' scales of
    X / alpha come from maxima of the WHOLE tensor that are computed once here (max |x| per channel
    for per_tensor_static, per (token position, channel) for per_token_static): the max of
    |x| / alpha is that max divided by alpha to the last bit. So a step on sampled rows computes the
    same numbers as quantizing every row and subsampling after, at a fraction of the cost.
    """

    def __init__(self, x: torch.Tensor, weight: torch.Tensor, scheme: str, w_bits: int, a_bits: int,
                 symmetric: bool, weight_term, normalize: bool = False, group_size: Optional[int] = None):
        if scheme not in ("per_tensor_static", "per_token_static", "per_token_dynamic"):
            raise ValueError(f"unknown activation scheme {scheme!r}")
        weight_term = {True: "literal", False: "none"}.get(weight_term, weight_term)
        if weight_term not in WEIGHT_TERMS:
            raise ValueError(f"weight_term must be one of {', '.join(WEIGHT_TERMS)}, got {weight_term!r}")
        x = x.detach().float()
        self.tokens = x.shape[1]
        self.x = x.reshape(-1, x.shape[-1])  # (rows, C)
        self.w = weight.detach().float().to(self.x.device)
        self.scheme, self.w_bits, self.a_bits, self.symmetric = scheme, w_bits, a_bits, symmetric
        self.group_size = group_size
        self.weight_term = weight_term
        self.rows = self.x.shape[0]
        self.ref = self.x @ self.w.T  # (rows, out), constant
        # normalize: both terms relative, / ||X W^T||^2 and / ||W||^2 (divisors 1 otherwise)
        self.ref_sq = float(self.ref.pow(2).sum().clamp_min(1e-30)) if normalize else 1.0
        self.w_sq = float(self.w.pow(2).sum().clamp_min(1e-30)) if normalize else 1.0
        self.absmax = None  # the static schemes' whole-tensor maxima of |x|
        if scheme == "per_tensor_static":
            self.absmax = self.x.abs().amax(dim=0)  # (C,)
        elif scheme == "per_token_static":
            self.absmax = x.abs().amax(dim=0)  # (T, C)

    def _static_scale(self, alpha: torch.Tensor, rows: Optional[torch.Tensor]) -> torch.Tensor:
        """The static scale of X / alpha for each selected row, from the whole tensor (no gradient)."""
        qmax = 2 ** (self.a_bits - 1) - 1
        m = self.absmax / alpha.detach()
        if self.scheme == "per_tensor_static":
            return m.amax().clamp_min(1e-8) / qmax
        per_token = m.amax(dim=1).clamp_min(1e-8) / qmax  # (T,)
        idx = torch.arange(self.rows, device=m.device) if rows is None else rows
        return per_token[idx % self.tokens][:, None]

    def _rows(self, rows: Optional[torch.Tensor]):
        if rows is None:
            return self.x, self.ref
        return self.x.index_select(0, rows), self.ref.index_select(0, rows)

    def __call__(self, log_alpha: torch.Tensor, rows: torch.Tensor | None = None, ste: bool = True) -> torch.Tensor:
        """The objective at alpha = exp(log_alpha) on `rows` (all when None), scaled to all rows; autograd-able."""
        alpha = log_alpha.exp()
        x, ref = self._rows(rows)
        xa = x / (alpha if rows is None else _RowsOf.apply(alpha, rows, self.rows))
        if self.scheme == "per_token_dynamic":
            xq = fake_quant_per_token_dynamic(xa, self.a_bits, self.symmetric, ste)
        else:
            xq = fake_quant_symmetric(xa, self._static_scale(alpha, rows), self.a_bits, ste)
        aw = self.w * alpha[None, :]
        wq = fake_quant_weight(aw, self.w_bits, self.group_size, ste)
        loss = (xq @ wq.T - ref).pow(2).sum() * (self.rows / xq.shape[0]) / self.ref_sq
        if self.weight_term == "literal":  # Eq. 14 as printed: ||Q(aW) - W||^2, about ||(a - 1) W||^2
            loss = loss + (wq - self.w).pow(2).sum() / self.w_sq
        elif self.weight_term == "scaled":  # the error of the weight the layer effectively runs, Q(aW) / a
            loss = loss + (wq / alpha[None, :] - self.w).pow(2).sum() / self.w_sq
        return loss


def search_alpha(x: torch.Tensor, weight: torch.Tensor, scheme: str = "per_token_dynamic", iters: int = 300,
                 lr: float = 1e-2, w_bits: int = 8, a_bits: int = 8, symmetric: bool = True,
                 weight_term=True, max_rows: int = 4096, seed: int = 0,
                 sampling: str = "fresh", normalize: bool = False, patience: int = 0,
                 group_size: Optional[int] = None) -> AlphaSearch:
    """Minimise Eq. 14 (Eq. 12 with `weight_term=False`) over alpha; never returns a worse alpha than 1.

    Adam on log alpha, `iters` steps, each on `max_rows` rows (all rows when there are no more),
    on x's device: with `sampling="fresh"` drawn afresh every step, with "fixed" drawn once. The
    draws come from a CPU generator seeded with `seed`, so they are the same on every device. The
    candidates, each scored on ALL rows without straight-through rounding at the end: alpha = 1,
    the last iterate, the average of log alpha over the second half of the steps (it averages out
    the noise of fresh rows), and, when every step sees the same rows, the best iterate seen.
    `patience` > 0 (same rows only): stop after that many steps without a new best lower than
    (1 - 1e-4) x the best so far.
    """
    if sampling not in ("fresh", "fixed"):
        raise ValueError(f"sampling must be 'fresh' or 'fixed', got {sampling!r}")
    obj = _Objective(x, weight, scheme, w_bits, a_bits, symmetric, weight_term, normalize, group_size)
    dev = obj.x.device
    log_alpha = torch.zeros(weight.shape[1], device=dev, requires_grad=True)
    opt = torch.optim.Adam([log_alpha], lr=lr)
    g = torch.Generator().manual_seed(seed)
    full = obj.rows <= max_rows
    fixed = None if full or sampling == "fresh" else torch.randperm(obj.rows, generator=g)[:max_rows].sort()[0].to(dev)
    same_rows = full or fixed is not None  # every step sees the same rows: a deterministic objective
    with torch.no_grad():
        loss_init_t = obj(log_alpha, ste=False)
        start_t = loss_init_t if fixed is None else obj(log_alpha, fixed, ste=False)
    loss_init = float(loss_init_t)
    best, best_loss = log_alpha.detach().clone(), start_t
    tail_sum, tail_n, tail_from = torch.zeros_like(best), 0, iters // 2
    stop_early = patience > 0 and same_rows
    since_best, target, steps = 0, float(best_loss) * (1 - 1e-4), 0
    for it in range(iters):
        steps = it + 1
        rows = (None if full else fixed if fixed is not None
                else torch.randperm(obj.rows, generator=g)[:max_rows].to(dev))
        loss = obj(log_alpha, rows)
        opt.zero_grad()
        loss.backward()
        loss = loss.detach()
        if same_rows:  # loss is of the current alpha, before this step; compared on the device (no sync)
            better = loss < best_loss
            best = torch.where(better, log_alpha.detach(), best)
            best_loss = torch.where(better, loss, best_loss)
        opt.step()
        if it >= tail_from:
            tail_sum += log_alpha.detach()
            tail_n += 1
        if stop_early:  # one host sync per step
            current = float(loss)
            if current < target:
                since_best, target = 0, current * (1 - 1e-4)
            else:
                since_best += 1
                if since_best >= patience:
                    break
    with torch.no_grad():
        candidates = [log_alpha.detach()] + ([tail_sum / tail_n] if tail_n > 1 else [])
        losses = [float(obj(c, ste=False)) for c in candidates]
        if same_rows:  # best only moves when every step sees the same rows; otherwise it is alpha = 1
            candidates.append(best)
            losses.append(float(obj(best, ste=False)))
    i = min(range(len(candidates)), key=losses.__getitem__)
    if losses[i] >= loss_init:
        return AlphaSearch(torch.ones_like(log_alpha.detach()), loss_init, loss_init, steps)
    return AlphaSearch(candidates[i].exp(), loss_init, losses[i], steps)


def alpha_search(config: AlphaSearchConfig, weight_term: bool) -> Callable[[Target, InputStats], AlphaSearch]:
    """Per-layer scale of QADS (`weight_term=False`) / WADS: the searched alpha where it lowers the objective."""

    def scale(t: Target, stats: InputStats) -> Optional[torch.Tensor]:
        res = search_alpha(stats.inputs, t.linear.weight, config.act_scheme, config.wads_iters, config.wads_lr,
                           config.w_bits, config.a_bits, config.act_symmetric,
                           weight_term=config.wads_weight_term if weight_term else "none",
                           max_rows=config.wads_max_rows, seed=config.seed, sampling=config.wads_sampling,
                           normalize=config.wads_normalize, patience=config.wads_patience,
                           group_size=config.w_group_size)
        return res  # quantize_ keeps res.alpha where it lowers the objective, and records the objective

    return scale


@register_quant_handler(WADSConfig)
def _wads_transform(model, config: WADSConfig, calib_images):
    def select(targets: List[Target]) -> List[Target]:
        errors = {t.name: weight_error(t.linear.weight, config.w_bits, config.w_group_size) for t in targets}
        below = set(select_layers(errors))
        return [t for t in targets if t.name in below and scalable(t, config.fc2)]

    return quantize_layers_(model, config, calib_images, select=select, scale=alpha_search(config, True),
                            keep_inputs=True)
