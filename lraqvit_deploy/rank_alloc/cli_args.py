"""Command-line flags for rank allocation, and their resolution into an `Allocation`.

The compress command adds the group with `add_rank_alloc_args(parser)` and calls
`allocation_from_args(model, args)`; `Allocation.ranks` is `{layer: rank or None (dense)}`, and for
mlorq `Allocation.plan[layer].w_bits / .factor_bits` carry the weight bits.
"""
from __future__ import annotations

import argparse
from typing import Optional, Tuple

import torch

from ..errors import DeployError
from .allocate import METHODS, Allocation, allocate


def _bits(text: str) -> Tuple[int, ...]:
    try:
        bits = tuple(sorted({int(b) for b in text.split(",") if b.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 4,8, got {text!r}") from None
    if not bits or any(b < 2 or b > 8 for b in bits):
        raise argparse.ArgumentTypeError(f"bit-widths must be within 2..8, got {text!r}")
    return bits


def add_rank_alloc_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "rank allocation", "How ranks (and, for mlorq, weight bits) are spread over the encoder Linears.")
    g.add_argument("--rank-alloc", choices=METHODS, default="uniform",
                   help="uniform: one rank ratio everywhere (LRA-QViT); energy: greedy mixed rank on the "
                        "normalised (activation-weighted) SVD energy (Azizi et al. Alg. 1); mlorq: joint rank "
                        "and bit-width per layer by an ILP under --memory-budget-mb")
    g.add_argument("--memory-budget-mb", type=float, default=None, metavar="MB",
                   help="weight memory of the whole model in MB (1e6 bytes) for --rank-alloc mlorq; e.g. 12.5-20%% "
                        "of the FP32 size for a 4-bit-class model")
    g.add_argument("--no-activation-aware", dest="activation_aware", action="store_false",
                   help="energy: rank by the plain SVD of W instead of W whitened by the calibration activations")
    g.add_argument("--alloc-calib-images", type=int, default=128, metavar="N",
                   help="training images whose activations calibrate the allocation (default 128)")
    g.add_argument("--alloc-calib-data", default=None, metavar="SPEC",
                   help="where they come from: fashion-mnist:train (test bed default) or an ImageFolder path")
    g.add_argument("--mlorq-bits", type=_bits, default=(2, 3, 4, 6, 8), metavar="B,B",
                   help="dense weight bit-widths mlorq may pick (default 2,3,4,6,8)")
    g.add_argument("--mlorq-factor-bits", type=_bits, default=(3, 4, 6, 8), metavar="B,B",
                   help="bit-widths of low-rank factors mlorq may pick (default 3,4,6,8)")
    g.add_argument("--mlorq-target", default="sim", choices=("sim", "executorch", "xnnpack", "tensorrt", "onnx"),
                   help="refuse an allocation the target can't run (sim = quantization simulator, any bits)")


def calibration_images(model, n: int, data: Optional[str] = None, seed: int = 0) -> torch.Tensor:
    """`n` seeded training images preprocessed for `model` (test bed: Fashion-MNIST train split)."""
    from ..data import calibration_batch, training_dataset

    ds = training_dataset(model, data, "activation-aware SVD / rank allocation needs calibration images: pass "
                                       "--alloc-calib-data DIR (ImageFolder of training images) or fashion-mnist:train.")
    return calibration_batch(ds, n, seed)


def allocation_from_args(model, args: argparse.Namespace, param_reduction: Optional[float] = None) -> Allocation:
    """The `Allocation` the flags ask for; `param_reduction` defaults to `args.param_reduction`."""
    from .mlorq import check_target

    method = args.rank_alloc
    reduction = param_reduction if param_reduction is not None else getattr(args, "param_reduction", None)
    if method == "mlorq" and args.memory_budget_mb is None:
        raise DeployError("--rank-alloc mlorq needs --memory-budget-mb (e.g. 12 for the test bed at ~4 bits).")
    if method != "mlorq" and reduction is None:
        raise DeployError(f"--rank-alloc {method} needs --param-reduction.")
    needs_images = method == "mlorq" or (method == "energy" and args.activation_aware)
    images = calibration_images(model, args.alloc_calib_images, args.alloc_calib_data) if needs_images else None
    kw = {}
    if method == "mlorq":
        kw = {"dense_bits": args.mlorq_bits, "factor_bits": args.mlorq_factor_bits}
        if args.mlorq_target != "sim":
            from .mlorq import TARGET_WEIGHT_BITS

            ok = TARGET_WEIGHT_BITS[args.mlorq_target]
            kw = {"dense_bits": tuple(b for b in args.mlorq_bits if b in ok),
                  "factor_bits": tuple(b for b in args.mlorq_factor_bits if b in ok)}
            if not kw["dense_bits"] and not kw["factor_bits"]:
                raise DeployError(f"none of the requested bit-widths runs on {args.mlorq_target} "
                                  f"(it runs {sorted(ok)}-bit weights).")
    alloc = allocate(model, method, reduction, args.memory_budget_mb, images, args.activation_aware,
                     progress=not getattr(args, "quiet", False), **kw)
    if method == "mlorq":
        check_target(alloc.plan, args.mlorq_target)
    return alloc
