"""Calibration: run the FP32 model on the calibration images and record each target's input.

Per target we keep the statistics every scheme needs (max |x| per tensor, per token position and
per channel) and, when asked, the max |x| per (token position, channel) and the inputs themselves
(for the WADS/QADS alpha search). Inputs are viewed as (batch, tokens, channels); for Swin's
(B, H, W, C) the tokens are H*W. Everything stays on the device the model runs on.

One pass serves a whole `quantize_`: a channel scale alpha folded into a layer's producer turns
that layer's input into exactly x / alpha and leaves every other layer's input as it was (each
fold site feeds only its own Linear, and the model's function is unchanged), so the statistics
after the folds follow from the pass before them (`InputStats.divided`): no second pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

import torch
import torch.nn as nn

from ..calibration import calibrate
from ..errors import DeployError
from .fold import Target


@dataclass
class InputStats:
    """Max |x| of one Linear's input over the calibration set."""

    tensor_absmax: torch.Tensor  # ()
    token_absmax: torch.Tensor  # (T,)
    channel_absmax: torch.Tensor  # (C,)
    inputs: Optional[torch.Tensor] = None  # (N, T, C) when kept
    token_channel_absmax: Optional[torch.Tensor] = None  # (T, C) when kept

    def update(self, x: torch.Tensor, keep: bool, keep_token_channel: bool = False) -> None:
        tc = x.abs().amax(dim=0)  # (T, C); every other max follows from it (max is exact: same values)
        if tc.shape[0] != self.token_absmax.shape[0]:
            raise DeployError("calibration inputs changed their token count between batches; calibrate with "
                              "images of one size.")
        self.tensor_absmax = torch.maximum(self.tensor_absmax, tc.amax())
        self.token_absmax = torch.maximum(self.token_absmax, tc.amax(dim=1))
        self.channel_absmax = torch.maximum(self.channel_absmax, tc.amax(dim=0))
        if keep_token_channel:
            self.token_channel_absmax = tc if self.token_channel_absmax is None else \
                torch.maximum(self.token_channel_absmax, tc)
        if keep:
            self.inputs = x if self.inputs is None else torch.cat([self.inputs, x])

    def divided(self, alpha: torch.Tensor) -> "InputStats":
        """The statistics of x / alpha (alpha (C,) > 0), from the max |x| per (token, channel).

        The same numbers a pass over x / alpha would record: |x| / alpha is monotone in |x|, so
        max(|x|) / alpha is the max of |x| / alpha to the last bit. Inputs are not carried over.
        """
        if self.token_channel_absmax is None:
            raise DeployError("InputStats.divided needs the per (token, channel) max; collect it with "
                              "collect_stats(..., token_channel=[name]).")
        tc = self.token_channel_absmax / alpha.to(self.token_channel_absmax)
        return InputStats(tc.amax(), tc.amax(dim=1), tc.amax(dim=0), token_channel_absmax=tc)


def collect_stats(model: nn.Module, targets: List[Target], images: torch.Tensor, batch_size: int = 32,
                  keep_inputs: Iterable[str] = (), input_scales: Optional[Dict[str, torch.Tensor]] = None,
                  progress: bool = False, desc: str = "calibrate",
                  token_channel: Iterable[str] = ()) -> Dict[str, InputStats]:
    """Statistics of every target's input (divided by `input_scales[name]` where given).

    `keep_inputs` names the targets whose inputs are kept (N, T, C); `token_channel` those whose
    max |x| per (token, channel) is kept (for `InputStats.divided`).
    """
    if images.ndim != 4 or len(images) == 0:
        raise DeployError(f"calibration images must be a non-empty (N, 3, H, W) tensor, got {tuple(images.shape)}.")
    keep, keep_tc, input_scales = set(keep_inputs), set(token_channel), input_scales or {}
    stats: Dict[str, InputStats] = {}

    def record(name: str, _mod: nn.Module, x: torch.Tensor) -> None:
        x = x.detach().float()
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        if name in input_scales:
            x = x / input_scales[name].to(x)
        if name not in stats:
            z = x.new_zeros
            stats[name] = InputStats(z(()), z(x.shape[1]), z(x.shape[2]))
        stats[name].update(x, name in keep, name in keep_tc)

    calibrate(model, images, {t.name: t.linear for t in targets}, pre=record, batch_size=batch_size,
              progress=progress, desc=desc)
    missing = [t.name for t in targets if t.name not in stats]
    if missing:
        raise DeployError(f"calibration never reached {missing[:3]}...; is the model's forward using these layers?")
    return stats


@dataclass
class CalibrationSummary:
    """What `quantize_` did and how long it took (for reports).

    `calib_seconds`: the calibration pass over the images and the swap to QuantLinear;
    `search_seconds`: the channel scales (alpha searches) after that pass, with
    `layer_search_seconds` per scaled-candidate layer; for an objective search (WADS, QADS)
    `layer_objective[name]` = [objective before, after] (after = before where no scale helped).
    """

    method: str
    act_scheme: str
    n_images: int
    n_layers: int
    scaled_layers: List[str] = field(default_factory=list)
    explicit_scale_layers: List[str] = field(default_factory=list)
    calib_seconds: float = 0.0
    search_seconds: float = 0.0
    layer_search_seconds: Dict[str, float] = field(default_factory=dict)
    layer_objective: Dict[str, List[float]] = field(default_factory=dict)


@torch.no_grad()
def record_tensor_act_scales_(model: nn.Module, images: torch.Tensor, batch_size: int = 32) -> int:
    """Set every QuantLinear's `tensor_act_scale` to max |x| / qmax of its input over `images` (in place).

    What `quantize_` records for every scheme, for QuantLinears made another way (MLoRQ plans), so a
    per-tensor backend (TensorRT's Q/DQ) can lower them without new images. Returns how many were set.
    """
    from ..layers.quant_linear import QuantLinear

    qls = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    amax = {n: torch.zeros(()) for n in qls}

    def hook(name):
        def fn(mod, inputs):
            x = inputs[0]
            if mod.input_scale.numel():
                x = x / mod.input_scale
            amax[name] = torch.maximum(amax[name], x.detach().abs().amax().float().cpu())
        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in qls.items()]
    try:
        was = model.training
        model.eval()
        for i in range(0, len(images), batch_size):
            model(images[i : i + batch_size])
        model.train(was)
    finally:
        for h in handles:
            h.remove()
    for n, m in qls.items():
        qmax = 2 ** (m.a_bits - 1) - 1
        m.tensor_act_scale.copy_((amax[n].clamp_min(1e-8) / qmax).to(m.tensor_act_scale))
    return len(qls)
