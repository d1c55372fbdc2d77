"""`quantize_(model, config, calib_images)`: INT8 post-training quantization, in place (torchao style).

`quantize_` dispatches on `type(config)` to the handler of that method (`quant/methods/`). Every
handler runs the same three steps, `quantize_layers_`: (1) one calibration pass over the images
records every encoder-block Linear's input statistics (and, for the alpha searches, the chosen
layers' inputs); (2) for scaling methods, compute a channel scale alpha per chosen layer input,
fold it into the preceding op (fold.py) and divide that layer's statistics by it (exact: the fold
turns its input into x / alpha and leaves the others); (3) swap every encoder-block Linear for a
`QuantLinear` carrying those scales. Everything runs on the model's device.
"""
from __future__ import annotations

import copy
import time
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn as nn

from ..errors import DeployError
from ..layers.quant_linear import QuantLinear
from ..layers.swap import replace_module
from ._registry import quant_handler
from .calibrate import CalibrationSummary, InputStats, collect_stats
from .configs import BaseQuantConfig
from .fold import Target, find_targets, fold_scale

Select = Callable[[List[Target]], List[Target]]  # the layers a method scales
# alpha (in,) of one layer, None: leave it; or an objective search's result (.alpha, .loss_init, .loss_final)
Scale = Callable[[Target, InputStats], Any]


def quantize_(model: nn.Module, config: BaseQuantConfig, calib_images: torch.Tensor) -> CalibrationSummary:
    """Quantize `model`'s encoder-block Linears in place; returns what was done and how long it took.

    Example:
        >>> cfg = quant_config("wads")
        >>> summary = quantize_(model, cfg, calibration_batch(train_set, 32))
    """
    return quant_handler(config)(model, config, calib_images)


def scalable(t: Target, fc2: str) -> bool:
    """Whether a channel scale on `t`'s input can be folded, or executed explicitly (`fc2` = 'explicit')."""
    return t.foldable or fc2 == "explicit"


def quantize_layers_(model: nn.Module, config: BaseQuantConfig, calib_images: torch.Tensor,
                     select: Optional[Select] = None, scale: Optional[Scale] = None,
                     keep_inputs: bool = False) -> CalibrationSummary:
    """The steps every method shares; `select` and `scale` give a scaling method's channel scales.

    `keep_inputs` keeps the chosen layers' calibration inputs in their `InputStats` (alpha searches).
    One forward pass over `calib_images` records every target's statistics (and the chosen
    layers' inputs); the statistics after folding follow from it (`InputStats.divided`).
    """
    targets = find_targets(model)
    if not targets:
        raise DeployError("no encoder-block Linear found to quantize (expected timm ViT/DeiT/Swin blocks with "
                          "attn.qkv, attn.proj, mlp.fc1, mlp.fc2).")
    g = config.w_group_size
    bad = [t for t in targets if g is not None and t.linear.in_features % g]
    if bad:
        raise DeployError(f"{bad[0].name}: w_group_size {g} does not divide its {bad[0].linear.in_features} input "
                          f"columns ({len(bad)} layer(s) like it); choose a group size that divides every layer's "
                          "in_features (e.g. 32), or None for per-channel scales.")
    summary = CalibrationSummary(config.method, config.act_scheme, len(calib_images), len(targets))
    t0 = time.perf_counter()
    chosen = (select(targets) if select is not None else targets) if scale is not None else []
    names = [t.name for t in chosen]
    stats = collect_stats(model, targets, calib_images, config.batch_size, keep_inputs=names if keep_inputs else (),
                          token_channel=names, progress=config.progress)
    calib = time.perf_counter() - t0
    explicit: Dict[str, torch.Tensor] = {}
    if chosen:
        t0 = time.perf_counter()
        alphas = _channel_scales(chosen, config, stats, scale, summary)
        for t in targets:  # fold after every search: each search saw the unfolded model, as its inputs did
            if t.name not in alphas:
                continue
            stats[t.name] = stats[t.name].divided(alphas[t.name])
            if t.foldable:
                fold_scale(t, alphas[t.name])
                summary.scaled_layers.append(t.name)
            else:
                explicit[t.name] = alphas[t.name]
                summary.explicit_scale_layers.append(t.name)
        summary.search_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t in targets:
        _swap(model, t, stats[t.name], config, explicit.get(t.name))
    summary.calib_seconds = calib + time.perf_counter() - t0
    return summary


def _channel_scales(chosen: List[Target], config: BaseQuantConfig, stats: Dict[str, InputStats], scale: Scale,
                    summary: CalibrationSummary) -> Dict[str, torch.Tensor]:
    """alpha (in,) for each chosen layer that `scale` gives one; per-layer seconds into `summary`."""
    from tqdm import tqdm

    alphas: Dict[str, torch.Tensor] = {}
    bar = tqdm(chosen, desc=f"{config.method} scales", unit="layer", disable=not config.progress, leave=False)
    for t in bar:
        bar.set_postfix_str(t.name, refresh=False)
        t0 = time.perf_counter()
        alpha = scale(t, stats[t.name])
        if hasattr(alpha, "loss_init"):  # an objective search (WADS / QADS): kept only where it lowers it
            summary.layer_objective[t.name] = [alpha.loss_init, min(alpha.loss_final, alpha.loss_init)]
            alpha = alpha.alpha if alpha.loss_final < alpha.loss_init else None
        stats[t.name].inputs = None  # free memory as we go
        if alpha is not None:
            alphas[t.name] = alpha
        summary.layer_search_seconds[t.name] = time.perf_counter() - t0
    return alphas


def _swap(model: nn.Module, t: Target, stats: InputStats, config: BaseQuantConfig,
          input_scale: Optional[torch.Tensor]) -> None:
    qmax = 2 ** (config.a_bits - 1) - 1
    linear = t.linear
    if input_scale is not None:  # fc2 'explicit': x / alpha at run time, alpha into the columns
        linear = nn.Linear(t.linear.in_features, t.linear.out_features, t.linear.bias is not None)
        linear.load_state_dict(t.linear.state_dict())
        with torch.no_grad():
            linear.weight.mul_(input_scale[None, :].to(linear.weight))
    q = QuantLinear.from_linear(linear, config.act_scheme, w_bits=config.w_bits, a_bits=config.a_bits,
                                act_symmetric=config.act_symmetric, num_tokens=stats.token_absmax.numel(),
                                w_group_size=config.w_group_size)
    if config.w_mse_clip:
        from ..layers.fake_quant import weight_scale

        q.w_scale = weight_scale(q.linear.weight, config.w_bits, config.w_group_size, mse_clip=True)
    with torch.no_grad():
        if config.act_scheme == "per_tensor_static":
            q.act_scale.copy_(stats.tensor_absmax.clamp_min(1e-8) / qmax)
        elif config.act_scheme == "per_token_static":
            q.act_scale.copy_(stats.token_absmax.clamp_min(1e-8) / qmax)
        q.tensor_act_scale.copy_(stats.tensor_absmax.clamp_min(1e-8) / qmax)
        if input_scale is not None:
            q.input_scale = input_scale.detach().float().clone()
    q.to(t.linear.weight.device)  # the buffers QuantLinear makes on the CPU follow the model's weights
    replace_module(model, t.name, q)


def float_copy(model: nn.Module) -> nn.Module:
    """A deep copy with every QuantLinear back to its float Linear: the same folded weights, no rounding.

    This is the FP32 model an INT8 artifact was quantized from (WADS/SmoothQuant scales stay folded,
    which is exact in real arithmetic), for FP32/FP16 baseline programs built from an INT8 artifact.
    """
    out = copy.deepcopy(model)
    for name, m in list(out.named_modules()):
        if isinstance(m, QuantLinear):
            replace_module(out, name, m.to_linear())
    return out
