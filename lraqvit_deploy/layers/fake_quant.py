"""Fake quantizers: symmetric uniform Q(x) = clamp(round(x / s), -2^(b-1), 2^(b-1) - 1) * s (METHODS.md §1.5).

Weight scales are per output row: `per_channel_weight_scale` (max |W[o, :]|, what QuantLinear and
every backend use) or `clip_scale` (the clip ratio of max |w| chosen per row to minimise the
rounding MSE, for the low-bit weights of MLoRQ plans), or per block of `group_size` consecutive
input columns of a row (blockwise 4-bit, XNNPACK's `qb4w`): shape (out, in // group_size). Group
scales are stored by XNNPACK as bfloat16, so they are rounded to bfloat16 here (`bf16_scale`) and
the integers are computed with the rounded scale: the simulator and the program hold the same numbers. Activations are per tensor / per token with
static scales, or per token with run-time scales (`fake_quant_per_token_dynamic`).
"""
from __future__ import annotations

from typing import Optional, Tuple

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
    with torch.no_grad():
        w = w.detach()
    buf = torch.empty_like(w)
    for ratio in torch.linspace(1.0, min_ratio, grid).tolist():
        s = amax * ratio / qmax
        # fake_quant_symmetric(w, s) - w, in one buffer (the same operations in the same order: same numbers)
        torch.div(w, s, out=buf)
        buf.round_().clamp_(-qmax - 1, qmax).mul_(s).sub_(w)
        err = buf.pow_(2).sum(dim=1, keepdim=True)
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


def bf16_scale(scale: torch.Tensor) -> torch.Tensor:
    """`scale` rounded to the nearest bfloat16 (what XNNPACK stores for blockwise scales), never zero."""
    return scale.float().clamp_min(1e-30).to(torch.bfloat16).float().clamp_min(float(torch.finfo(torch.bfloat16).tiny))


def expand_scale(scale: torch.Tensor, in_features: int) -> torch.Tensor:
    """A (out,) per-channel or (out, in // g) group scale as an (out, in) tensor matching the weight."""
    if scale.dim() == 1:
        return scale[:, None].expand(-1, in_features)
    return scale.repeat_interleave(in_features // scale.shape[1], dim=1)


def weight_scale(w: torch.Tensor, bits: int, group_size: Optional[int] = None, mse_clip: bool = False,
                 grid: int = 12) -> torch.Tensor:
    """Symmetric weight scale per output row (`group_size` None) or per (row, block of `group_size` inputs).

    `mse_clip` picks each row's (or block's) clip ratio to minimise the rounding error (`clip_scale`);
    otherwise the scale is max |w| / qmax. Group scales are rounded to bfloat16 (`bf16_scale`).
    """
    w = w.detach().float()
    out_f, in_f = w.shape
    if group_size is None:
        return clip_scale(w, bits, grid) if mse_clip else per_channel_weight_scale(w, bits)
    if group_size <= 0 or in_f % group_size:
        raise ValueError(f"group_size {group_size} does not divide in_features {in_f}")
    blocks = w.reshape(out_f * (in_f // group_size), group_size)
    s = clip_scale(blocks, bits, grid) if mse_clip else per_channel_weight_scale(blocks, bits)
    return bf16_scale(s.reshape(out_f, in_f // group_size))


def quantize_weight(w: torch.Tensor, bits: int, group_size: Optional[int] = None,
                    mse_clip: bool = True, grid: int = 12) -> Tuple[torch.Tensor, torch.Tensor]:
    """(dequantized weight, scale) at `bits`, per row or per block of `group_size` inputs (`weight_scale`)."""
    s = weight_scale(w, bits, group_size, mse_clip, grid)
    wq = fake_quant_symmetric(w.float(), expand_scale(s, w.shape[1]), bits)
    return wq.to(w.dtype), s


def fake_quant_weight(w: torch.Tensor, bits: int, group_size: Optional[int] = None, ste: bool = False) -> torch.Tensor:
    """Q(W) with max-abs scales per row or per block (`weight_scale`); `ste` passes the gradient through rounding."""
    return fake_quant_symmetric(w, expand_scale(weight_scale(w, bits, group_size), w.shape[1]).to(w.device), bits, ste)
