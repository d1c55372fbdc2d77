"""`deploy compress`: LRA / RB-LRA low-rank compression with block-level distillation (LRA-QViT §3).

`add_compression_args(parser)` and `compress_from_args(model, args)` are reused by `deploy build`,
so `deploy build --method rb-lra --param-reduction 0.45 ...` compresses before lowering.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
from pathlib import Path
from typing import Any, Dict

from ..compress.configs import (DEFAULT_KD_BATCH, DEFAULT_KD_FEATURE_LOSS, DEFAULT_KD_LR, DEFAULT_KD_STEPS,
                                DEFAULT_KD_TRAINABLE, DEFAULT_KD_WARMUP, FEATURE_LOSSES, INITS, METHODS, TRAINABLE)
from ..errors import DeployError
from ..quant.cli_args import add_quant_args
from ..rank_alloc.cli_args import add_rank_alloc_args
from .args import add_json_arg, add_model_args, eval_dataset, load_model

HELP = "low-rank compress a ViT (LRA or RB-LRA + block distillation) to a target parameter reduction"
DESCRIPTION = f"""\
Replace every Linear inside the encoder blocks (qkv, proj, fc1, fc2) by a rank-r pair chosen
for a target parameter reduction of the whole model, then (by default) distil the compressed
model from the original block by block (CE + per-block MSE, AdamW + cosine), merge the RB-LRA
branch, evaluate both models and save the result as an artifact that `deploy eval DIR` reloads.

Distillation defaults ({DEFAULT_KD_STEPS} steps of batch {DEFAULT_KD_BATCH}, lr {DEFAULT_KD_LR:g}) are sized
for the test bed on 2 CPU cores (a few minutes). --kd-steps 0 skips distillation (plain LRA).
On several GPUs or hosts run the same command under torchrun:
  torchrun --nproc_per_node 4 -m lraqvit_deploy compress ...

examples:
  deploy compress --method rb-lra --param-reduction 0.45 --out out/rb-lra-45 --json rb45.json
  deploy compress --method lra --param-reduction 0.30 --kd-steps 0 --out out/lra-30
  deploy compress --method rb-lra --param-reduction 0.45 --kd-steps 400 --rank-multiple 16 --out out/rb16
  deploy compress --method rb-lra --ranks ranks.json --out out/mixed     # per-layer ranks
  deploy compress ... --resume         # continue an interrupted distillation from its checkpoint
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", "-o", required=True, type=Path, help="artifact folder to write (replaced atomically)")
    add_model_args(p)
    add_compression_args(p)
    add_quant_args(p)
    e = p.add_argument_group("evaluation")
    e.add_argument("--data", "-d", default=None,
                   help="evaluation images: ImageFolder path or fashion-mnist[:test]; default: the test bed's test subset")
    e.add_argument("--limit", type=int, default=None, help="evaluate a seeded subset of N images")
    add_json_arg(p)
    p.set_defaults(func=run)


def add_compression_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    """The low-rank and distillation options (shared by `deploy compress` and `deploy build`)."""
    g = p.add_argument_group("low-rank compression", "LRA / RB-LRA (LRA-QViT §3.1-3.3)"
                             + ("" if required else "; skipped unless --method is given"))
    g.add_argument("--method", choices=METHODS, default=None, required=required,
                   help="lra: truncated SVD; rb-lra: SVD base + trainable branch merged after distillation")
    g.add_argument("--param-reduction", type=float, default=None, metavar="F",
                   help="fraction of the whole model's parameters to remove, e.g. 0.45; each target layer "
                        "loses the same fraction of its weights")
    g.add_argument("--ranks", type=Path, default=None, metavar="JSON",
                   help="per-layer ranks instead: a JSON file {layer name: rank} (or {'ranks': {...}})")
    g.add_argument("--rank-multiple", type=int, default=1, metavar="M",
                   help="round ranks to multiples of M (8 or 16 suit GEMM kernels; default 1)")
    g.add_argument("--init", choices=INITS, default="wr",
                   help="RB-LRA branch init: wr (weight reconstruction, default), zero, random")
    g.add_argument("--train-base", action="store_true", help="RB-LRA: also train the SVD base factors")
    g.add_argument("--svd", choices=("auto", "plain", "activation"), default="auto",
                   help="plain: SVD of W (the LRA-QViT paper); activation: SVD of W whitened by the "
                        "calibration activations' second moment (Azizi et al.; far less damage); auto "
                        "(default): activation whenever calibration images are available (the test bed, "
                        "--alloc-calib-data or --train-data), else plain")
    add_rank_alloc_args(p)
    k = p.add_argument_group("distillation", "block-level KD from the original model (LRA-QViT §3.4)")
    mx = k.add_mutually_exclusive_group()
    mx.add_argument("--kd-steps", type=int, default=None, metavar="N",
                    help=f"optimizer steps (default {DEFAULT_KD_STEPS}; 0 = no distillation)")
    mx.add_argument("--kd-epochs", type=float, default=None, metavar="N", help="epochs over --train-data instead")
    k.add_argument("--kd-batch-size", type=int, default=DEFAULT_KD_BATCH, help=f"per process (default {DEFAULT_KD_BATCH})")
    k.add_argument("--kd-lr", type=float, default=DEFAULT_KD_LR, help=f"AdamW peak lr, cosine decay (default {DEFAULT_KD_LR:g})")
    k.add_argument("--kd-warmup-steps", type=int, default=None, metavar="N",
                   help=f"linear lr warm-up before the cosine decay (default {DEFAULT_KD_WARMUP:.0%}% of the steps)")
    k.add_argument("--kd-weight-decay", type=float, default=0.01)
    k.add_argument("--kd-alpha", type=float, default=1.0, help="CE weight (default 1)")
    k.add_argument("--kd-beta", type=float, default=1.0, help="per-block MSE weight (default 1)")
    k.add_argument("--kd-feature-loss", choices=FEATURE_LOSSES, default=DEFAULT_KD_FEATURE_LOSS,
                   help="mse: the paper's per-block MSE; nmse: each block's MSE divided by the mean square of its "
                        f"teacher output, so deep blocks do not dominate (default {DEFAULT_KD_FEATURE_LOSS})")
    k.add_argument("--kd-trainable", choices=TRAINABLE, default=DEFAULT_KD_TRAINABLE,
                   help="what distillation trains: the low-rank factors, also LayerNorms and biases, or "
                        f"everything (default {DEFAULT_KD_TRAINABLE})")
    k.add_argument("--kd-block-inputs", choices=("teacher", "student"), default="teacher",
                   help="feed each student block the teacher's block input (paper, default) or its own")
    k.add_argument("--kd-workers", type=int, default=0, help="data-loading worker processes")
    k.add_argument("--train-data", default=None, metavar="DATA",
                   help="distillation images: ImageFolder path or fashion-mnist:train (test bed default)")
    k.add_argument("--train-limit", type=int, default=None, metavar="N", help="use a seeded subset of N images")
    k.add_argument("--checkpoint", type=Path, default=None, metavar="PATH",
                   help="resumable checkpoint file (default: OUT.kd-checkpoint.pt; removed after success)")
    k.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    k.add_argument("--seed", type=int, default=0, help="data order and random init")


def configs_from_args(args: argparse.Namespace):
    """(LowRankConfig, DistillConfig or None) described by the command-line options."""
    from ..compress import DistillConfig, LowRankConfig

    ranks = None
    if args.ranks is not None:
        ranks = _read_ranks(args.ranks)
    low_rank = LowRankConfig(method=args.method, param_reduction=args.param_reduction, ranks=ranks,
                             rank_multiple=args.rank_multiple, init=args.init, train_base=args.train_base,
                             seed=args.seed)
    if args.kd_steps == 0:
        return low_rank, None
    kd = DistillConfig(steps=args.kd_steps, epochs=args.kd_epochs, batch_size=args.kd_batch_size, lr=args.kd_lr,
                       warmup_steps=args.kd_warmup_steps, weight_decay=args.kd_weight_decay, alpha=args.kd_alpha,
                       beta=args.kd_beta, feature_loss=args.kd_feature_loss, trainable=args.kd_trainable,
                       block_inputs=args.kd_block_inputs, num_workers=args.kd_workers, seed=args.seed)
    return low_rank, kd


def _read_ranks(path: Path) -> Dict[str, int]:
    from ..artifacts import read_json

    data = read_json(path)
    data = data.get("ranks", data) if isinstance(data, dict) else data
    if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
        raise DeployError(f"--ranks {path}: expected a JSON object {{layer name: integer rank}}.")
    return data


def train_dataset(args: argparse.Namespace, model):
    """--train-data, or Fashion-MNIST train for the test bed."""
    from ..data import seeded_subset, training_dataset

    ds = training_dataset(model, args.train_data,
                          "distillation needs training images: pass --train-data DIR (ImageNet-train layout) "
                          "or --train-data fashion-mnist:train, or --kd-steps 0 to skip distillation.")
    return seeded_subset(ds, args.train_limit, args.seed) if args.train_limit else ds


def checkpoint_path(args: argparse.Namespace) -> Path:
    return args.checkpoint or Path(str(args.out).rstrip("/") + ".kd-checkpoint.pt")


def compress_from_args(model, args: argparse.Namespace):
    """Compress `model` in place as the options say (no-op without --method); returns it.

    Afterwards `model.lraqvit_compression` describes what was done (for the artifact manifest).
    """
    from ..compress import compress_, distill_, merge_
    from ..compress.distill import is_main_process

    if not getattr(args, "method", None):
        if getattr(args, "param_reduction", None) is not None or getattr(args, "ranks", None) is not None:
            raise DeployError("--param-reduction/--ranks need --method lra or --method rb-lra.")
        return model
    if args.rank_alloc == "mlorq":
        return _mlorq_from_args(model, args)
    low_rank, kd = configs_from_args(args)
    progress = not getattr(args, "quiet", False)
    teacher = copy.deepcopy(model).eval() if kd is not None else None
    train_ds = train_dataset(args, model) if kd is not None else None  # fail fast, before the SVDs
    dense_params = sum(p.numel() for p in model.parameters())
    svd, calib_source = _svd_choice(model, args)
    calib, allocation = None, None
    if svd == "activation" or args.rank_alloc != "uniform":
        from ..rank_alloc.cli_args import calibration_images

        calib = calibration_images(model, args.alloc_calib_images, calib_source)
    if args.rank_alloc == "energy":
        from ..rank_alloc.allocate import allocate

        if args.ranks is not None or args.param_reduction is None:
            raise DeployError("--rank-alloc energy chooses the ranks itself: give --param-reduction, not --ranks.")
        allocation = allocate(model, "energy", args.param_reduction, images=calib,
                              activation_aware=args.activation_aware, progress=progress)
        ranks = {n: r for n, r in allocation.ranks.items() if r is not None}
        low_rank = dataclasses.replace(low_rank, param_reduction=None, ranks=ranks)
    low_rank = dataclasses.replace(low_rank, svd=svd)
    ranks = compress_(model, low_rank, calib)
    info: Dict[str, Any] = {"method": low_rank.method, "config": low_rank.to_dict(), "ranks": ranks,
                            "params_dense": dense_params, "distill": None,
                            "rank_alloc": args.rank_alloc if allocation is None else allocation.to_dict()}
    if allocation is not None:
        info["config"]["param_reduction"] = args.param_reduction
    info["config"]["ranks"] = None if low_rank.ranks is None else "per-layer (see ranks)"
    if kd is not None:
        ckpt = checkpoint_path(args)
        result = distill_(model, teacher, train_ds, kd, checkpoint=ckpt, resume=args.resume,
                          fingerprint_extra={"model": model.lraqvit_spec.to_dict(), "low_rank": low_rank.to_dict()},
                          progress=progress)
        info["distill"] = {"config": kd.to_dict(), "train_data": args.train_data or "fashion-mnist:train",
                           "train_images": len(train_ds), **result.to_dict()}
        if is_main_process():
            ckpt.unlink(missing_ok=True)
    merge_(model)
    model.lraqvit_compression = info
    return model


def _svd_choice(model, args: argparse.Namespace):
    """(svd kind, calibration source): `auto` whitens by the activations whenever images are at hand.

    Activation-aware SVD keeps what the layer computes on real inputs rather than the weight matrix
    itself; on the test bed at -45% params it is the difference between ~15% and ~73% top-1 before
    fine-tuning, and it leaves RB-LRA + KD above the FP32 model (see docs/compress.md).
    """
    from ..models import TESTBED

    source = args.alloc_calib_data or args.train_data
    have_images = source is not None or getattr(model.lraqvit_spec, "name", None) == TESTBED
    if args.svd != "auto":
        return args.svd, source
    if have_images or args.rank_alloc != "uniform":
        return "activation", source
    if not getattr(args, "quiet", False):
        print("note: plain SVD (no calibration images); pass --alloc-calib-data or --train-data for the "
              "activation-aware SVD, usually far more accurate.")
    return "plain", source


def _mlorq_from_args(model, args: argparse.Namespace):
    """MLoRQ: per-layer (rank, weight bits) chosen by an ILP under --memory-budget-mb; no distillation."""
    from ..rank_alloc.cli_args import allocation_from_args
    from ..rank_alloc.plan import apply_plan_

    if args.kd_steps not in (None, 0) or args.kd_epochs:
        raise DeployError("--rank-alloc mlorq quantizes weights while allocating; distillation is not supported "
                          "on top of it yet. Drop --kd-steps/--kd-epochs.")
    dense_params = sum(p.numel() for p in model.parameters())
    allocation = allocation_from_args(model, args)
    apply_plan_(model, allocation.plan, allocation.stats)
    model.lraqvit_compression = {"method": args.method, "config": {"param_reduction": None, "rank_alloc": "mlorq",
                                                                    "memory_budget_mb": args.memory_budget_mb},
                                 "ranks": {n: r for n, r in allocation.ranks.items() if r is not None},
                                 "params_dense": dense_params, "distill": None, "rank_alloc": allocation.to_dict()}
    return model


def run(args: argparse.Namespace) -> int:
    from ..artifacts import save_model_artifact
    from ..compress.distill import init_distributed
    from ..evaluate import evaluate
    from ..quant import quantized_size_mb
    from ..quant.cli_args import calibration_images, quantize_from_args
    from .output import emit

    if not args.method and args.quant == "none":
        raise DeployError("nothing to do: give --method lra|rb-lra (low rank), --quant METHOD (INT8), or both.")
    if args.source and args.method:
        raise DeployError(f"{args.source} is an artifact: re-compressing it is not supported; pass --model to "
                          "compress from the original weights, or only --quant to quantize the artifact.")
    rank, world = init_distributed()
    model = load_model(args)
    source_manifest = getattr(model, "lraqvit_manifest", {})
    calib = calibration_images(model, args) if args.quant != "none" else None  # fail fast, before the KD
    baseline = copy.deepcopy(model)
    compress_from_args(model, args)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
        if rank != 0:
            return 0
    progress = not args.quiet
    ds = eval_dataset(args, model)
    known = source_manifest.get("metrics", {})
    if "baseline_top1" in known:  # an artifact: its own baseline is the dense model it was made from
        base = {k: known[f"baseline_{k}"] for k in ("top1", "params", "gflops", "size_mb")}
    else:
        base = evaluate(baseline, ds, batch_size=64, progress=progress).to_dict()
    del baseline
    fp32 = evaluate(model, ds, batch_size=64, progress=progress)
    res, quant_info = fp32, None
    if args.quant != "none":
        quantize_from_args(model, args, calib)
        quant_info = model.lraqvit_quant
        res = evaluate(model, ds, batch_size=64, progress=progress)
    res.size_mb = quantized_size_mb(model)  # low-bit weights (quantization, MLoRQ) at their stored width
    info = getattr(model, "lraqvit_compression", None) or source_manifest.get("compression")
    metrics = {
        "top1": res.top1, "baseline_top1": base["top1"], "top1_diff": res.top1 - base["top1"],
        "fp32_top1": fp32.top1, "quant": args.quant,
        "params": res.params, "baseline_params": base["params"],
        "param_reduction": 1.0 - res.params / base["params"],
        "gflops": res.gflops, "baseline_gflops": base["gflops"],
        "size_mb": res.size_mb, "baseline_size_mb": base["size_mb"], "n_images": res.n_images,
    }
    extra = {"compression": info, "quantization": quant_info, "metrics": metrics,
             "eval_data": args.data or "test bed test subset", "eval_limit": args.limit}
    save_model_artifact(args.out, model, extra)
    info = info or {}
    distill = info.get("distill") or {}
    data = {"model": model.lraqvit_spec.name, "method": info.get("method", "dense"),
            "param_reduction_target": (info.get("config") or {}).get("param_reduction"), **metrics,
            "kd_steps": distill.get("steps", 0), "kd_final_loss": distill.get("final_loss"),
            "kd_seconds": distill.get("seconds"), "kd_world_size": distill.get("world_size"),
            "calib_seconds": (quant_info or {}).get("calib_seconds"),
            "wads_seconds": (quant_info or {}).get("search_seconds"),
            "out": str(args.out), "ranks": info.get("ranks")}
    title = f"compress --method {info.get('method', 'none')} --quant {args.quant}: {args.out}"
    emit(data, args.json, title=title)
    return 0
