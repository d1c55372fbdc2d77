"""`deploy compress`: flags -> `Recipe` -> `lraqvit_deploy.lowrank` (LRA-QViT §3, Azizi et al., MLoRQ).

`add_recipe_args(parser)` and `recipe_from_args(args)` are shared with `deploy build`, so
`deploy build --method rb-lra --param-reduction 0.45 --quant wads ...` compresses before lowering.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Dict

from ..lowrank.distill.loop import DIVERGENCE_FACTOR, DIVERGENCE_STEPS
from ..lowrank.configs import AMP_MODES, FEATURE_LOSSES, INITS, METHODS, TRAINABLE, DistillConfig, LowRankConfig
from ..errors import DeployError
from ..recipe import ALLOC_METHODS, MAX_SEED, MLORQ_TARGETS, TARGETS, AllocationConfig
from .args import add_data_arg, add_json_arg, add_model_args, add_skip_arg, check_count, check_inputs, load_model, name_flags


def _d(cls, name: str) -> Any:
    """A config field's default, for help texts (the dataclass stays the one place it is written)."""
    return {f.name: f.default for f in dataclasses.fields(cls)}[name]


HELP = "low-rank compress (LRA / RB-LRA + block distillation) and/or INT8-quantize a ViT; writes an artifact"
DESCRIPTION = f"""\
Replace every Linear inside the encoder blocks (qkv, proj, fc1, fc2) by a rank-r pair chosen
for a target parameter reduction of the whole model, then (by default) distil the compressed
model from the original block by block (per-block feature loss; add the paper's CE term with --kd-alpha 1; AdamW + cosine), merge the RB-LRA
branch, optionally quantize to INT8 (--quant), evaluate the result beside the dense model and
save it as an artifact that `deploy eval DIR` and `deploy build DIR` reload.

Distillation defaults ({_d(DistillConfig, 'batch_size')}-image batches, lr {_d(DistillConfig, 'lr'):g}) are sized
for the test bed on 2 CPU cores (a few minutes). --kd-steps 0 skips distillation (plain LRA).
A size budget instead of a parameter fraction: --size-budget-mb MB --target android|jetson plans
each layer's rank and weight form (android: int8 or int4, per channel or blockwise; jetson: int8)
with MLoRQ so that the built program fits the budget (the report shows the planned size; `deploy
build` the built one). Add --method lra to distil the planned low-rank layers before they are
quantized. A budget below the smallest program is refused in one line that names that size.

A timm model needs its images: --train-data for distillation, --calib-data for --quant, --data to
be scored (without --data it is measured — params, GFLOPs, size — but not scored).
On several GPUs or hosts run the same command under torchrun:
  torchrun --nproc_per_node 4 -m lraqvit_deploy compress ...

examples:
  deploy compress --method rb-lra --param-reduction 0.45 --quant wads --out out/rb45-wads --json rb45.json
  deploy compress --method lra --param-reduction 0.30 --kd-steps 0 --out out/lra-30
  deploy compress out/rb45 --quant per-token --out out/rb45-q8        # quantize an existing artifact
  deploy compress --method rb-lra --rank-alloc energy --param-reduction 0.6 --out out/mixed-60
  deploy compress --size-budget-mb 10.8 --target android --out out/android-10.8mb
  deploy compress --size-budget-mb 16 --target android --method lra --out out/mlorq-16-kd   # + distillation
  deploy compress --size-budget-mb 22 --target jetson --out out/jetson-22mb                 # int8 forms only
  deploy compress --method lra --rank-alloc mlorq --memory-budget-mb 12 --out out/mlorq-12  # simulation, any bits
  deploy compress --model deit_small_patch16_224 --weights deit_s.safetensors --method rb-lra \\
      --param-reduction 0.45 --train-data /data/imagenet/train --data /data/imagenet/val --out out/deit-s
  deploy compress ... --resume         # continue an interrupted distillation from its checkpoint
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", "-o", required=True, type=Path, help="artifact folder to write (replaced atomically)")
    add_model_args(p)
    add_recipe_args(p)
    p.add_argument("--target", "-t", choices=TARGETS, default=None,
                   help="the deployment target a --size-budget-mb plan is for: its weight forms and program size")
    p.set_defaults(plan_target_only=True)
    e = p.add_argument_group("evaluation")
    add_data_arg(e, "--data", "labelled evaluation images; default: the test bed's test subset")
    e.add_argument("--limit", type=int, default=None, help="evaluate a seeded subset of N images")
    add_skip_arg(e)
    add_json_arg(p)
    p.set_defaults(func=run)


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    """Low-rank, allocation, distillation and quantization flags (shared by `compress` and `build`)."""
    g = p.add_argument_group("low-rank compression", "LRA / RB-LRA (LRA-QViT §3.1-3.3); skipped without --method")
    g.add_argument("--method", choices=METHODS, default=None,
                   help="lra: truncated SVD; rb-lra: SVD base + trainable branch merged after distillation")
    g.add_argument("--param-reduction", type=float, default=None, metavar="F",
                   help="fraction of the whole model's parameters to remove, e.g. 0.45; each target layer "
                        "loses the same fraction of its weights (--rank-alloc uniform)")
    g.add_argument("--ranks", type=Path, default=None, metavar="JSON",
                   help="per-layer ranks instead: a JSON file {layer name: rank} (or {'ranks': {...}})")
    g.add_argument("--rank-multiple", type=int, default=None, metavar="M",
                   help=f"round ranks to multiples of M (8 or 16 suit GEMM kernels; default {_d(LowRankConfig, 'rank_multiple')})")
    g.add_argument("--init", choices=INITS, default=None,
                   help=f"RB-LRA branch init: wr (weight reconstruction), zero, random (default {_d(LowRankConfig, 'init')})")
    g.add_argument("--train-base", action="store_true", help="RB-LRA: also train the SVD base factors")
    g.add_argument("--svd", choices=("auto", "plain", "activation"), default="auto",
                   help="plain: SVD of W (the LRA-QViT paper); activation: SVD of W whitened by the "
                        "calibration activations' second moment (Azizi et al.; far less damage); auto "
                        "(default): activation whenever calibration images are available (the test bed, "
                        "--alloc-calib-data or --train-data), else plain")

    a = p.add_argument_group("rank allocation", "How ranks (and, for mlorq, weight bits) are spread over the "
                                                "encoder Linears.")
    a.add_argument("--rank-alloc", choices=ALLOC_METHODS, default=None,
                   help="uniform (default): one rank ratio everywhere (LRA-QViT); energy: greedy mixed rank on the "
                        "(activation-weighted) SVD energy (Azizi et al. Alg. 1); mlorq: rank and bit-width per layer "
                        "by an ILP under --memory-budget-mb")
    a.add_argument("--size-budget-mb", type=float, default=None, metavar="MB",
                   help="the built program's size for --target in MB (1e6 bytes), e.g. 10.8 (12.5%% of the test "
                        "bed's FP32 .pte): MLoRQ picks every layer's rank and weight form (android: int8/int4, per "
                        "channel or blockwise 32/64/128; jetson: int8) to fit it; implies --rank-alloc mlorq")
    a.add_argument("--memory-budget-mb", type=float, default=None, metavar="MB",
                   help="mlorq in simulation: weight memory of the whole model in MB at any of --mlorq-bits (2-8); "
                        "the result may not build for any target (use --size-budget-mb for that)")
    a.add_argument("--no-activation-aware", dest="activation_aware", action="store_false", default=None,
                   help="energy: rank by the plain SVD of W instead of W whitened by the calibration activations")
    a.add_argument("--alloc-calib-images", type=int, default=None, metavar="N",
                   help=f"images whose activations calibrate the allocation and the activation-aware SVD "
                        f"(default {_d(AllocationConfig, 'calib_images')})")
    add_data_arg(a, "--alloc-calib-data", "where they come from (default: --train-data, then the test bed's "
                                          "training split)")
    a.add_argument("--mlorq-bits", default=None, metavar="B,B",
                   help=f"mlorq: dense weight bit-widths it may pick (default {','.join(map(str, _d(AllocationConfig, 'mlorq_bits')))})")
    a.add_argument("--mlorq-factor-bits", default=None, metavar="B,B",
                   help=f"mlorq: low-rank factor bit-widths (default {','.join(map(str, _d(AllocationConfig, 'mlorq_factor_bits')))})")
    a.add_argument("--mlorq-target", choices=MLORQ_TARGETS, default=None,
                   help="mlorq: refuse an allocation the target can't run (default sim: any bits)")

    k = p.add_argument_group("distillation", "block-level KD from the original model (LRA-QViT §3.4)")
    mx = k.add_mutually_exclusive_group()
    mx.add_argument("--kd-steps", type=int, default=None, metavar="N",
                    help="optimizer steps (default 240; 0 = no distillation)")
    mx.add_argument("--kd-epochs", type=float, default=None, metavar="N", help="epochs over --train-data instead")
    k.add_argument("--kd-batch-size", type=int, default=None, metavar="N",
                   help=f"per process (default {_d(DistillConfig, 'batch_size')})")
    k.add_argument("--kd-lr", type=float, default=None, metavar="LR",
                   help=f"AdamW peak lr, cosine decay (default {_d(DistillConfig, 'lr'):g})")
    k.add_argument("--kd-branch-lr", type=float, default=None, metavar="LR",
                   help="rb-lra: a separate peak lr for the branch (default: --kd-lr); with --train-base the "
                        "base keeps --kd-lr")
    k.add_argument("--kd-warmup-steps", type=int, default=None, metavar="N",
                   help="linear lr warm-up before the cosine decay (default 5%% of the steps)")
    k.add_argument("--kd-weight-decay", type=float, default=None, metavar="WD",
                   help=f"default {_d(DistillConfig, 'weight_decay')}")
    k.add_argument("--kd-alpha", type=float, default=None, help=f"CE weight (default {_d(DistillConfig, 'alpha')})")
    k.add_argument("--kd-beta", type=float, default=None,
                   help=f"per-block feature-loss weight (default {_d(DistillConfig, 'beta')})")
    k.add_argument("--kd-feature-loss", choices=FEATURE_LOSSES, default=None,
                   help="mse: the paper's per-block MSE; nmse: each block's MSE divided by the mean square of its "
                        f"teacher output, so deep blocks do not dominate (default {_d(DistillConfig, 'feature_loss')})")
    k.add_argument("--kd-trainable", choices=TRAINABLE, default=None,
                   help="what distillation trains: the low-rank factors, also LayerNorms and biases, or "
                        f"everything (default {_d(DistillConfig, 'trainable')})")
    k.add_argument("--kd-block-inputs", choices=("teacher", "student"), default=None,
                   help="feed each student block the teacher's block input (paper, default) or its own")
    k.add_argument("--kd-workers", type=int, default=None, metavar="N",
                   help="data-loading worker processes per training process (default auto: 0 on the CPU, "
                        "min(8, CPUs - 1) on a GPU)")
    k.add_argument("--kd-amp", choices=AMP_MODES, default=None,
                   help="mixed precision of the KD forwards (loss stays FP32): auto (default) = bf16 on GPUs that "
                        "have it, fp16 with loss scaling on older GPUs, off on the CPU; bf16 also runs on the CPU")
    add_data_arg(k, "--train-data", "distillation images (test bed default: fashion-mnist:train)")
    k.add_argument("--train-limit", type=int, default=None, metavar="N", help="use a seeded subset of N images")
    k.add_argument("--checkpoint", type=Path, default=None, metavar="PATH",
                   help="resumable checkpoint file (default: OUT.kd-checkpoint.pt; removed after success)")
    k.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint if it exists (settings must match, except a lower --kd-lr / "
                        "--kd-branch-lr: distillation stops on a NaN/inf loss, or a loss above "
                        f"{DIVERGENCE_FACTOR:g}x its running minimum for {DIVERGENCE_STEPS} steps, keeps the last good "
                        "checkpoint and says to resume it at a tenth of the lr)")
    k.add_argument("--seed", type=int, default=0, help="data order and random init (default 0)")

    q = p.add_argument_group("quantization", "INT8 post-training quantization of the encoder-block Linears "
                                             "(LRA-QViT: per-token activations + WADS).")
    from ..quant import QUANT_METHODS

    q.add_argument("--quant", choices=("none", *QUANT_METHODS), default="none",
                   help="none (FP32, default), naive (per-tensor PTQ), smoothquant, qads, repq, per-token, or wads "
                        "(per-token + weight-aware distribution scaling, the paper's method)")
    q.add_argument("--calib-images", type=int, default=None, metavar="N",
                   help="calibration images (seeded subset of the training split; default 32)")
    add_data_arg(q, "--calib-data", "where calibration images come from (default: the test bed's training split)")
    q.add_argument("--act-scheme", choices=sorted(ACT_SCHEMES), default=None,
                   help="activation quantization; default: the method's own (per-token-dynamic, as XNNPACK runs, "
                        "for per-token/wads/qads; per-tensor for naive/smoothquant/repq)")
    q.add_argument("--wads-iters", type=int, default=None, metavar="N", help="alpha search steps per layer (wads/qads)")
    q.add_argument("--w-bits", type=int, choices=(8, 4), default=None,
                   help="weight bits (default 8); 4 runs on Android (XNNPACK qc4w / qb4w) with --act-scheme "
                        "per-token-dynamic, not on the Jetson")
    q.add_argument("--w-group-size", type=int, choices=(32, 64, 128), default=None, metavar="G",
                   help="4-bit blockwise weights: one scale per G input columns (32, 64 or 128; default: one per "
                        "output channel)")
    q.add_argument("--wads-fc2", choices=("skip", "explicit"), default=None,
                   help="fc2 follows GELU, so its alpha cannot be folded: skip it (default), or keep an explicit "
                        "multiply")


ALLOC_FLAGS = {"method": "--rank-alloc", "activation_aware": "--no-activation-aware",
               "calib_images": "--alloc-calib-images", "memory_budget_mb": "--memory-budget-mb",
               "mlorq_bits": "--mlorq-bits", "mlorq_factor_bits": "--mlorq-factor-bits",
               "mlorq_target": "--mlorq-target", "size_budget_mb": "--size-budget-mb", "target": "--target"}
DATA_FLAGS = ("--data", "--train-data", "--calib-data", "--alloc-calib-data")
ACT_SCHEMES = {"per-tensor": "per_tensor_static", "per-token-static": "per_token_static",
               "per-token-dynamic": "per_token_dynamic"}


def _given(**kw) -> Dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def _bits(text: str, flag: str):
    try:
        return tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        raise DeployError(f"{flag} {text!r}: expected comma-separated integers like 4,8.") from None


def _read_ranks(path: Path) -> Dict[str, int]:
    from ..artifacts import read_json

    data = read_json(path)
    data = data.get("ranks", data) if isinstance(data, dict) else data
    if not isinstance(data, dict) or not data or not all(isinstance(v, int) and not isinstance(v, bool)
                                                         for v in data.values()):
        raise DeployError(f"--ranks {path}: expected a JSON object {{layer name: integer rank}}.")
    return data


def recipe_from_args(args: argparse.Namespace):
    """The `Recipe` the flags describe (validated: a bad value fails here, before any model is loaded).

    `deploy build`'s --target is the build's own (a --size-budget-mb plan is for it); `deploy compress`'s
    only names the target of a plan (`args.plan_target_only`).
    """
    from ..quant import quant_config
    from ..recipe import Recipe

    name_flags(AllocationConfig, ALLOC_FLAGS)
    check_count(args.seed, "--seed", 0, MAX_SEED, "the random seed")
    budget = args.size_budget_mb
    target = getattr(args, "target", None) if budget is not None else None
    if budget is None and getattr(args, "target", None) is not None and getattr(args, "plan_target_only", False):
        raise DeployError("--target names the target of a --size-budget-mb plan; add --size-budget-mb MB.")
    alloc = AllocationConfig(**_given(
        method=args.rank_alloc, activation_aware=args.activation_aware, calib_images=args.alloc_calib_images,
        memory_budget_mb=args.memory_budget_mb, mlorq_target=args.mlorq_target, size_budget_mb=budget,
        target=target,
        mlorq_bits=None if args.mlorq_bits is None else _bits(args.mlorq_bits, "--mlorq-bits"),
        mlorq_factor_bits=None if args.mlorq_factor_bits is None else _bits(args.mlorq_factor_bits,
                                                                            "--mlorq-factor-bits")))
    low_rank = distill = None
    lr_flags = [f for f, v in (("--param-reduction", args.param_reduction), ("--ranks", args.ranks),
                               ("--rank-multiple", args.rank_multiple), ("--init", args.init)) if v is not None]
    if args.method is None and (lr_flags or args.train_base):
        raise DeployError(f"{(lr_flags or ['--train-base'])[0]} needs --method lra or --method rb-lra.")
    if args.method is not None and not (alloc.method == "mlorq" and args.param_reduction is None
                                        and args.ranks is None):
        ranks = _read_ranks(args.ranks) if args.ranks is not None else None
        if args.param_reduction is None and ranks is None:
            raise DeployError(f"--method {args.method} needs --param-reduction F (e.g. 0.45) or --ranks JSON.")
        low_rank = LowRankConfig(**_given(method=args.method, param_reduction=args.param_reduction, ranks=ranks,
                                          rank_multiple=args.rank_multiple, init=args.init, svd=args.svd),
                                 train_base=args.train_base, seed=args.seed)
    kd_flags = _given(steps=args.kd_steps, epochs=args.kd_epochs, batch_size=args.kd_batch_size, lr=args.kd_lr,
                      branch_lr=args.kd_branch_lr,
                      warmup_steps=args.kd_warmup_steps, weight_decay=args.kd_weight_decay, alpha=args.kd_alpha,
                      beta=args.kd_beta, feature_loss=args.kd_feature_loss, trainable=args.kd_trainable,
                      block_inputs=args.kd_block_inputs, num_workers=args.kd_workers,
                      amp=args.kd_amp)
    # MLoRQ distils when a low-rank method is named (--method lra): planned ranks in float, KD, then quantized
    wants_kd = args.kd_steps != 0 and (low_rank is not None if alloc.method != "mlorq" else args.method is not None)
    if wants_kd:
        distill = DistillConfig(**kd_flags, seed=args.seed)
    elif kd_flags:
        DistillConfig(**kd_flags, seed=args.seed)  # unused here, but a bad value is still an error
    elif args.kd_steps not in (None, 0) or args.kd_epochs is not None:
        raise DeployError("--kd-steps/--kd-epochs distil a low-rank model: give --method lra|rb-lra"
                          + (" (with mlorq: --method lra distils the planned ranks)" if alloc.method == "mlorq"
                             else "") + ".")
    quant = None
    q_flags = _given(act_scheme=None if args.act_scheme is None else ACT_SCHEMES[args.act_scheme],
                     wads_iters=args.wads_iters, fc2=args.wads_fc2, w_bits=args.w_bits,
                     w_group_size=args.w_group_size)
    if args.w_group_size is not None and args.w_bits != 4:
        raise DeployError("--w-group-size applies to 4-bit weights (XNNPACK's blockwise GEMM): add --w-bits 4.")
    if args.quant != "none":
        quant = quant_config(args.quant, **q_flags, progress=not args.quiet)
    elif q_flags or args.calib_images is not None:
        raise DeployError("--act-scheme/--wads-iters/--wads-fc2/--w-bits/--w-group-size/--calib-images set "
                          "quantization options: add --quant METHOD.")
    return Recipe(low_rank=low_rank, allocation=alloc, distill=distill, quant=quant,
                  **_given(quant_calib_images=args.calib_images))


def data_from_args(args: argparse.Namespace) -> Dict[str, Any]:
    """The pipeline's data keywords from the flags."""
    return {"train_data": args.train_data, "calib_data": args.calib_data, "alloc_data": args.alloc_calib_data,
            "train_limit": args.train_limit, "skip_bad_images": args.skip_bad_images}


def check_recipe_inputs(args: argparse.Namespace, recipe, out) -> None:
    """What `compress` and `build` check before the model is built: counts, files, the checkpoint to resume."""
    from ..pipeline import check_checkpoint, check_distill_device, default_checkpoint

    check_count(args.limit, "--limit")
    check_count(args.train_limit, "--train-limit")
    check_inputs(args, DATA_FLAGS)
    if recipe.distill is not None:
        check_distill_device(recipe)
        check_checkpoint(args.checkpoint or default_checkpoint(out), args.resume, recipe)
    elif args.resume or args.checkpoint is not None:
        raise DeployError(f"{'--resume' if args.resume else '--checkpoint'} applies to distillation, which this "
                          "recipe does not run (it needs --method lra|rb-lra and --kd-steps other than 0).")


def run(args: argparse.Namespace) -> int:
    from ..pipeline import compress
    from .output import emit

    recipe = recipe_from_args(args)
    if recipe.empty:
        raise DeployError("nothing to do: give --method lra|rb-lra (low rank), --quant METHOD (INT8), or both.")
    check_recipe_inputs(args, recipe, args.out)
    model = load_model(args)
    report = compress(model, recipe, **data_from_args(args), eval_data=args.data, eval_limit=args.limit,
                      out=args.out, checkpoint=args.checkpoint, resume=args.resume, progress=not args.quiet)
    if report.out is None:  # a non-zero torchrun rank: rank 0 reports
        return 0
    if not report.evaluated and not args.quiet:
        print("note: not scored (no evaluation data for this model); pass --data DIR to measure top-1.")
    if report.skipped_images and not args.quiet:
        print(f"note: {report.skipped_images} unreadable image(s) left out (--skip-bad-images).")
    method = (report.compression or {}).get("method", "none")
    what = (f"--size-budget-mb {args.size_budget_mb:g} --target {args.target}" if args.size_budget_mb is not None
            else f"--method {method} --quant {args.quant}")
    emit(report.to_dict(), args.json, title=f"compress {what}: {args.out}")
    return 0
