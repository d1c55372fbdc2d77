"""The `--quant` argument group for `deploy compress` (wired in by cli/compress.py)."""
from __future__ import annotations

import argparse
from typing import Optional

import torch
import torch.nn as nn

from ..errors import DeployError
from .configs import METHODS

ACT_CHOICES = {"auto": None, "per-tensor": "per_tensor_static", "per-token-static": "per_token_static",
               "per-token-dynamic": "per_token_dynamic"}


def add_quant_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("quantization", "INT8 post-training quantization of the encoder-block Linears "
                                                  "(LRA-QViT: per-token activations + WADS).")
    g.add_argument("--quant", choices=("none",) + METHODS, default="none",
                   help="none (FP32), naive (per-tensor PTQ), smoothquant, qads, repq, per-token, or wads "
                        "(per-token + weight-aware distribution scaling, the paper's method)")
    g.add_argument("--calib-images", type=int, default=32, metavar="N",
                   help="calibration images (seeded subset of the training split; default 32)")
    g.add_argument("--calib-data", default=None, metavar="DIR",
                   help="where calibration images come from (ImageFolder or fashion-mnist:train); "
                        "default: the test bed's training split")
    g.add_argument("--act-scheme", choices=sorted(ACT_CHOICES), default="auto",
                   help="activation quantization; auto = the method's own (per-token-dynamic, as XNNPACK "
                        "runs, for per-token/wads/qads; per-tensor for naive/smoothquant/repq)")
    g.add_argument("--wads-iters", type=int, default=300, help="alpha search steps per layer (WADS/QADS)")
    g.add_argument("--wads-fc2", choices=("skip", "explicit"), default="skip",
                   help="fc2 follows GELU, so its alpha cannot be folded: skip it, or keep an explicit multiply")


def config_from_args(args: argparse.Namespace):
    from .configs import QuantConfig

    return QuantConfig(method=args.quant, act_scheme=ACT_CHOICES[args.act_scheme], wads_iters=args.wads_iters,
                       fc2=args.wads_fc2, progress=not getattr(args, "quiet", False))


def calibration_images(model: nn.Module, args: argparse.Namespace) -> torch.Tensor:
    """`--calib-images` seeded images from `--calib-data`, or the test bed's training split."""
    from ..data import calibration_batch, training_dataset

    if args.calib_images <= 0:
        raise DeployError(f"--calib-images must be positive, got {args.calib_images}.")
    ds = training_dataset(model, args.calib_data,
                          "--quant needs calibration images: pass --calib-data DIR (ImageFolder, e.g. a few "
                          "hundred ImageNet-train images) or --calib-data fashion-mnist:train.")
    return calibration_batch(ds, args.calib_images, seed=0)


def quantize_from_args(model: nn.Module, args: argparse.Namespace, calib_images: Optional[torch.Tensor] = None):
    """Quantize `model` in place as the arguments say; returns the CalibrationSummary (None for --quant none)."""
    from .api import quantize_

    if args.quant == "none":
        return None
    config = config_from_args(args)
    if calib_images is None:
        calib_images = calibration_images(model, args)
    summary = quantize_(model, config, calib_images)
    model.lraqvit_quant = {"config": config.to_dict(), **summary.__dict__}
    return summary
