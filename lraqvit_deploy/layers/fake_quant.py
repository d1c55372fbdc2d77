"""Fake quantizers: symmetric uniform Q(x) = clamp(round(x / s), -2^(b-1), 2^(b-1) - 1) * s (METHODS.md §1.5).

Weight scales are per output row: `per_channel_weight_scale` (max |W[o, :]|, what QuantLinear and
every backend use) or `clip_scale` (the clip ratio of max |w| chosen per row to minimise the
rounding MSE, for the low-bit weights of MLoRQ plans). Activations are per tensor / per token with
static scales, or per token with run-time scales (`fake_quant_per_token_dynamic`).
"""
from __future__ import annotations

from typing import Tuple

import torch


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round() with a straight-through gradient (used by WADS' alpha search)."""
    return x + (torch.round(x) - x).detach()


def fake_quant_symmetric(x: torch.Tensor, scale: torch.Tensor, bits: int = 8, ste: bool = False) -> torch.Tensor:
    """Q(x) * s with Q(x) = clamp(round(x / s), -2^(b-1), 2^(b-1) - 1); `scale` broadcasts against x."""
    qmax = 2 ** (bits - 1) - 1
    r = round_ste if ste else torch.round
    return torch.clamp(r(x / scale), -qmax - 1, qmax) * scale


def per_channel_weight_scale(weight: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """max |W[o, :]| / qmax for each output channel (never zero)."""
    qmax = 2 ** (bits - 1) - 1
    return weight.detach().abs().amax(dim=1).clamp_min(1e-8) / qmax


def fake_quant_per_token_dynamic(x: torch.Tensor, bits: int = 8, symmetric: bool = True,
                                 ste: bool = False) -> torch.Tensor:
    """Each row (token) of x quantized with its own run-time scale (and zero point if asymmetric)."""
    r = round_ste if ste else torch.round
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = x.detach().abs().amax(dim=-1, keepdim=True).clamp_min(1e-8) / qmax
        return torch.clamp(r(x / scale), -qmax - 1, qmax) * scale
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    lo = x.detach().amin(dim=-1, keepdim=True).clamp_max(0)
    hi = x.detach().amax(dim=-1, keepdim=True).clamp_min(0)
    scale = ((hi - lo) / (qmax - qmin)).clamp_min(1e-8)
    zero = torch.clamp(torch.round(qmin - lo / scale), qmin, qmax)
    return (torch.clamp(r(x / scale) + zero, qmin, qmax) - zero) * scale


def clip_scale(w: torch.Tensor, bits: int, grid: int = 12, min_ratio: float = 0.45) -> torch.Tensor:
    """Per-row symmetric scale, the clip ratio of max|w| chosen per row to minimise the rounding MSE."""
    qmax = 2 ** (bits - 1) - 1
    amax = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-8)
    best_err, best_s = None, None
    for ratio in torch.linspace(1.0, min_ratio, grid).tolist():
        s = amax * ratio / qmax
        err = (fake_quant_symmetric(w, s, bits) - w).pow(2).sum(dim=1, keepdim=True)
        if best_err is None:
            best_err, best_s = err, s
        else:
            better = err < best_err
            best_err, best_s = torch.where(better, err, best_err), torch.where(better, s, best_s)
    return best_s[:, 0]


def quantize_rows(w: torch.Tensor, bits: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(dequantized weight, per-row scale) at `bits`, symmetric, MSE-clipped per row (`clip_scale`)."""
    s = clip_scale(w.float(), bits)
    return fake_quant_symmetric(w.float(), s[:, None], bits).to(w.dtype), s
