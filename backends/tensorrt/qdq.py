"""Explicit-quantization (Q/DQ) form of a per-tensor QuantLinear model, for TensorRT 8.5/10/11.

TensorRT quantizes symmetrically with static scales only: per-channel on weights (axis = output
channel), one scale per activation tensor. So the engine's INT8 model is first obtained in the
simulator's *per-tensor configuration* (`engine_model`: the artifact's per-tensor QuantLinears as
they are, or its method re-run with `act_scheme=per_tensor_static`; the older `to_per_tensor_`
keeps weights and recalibrates activation scales), then each QuantLinear is swapped for
`QDQLinear`, whose forward uses torch's fake-quantize ops. The TorchScript ONNX exporter turns
those into QuantizeLinear/DequantizeLinear pairs on both MatMul inputs (NVIDIA's placement:
nothing on the bias, LayerNorm, softmax or GELU); `onnx_export.int8_weights` then stores each
weight as an int8 initializer feeding its DequantizeLinear.
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, Iterable, Optional

import torch
import torch.nn as nn

from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.model_info import model_info
from lraqvit_deploy.layers import LowRankLinear, QuantLinear

INT8_MIN, INT8_MAX = -128, 127
ENCODER_PREFIXES = ("blocks.", "layers.")  # timm ViT/DeiT/DINOv2 blocks, Swin stages


def is_encoder_linear(name: str, module: nn.Module) -> bool:
    """The Linears the paper quantizes: inside the encoder blocks (not patch embedding or head)."""
    from lraqvit_deploy.vit_layout import is_encoder_linear as _in_encoder

    return _in_encoder(name, module)


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


def use_recorded_per_tensor_scales_(model: nn.Module) -> None:
    """Switch every QuantLinear to `per_tensor_static` with the per-tensor scale its quantization recorded.

    `quantize_` stores `tensor_act_scale` (max |x| / 127 over its calibration images) for every
    scheme, so an INT8 artifact reaches TensorRT's per-tensor form without new images.
    """
    for m in quant_linears(model).values():
        m.act_scheme, m.act_symmetric = "per_tensor_static", True
        m.act_scale = m.tensor_act_scale.detach().clone().reshape(()).clamp_min(1e-12)


def to_per_tensor_(model: nn.Module, calib_images: Optional[torch.Tensor], method: str = "naive") -> str:
    """Bring `model` in place to the simulator's per-tensor configuration; returns how.

    * a model that already holds QuantLinears (e.g. a WADS artifact with per-token schemes)
      keeps its folded weights, weight scales and input scales; only the activation scales
      are recalibrated per tensor (TensorRT has no per-token INT8);
    * otherwise the encoder Linears are quantized with `lraqvit_deploy.quant.quantize_`
      (`method`, e.g. naive/smoothquant/wads), then recalibrated per tensor if the method's
      scheme is per-token.
    """
    if quant_linears(model) and calib_images is None:
        use_recorded_per_tensor_scales_(model)
        return ("kept the artifact's QuantLinear weights/scales; per-tensor activation scales recorded at its "
                "quantization (no calibration images given)")
    if quant_linears(model):
        calibrate_per_tensor_(model, calib_images)
        return "kept the artifact's QuantLinear weights/scales; activation scales recalibrated per tensor"
    if calib_images is None:
        raise DeployError("an FP32 model needs calibration images for its INT8 engine (--calib-data DIR, an "
                          "ImageFolder of training images), or quantize it first (--quant METHOD).")
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


# ---- which INT8 model the engine runs --------------------------------------------------------------

INT8_MODES = ("auto", "requantize", "keep", "recalibrate", "recorded")
TRT_ACT_SCHEME = "per_tensor_static"  # the only activation quantizer TensorRT INT8 has (symmetric, static)


def artifact_quant_config(model: nn.Module) -> Optional[Dict]:
    """The quantization config an INT8 model was made with (`quant_config(...).to_dict()`), if recorded."""
    record = model_info(model)
    info = record.quant or (record.manifest or {}).get("quantization")
    cfg = (info or {}).get("config") if isinstance(info, dict) else None
    return dict(cfg) if isinstance(cfg, dict) else None


def per_tensor_config(method: str, recorded: Optional[Dict] = None, overrides: Optional[Dict] = None):
    """`quant_config(method, ...)` with TensorRT's activation quantizer (`per_tensor_static`, symmetric).

    The other settings (WADS iterations, fc2 mode, seed, ...) come from `recorded` (an artifact's
    config dict) when they apply to `method`, then from `overrides`.
    """
    from lraqvit_deploy.quant import quant_config

    fields = {k: v for k, v in (recorded or {}).items()
              if k not in ("method", "act_scheme", "act_symmetric", "progress")}
    fields.update(overrides or {})
    fields.update(act_scheme=TRT_ACT_SCHEME, act_symmetric=None, progress=False)
    try:
        return quant_config(method, **fields)
    except DeployError:  # a recorded key this version's config does not take: keep only the overrides
        base = dict(overrides or {})
        base.update(act_scheme=TRT_ACT_SCHEME, act_symmetric=None, progress=False)
        return quant_config(method, **base)


def _schemes(model: nn.Module) -> set:
    return {m.act_scheme for m in quant_linears(model).values()}


def engine_model(model: nn.Module, calib_images: Optional[torch.Tensor], method: str = "naive", mode: str = "auto",
                 overrides: Optional[Dict] = None):
    """(per-tensor QuantLinear model the INT8 engine runs, what quantizer it is) from `model` (not modified).

    TensorRT runs static per-tensor symmetric activations only, so a per-token artifact (WADS,
    per-token) cannot run as measured. `mode`:
      * `requantize`: run `method` (the artifact's own, else `method`) again with
        `act_scheme=per_tensor_static` from the model's float weights (`float_copy`: the artifact's
        folded FP32 weights; for WADS the new alpha search multiplies onto the folded one) on
        `calib_images`. The engine then runs exactly that method's per-tensor quantizer, whose
        accuracy the build measures. Needs images.
      * `keep`: the model's own QuantLinears, unchanged (they must all be per-tensor static already).
      * `recalibrate`: the QuantLinears' weights/scales with activation scales recalibrated per tensor
        (NaivePTQ's absmax) on `calib_images`: per-token-searched weights with per-tensor activations.
      * `recorded`: like recalibrate, with the per-tensor scales recorded at quantization (no images).
      * `auto`: `keep` for a per-tensor INT8 model, `requantize` for anything else when images are
        given, else `recorded` for an INT8 model.
    Returns (model, info): info names the mode, method, act scheme, config and whether the engine
    runs the artifact's own quantized model (`matches_artifact`).
    """
    from lraqvit_deploy.quant import float_copy, quantize_

    if mode not in INT8_MODES:
        raise DeployError(f"int8 mode must be one of {INT8_MODES}, got {mode!r}.")
    quantized = bool(quant_linears(model))
    recorded = artifact_quant_config(model) if quantized else None
    source_method = (recorded or {}).get("method") or method
    schemes = _schemes(model)
    if mode == "auto":
        if quantized and schemes == {TRT_ACT_SCHEME}:
            mode = "keep"
        elif calib_images is not None:
            mode = "requantize"
        elif quantized:
            mode = "recorded"
        else:
            raise DeployError("an FP32 model needs calibration images for its INT8 engine (--calib-data DIR, an "
                              "ImageFolder of training images), or quantize it first (--quant METHOD).")
    if mode in ("keep", "recalibrate", "recorded") and not quantized:
        raise DeployError(f"int8 mode {mode!r} needs an INT8 (QuantLinear) model; this one is FP32: use 'requantize'.")
    if mode in ("requantize", "recalibrate") and calib_images is None:
        raise DeployError(f"int8 mode {mode!r} needs calibration images (--calib-data DIR, or the test bed's "
                          "training split).")
    n_calib = 0 if calib_images is None else len(calib_images)
    info: Dict = {"mode": mode, "method": source_method, "act_scheme": TRT_ACT_SCHEME, "act_symmetric": True,
                  "weights": "int8 symmetric per output channel, scale max|W[o,:]|/127, stored as int8 in the ONNX",
                  "artifact_quantizer": recorded, "artifact_act_schemes": sorted(schemes) or None,
                  "calib_images": n_calib}
    if mode == "keep":
        if schemes != {TRT_ACT_SCHEME}:
            raise DeployError(f"int8 mode 'keep' needs per-tensor static activations; the model has {sorted(schemes)}: "
                              "use 'requantize' (TensorRT has no per-token INT8).")
        sim = copy.deepcopy(model).eval()
        info.update(config=recorded, matches_artifact=True, calib_images=0,
                    how="the artifact's own per-tensor QuantLinears, unchanged")
        return sim, info
    if mode == "requantize":
        cfg = per_tensor_config(source_method, recorded, overrides)
        sim = float_copy(model).eval()
        quantize_(sim, cfg, calib_images)
        if not quant_linears(sim):
            raise DeployError(f"quantize_({source_method}) left no QuantLinear in the model.")
        info.update(config=cfg.to_dict(), matches_artifact=False if quantized else None,
                    how=(f"{source_method} re-run with act_scheme=per_tensor_static from the "
                         f"{'artifact' if quantized else 'model'}'s float weights on {n_calib} calibration images"))
        return sim, info
    sim = copy.deepcopy(model).eval()
    if mode == "recorded":
        use_recorded_per_tensor_scales_(sim)
        how = "the artifact's QuantLinear weights; per-tensor activation scales recorded at its quantization"
    else:
        calibrate_per_tensor_(sim, calib_images)
        how = f"the artifact's QuantLinear weights; activation scales recalibrated per tensor on {n_calib} images"
    info.update(config=recorded, matches_artifact=schemes == {TRT_ACT_SCHEME} and mode == "recorded",
                how=how + (" (NOT the artifact's per-token model: its reported accuracy does not apply)"
                           if schemes != {TRT_ACT_SCHEME} else ""))
    return sim, info
