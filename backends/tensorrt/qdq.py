"""Explicit-quantization (Q/DQ) form of a per-tensor QuantLinear model, for TensorRT 8.5/10/11.

TensorRT quantizes symmetrically with static scales only: per-channel on weights (axis = output
channel), one scale per activation tensor. So a model is first brought to the simulator's
*per-tensor configuration* (`to_per_tensor_`: every QuantLinear `per_tensor_static`, weights and
weight scales kept as they are, activation scales calibrated), then each QuantLinear is swapped
for `QDQLinear`, whose forward uses torch's fake-quantize ops. The TorchScript ONNX exporter
turns those into QuantizeLinear/DequantizeLinear pairs on both MatMul inputs (NVIDIA's
placement: nothing on the bias, LayerNorm, softmax or GELU).
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, Iterable, Optional

import torch
import torch.nn as nn

from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.layers import LowRankLinear, QuantLinear

INT8_MIN, INT8_MAX = -128, 127
ENCODER_PREFIXES = ("blocks.", "layers.")  # timm ViT/DeiT/DINOv2 blocks, Swin stages


def is_encoder_linear(name: str, module: nn.Module) -> bool:
    """The Linears the paper quantizes: inside the encoder blocks (not patch embedding or head)."""
    return isinstance(module, nn.Linear) and name.startswith(ENCODER_PREFIXES)


def quant_linears(model: nn.Module) -> Dict[str, QuantLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


@torch.no_grad()
def calibrate_per_tensor_(model: nn.Module, calib_images: torch.Tensor, batch_size: int = 32) -> None:
    """Set every QuantLinear to `per_tensor_static` with scale max|x / input_scale| / 127.

    Statistics are taken with activation quantization off (weights stay quantized), one pass
    over `calib_images`; the absmax rule is the NaivePTQ baseline's.
    """
    qls = quant_linears(model)
    if not qls:
        raise DeployError("calibration needs QuantLinear modules; none found in the model.")
    amax: Dict[str, torch.Tensor] = {n: torch.zeros(()) for n in qls}
    saved = {n: m.act_scheme for n, m in qls.items()}

    def hook(name: str) -> Callable:
        def fn(mod: QuantLinear, inputs):
            x = inputs[0]
            if mod.input_scale.numel():
                x = x / mod.input_scale
            amax[name] = torch.maximum(amax[name], x.detach().abs().amax().float())
        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in qls.items()]
    try:
        for m in qls.values():
            m.act_scheme = "none"
        was_training = model.training
        model.eval()
        for i in range(0, len(calib_images), batch_size):
            model(calib_images[i:i + batch_size])
        model.train(was_training)
    except BaseException:
        for n, m in qls.items():
            m.act_scheme = saved[n]
        raise
    finally:
        for h in handles:
            h.remove()
    for n, m in qls.items():
        qmax = 2 ** (m.a_bits - 1) - 1
        m.act_scheme, m.act_symmetric = "per_tensor_static", True
        m.act_scale = (amax[n].clamp_min(1e-8) / qmax).reshape(()).to(m.linear.weight.device)


def to_per_tensor_(model: nn.Module, calib_images: torch.Tensor, method: str = "naive") -> str:
    """Bring `model` in place to the simulator's per-tensor configuration; returns how.

    * a model that already holds QuantLinears (e.g. a WADS artifact with per-token schemes)
      keeps its folded weights, weight scales and input scales; only the activation scales
      are recalibrated per tensor (TensorRT has no per-token INT8);
    * otherwise the encoder Linears are quantized with `lraqvit_deploy.quant.quantize_`
      (`method`, e.g. naive/smoothquant/wads), then recalibrated per tensor if the method's
      scheme is per-token.
    """
    if quant_linears(model):
        calibrate_per_tensor_(model, calib_images)
        return "kept the artifact's QuantLinear weights/scales; activation scales recalibrated per tensor"
    from lraqvit_deploy.quant import QuantConfig, quantize_

    quantize_(model, QuantConfig(method=method, progress=False), calib_images)
    how = f"lraqvit_deploy.quant.quantize_(method={method!r})"
    if not quant_linears(model):
        raise DeployError(f"{how} left no QuantLinear in the model.")
    if any(m.act_scheme != "per_tensor_static" for m in quant_linears(model).values()):
        calibrate_per_tensor_(model, calib_images)
        how += " + per-tensor recalibration"
    return how


class QDQLinear(nn.Module):
    """Export form of a per-tensor QuantLinear: Q/DQ(x) @ Q/DQ(W^T) + b, as TensorRT wants it.

    The weight is stored transposed (in, out) with axis-1 scales so the DequantizeLinear feeds
    the MatMul directly (no Transpose between them).
    """

    def __init__(self, ql: QuantLinear):
        super().__init__()
        if ql.act_scheme != "per_tensor_static":
            raise DeployError(f"QDQLinear needs act_scheme='per_tensor_static', got {ql.act_scheme!r}; "
                              "run to_per_tensor_ first.")
        if ql.w_bits != 8 or ql.a_bits != 8:
            raise DeployError(f"TensorRT Q/DQ export supports INT8 only (w{ql.w_bits}a{ql.a_bits}).")
        w = ql.linear.weight.detach().float()
        self.register_buffer("weight_t", w.t().contiguous())
        self.register_buffer("w_scale", ql.w_scale.detach().float().clamp_min(1e-12).contiguous())
        self.register_buffer("w_zero", torch.zeros(w.shape[0], dtype=torch.int32))
        self.register_buffer("act_scale", ql.act_scale.detach().float().reshape(()).clamp_min(1e-12))
        self.register_buffer("input_scale", ql.input_scale.detach().float().clone())
        self.bias = None if ql.linear.bias is None else nn.Parameter(ql.linear.bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale.numel():
            x = x / self.input_scale  # a channel scale no preceding op absorbed (QuantLinear contract)
        zero = torch.zeros((), dtype=torch.int32)
        xq = torch.fake_quantize_per_tensor_affine(x, self.act_scale, zero, INT8_MIN, INT8_MAX)
        wq = torch.fake_quantize_per_channel_affine(self.weight_t, self.w_scale, self.w_zero, 1, INT8_MIN, INT8_MAX)
        y = torch.matmul(xq, wq)
        return y if self.bias is None else y + self.bias


def to_qdq_export(model: nn.Module) -> nn.Module:
    """A copy of a per-tensor QuantLinear model with every QuantLinear replaced by `QDQLinear`."""
    out = copy.deepcopy(model).eval()
    for name, mod in list(out.named_modules()):
        if isinstance(mod, QuantLinear):
            _swap(out, name, QDQLinear(mod))
    return out


def expected_qdq_matmuls(model: nn.Module) -> int:
    """How many MatMuls of the exported graph must carry Q/DQ on both inputs."""
    return len(quant_linears(model))


def low_rank_layers(model: nn.Module) -> Iterable[str]:
    return [n for n, m in model.named_modules() if isinstance(m, LowRankLinear)]


def scales_summary(model: nn.Module) -> Optional[Dict[str, float]]:
    """Activation scales per quantized layer (for the manifest)."""
    qls = quant_linears(model)
    return {n: float(m.act_scale.reshape(-1)[0]) for n, m in qls.items() if m.act_scale.numel() == 1} or None
