"""`deploy compress`: flags -> `Recipe` -> `lraqvit_deploy.lowrank` (LRA-QViT §3, Azizi et al., MLoRQ).

`add_recipe_args(parser)` and `recipe_from_args(args)` are shared with `deploy build`, so
`deploy build --method rb-lra --param-reduction 0.45 --quant wads ...` compresses before lowering.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Dict

from ..errors import DeployError
from ..lowrank.configs import DistillConfig, LowRankConfig
from ..lowrank.distill.loop import DIVERGENCE_FACTOR, DIVERGENCE_STEPS
from ..options import flag_of
from ..quant.configs import WADSConfig
from ..recipe import AllocationConfig, Recipe
from .args import (add_data_arg, add_json_arg, add_model_args, add_options, add_skip_arg, check_count, check_inputs,
                   given_options, load_model)


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
A latency budget (--latency-budget-ms MS, or --speedup F over the dense FP32 model) with --target
android plans the same way, each candidate priced by a cost table of `deploy profile` (--cost-table
TABLE.json; default: the table cached for this host at --latency-threads threads), alone or with
--size-budget-mb; the report shows the predicted latency (docs/latency_budget.md). --target jetson
takes the Jetson's own table (--cost-table: `deploy profile --target jetson`, timed by trtexec there).

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
  deploy compress --speedup 2.0 --target android --out out/android-2x        # after `deploy profile`
  deploy compress --speedup 1.5 --target jetson --cost-table xavier/results/cost_table.json --out out/jetson-1.5x
  deploy compress --latency-budget-ms 40 --size-budget-mb 12 --target android --cost-table t.json --out out/a40
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
    add_options(p, AllocationConfig, only=("target",), plain=True)  # `deploy build` has a --target of its own
    p.set_defaults(plan_target_only=True)
    e = p.add_argument_group("evaluation")
    add_data_arg(e, "--data", "labelled evaluation images; default: the test bed's test subset")
    e.add_argument("--limit", type=int, default=None, help="evaluate a seeded subset of N images")
    add_skip_arg(e)
    add_json_arg(p)
    p.set_defaults(func=run)


# The quantization fields with a flag: shared by every method (fc2: smoothquant and the alpha searches);
# quant_config refuses one that does not apply to the method named by --quant.
QUANT_FIELDS = ("act_scheme", "wads_iters", "w_bits", "w_group_size", "fc2")
DATA_FLAGS = ("--data", "--train-data", "--calib-data", "--alloc-calib-data")


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    """Low-rank, allocation, distillation and quantization flags (shared by `compress` and `build`).

    Generated from the configs' declarations (`add_options`); written here only the flags that are
    no config field: the data to read, the checkpoint, and two whose values the CLI turns into a
    field (--ranks: a JSON file of ranks; --quant: the method whose config is built).
    """
    g = p.add_argument_group("low-rank compression", "LRA / RB-LRA (LRA-QViT §3.1-3.3); skipped without --method")
    add_options(g, LowRankConfig, skip=("seed",), plain=True)
    g.add_argument("--ranks", type=Path, default=None, metavar="JSON",
                   help="per-layer ranks instead: a JSON file {layer name: rank} (or {'ranks': {...}})")

    a = p.add_argument_group("rank allocation", "How ranks (and, for mlorq, weight bits) are spread over the "
                                                "encoder Linears.")
    add_options(a, AllocationConfig, skip=("target",), plain=True)
    add_data_arg(a, "--alloc-calib-data", "where they come from (default: --train-data, then the test bed's "
                                          "training split)")

    k = p.add_argument_group("distillation", "block-level KD from the original model (LRA-QViT §3.4)")
    add_options(k.add_mutually_exclusive_group(), DistillConfig, only=("steps", "epochs"), plain=True)
    add_options(k, DistillConfig, skip=("steps", "epochs", "seed"), plain=True)
    add_data_arg(k, "--train-data", "distillation images (test bed default: fashion-mnist:train)")
    k.add_argument("--train-limit", type=int, default=None, metavar="N", help="use a seeded subset of N images")
    k.add_argument("--checkpoint", type=Path, default=None, metavar="PATH",
                   help="resumable checkpoint file (default: OUT.kd-checkpoint.pt; removed after success)")
    k.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint if it exists (settings must match, except a lower --kd-lr / "
                        "--kd-branch-lr: distillation stops on a NaN/inf loss, or a loss above "
                        f"{DIVERGENCE_FACTOR:g}x its running minimum for {DIVERGENCE_STEPS} steps, keeps the last good "
                        "checkpoint and says to resume it at a tenth of the lr)")
    add_options(k, LowRankConfig, only=("seed",), plain=True)  # one --seed: LowRankConfig's and DistillConfig's

    q = p.add_argument_group("quantization", "INT8 post-training quantization of the encoder-block Linears "
                                             "(LRA-QViT: per-token activations + WADS).")
    from ..quant import QUANT_METHODS

    q.add_argument("--quant", choices=("none", *QUANT_METHODS), default="none",
                   help="none (FP32, default), naive (per-tensor PTQ), smoothquant, qads, repq, per-token, or wads "
                        "(per-token + weight-aware distribution scaling, the paper's method)")
    add_options(q, Recipe, only=("quant_calib_images",), plain=True)
    add_data_arg(q, "--calib-data", "where calibration images come from (default: the test bed's training split)")
    add_options(q, WADSConfig, only=QUANT_FIELDS, plain=True)


def _read_ranks(path: Path) -> Dict[str, int]:
    from ..artifacts import read_json

    data = read_json(path)
    data = data.get("ranks", data) if isinstance(data, dict) else data
    if not isinstance(data, dict) or not data or not all(isinstance(v, int) and not isinstance(v, bool)
                                                         for v in data.values()):
        raise DeployError(f"--ranks {path}: expected a JSON object {{layer name: integer rank}}.")
    return data


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The `Recipe` the flags describe (validated: a bad value fails here, before any model is loaded).

    `deploy build`'s --target is the build's own (a --size-budget-mb plan is for it); `deploy compress`'s
    only names the target of a plan (`args.plan_target_only`).
    """
    from ..quant import quant_config

    if args.seed is not None:
        LowRankConfig.check("seed", args.seed)  # checked even where no config takes it
    seed = {} if args.seed is None else {"seed": args.seed}
    planned = any(getattr(args, k, None) is not None for k in ("size_budget_mb", "latency_budget_ms", "speedup"))
    target = getattr(args, "target", None) if planned else None
    if not planned and getattr(args, "target", None) is not None and getattr(args, "plan_target_only", False):
        raise DeployError("--target names the target of a --size-budget-mb plan; add --size-budget-mb MB "
                          "(or a latency budget: --latency-budget-ms MS or --speedup F).")
    alloc = AllocationConfig(**given_options(AllocationConfig, args, skip=("target",)),
                             **({} if target is None else {"target": target}))
    low_rank = distill = None
    lr_kw = given_options(LowRankConfig, args, skip=("seed",))
    stray = [flag_of(LowRankConfig, k) for k in lr_kw if k not in ("method", "svd")]
    if args.ranks is not None:
        stray.insert(1 if "param_reduction" in lr_kw else 0, "--ranks")
    if args.method is None and stray:
        raise DeployError(f"{stray[0]} needs --method lra or --method rb-lra.")
    if args.method is not None and not (alloc.method == "mlorq" and args.param_reduction is None
                                        and args.ranks is None):
        ranks = _read_ranks(args.ranks) if args.ranks is not None else None
        if args.param_reduction is None and ranks is None:
            raise DeployError(f"--method {args.method} needs --param-reduction F (e.g. 0.45) or --ranks JSON.")
        low_rank = LowRankConfig(**lr_kw, **({} if ranks is None else {"ranks": ranks}), **seed)
    kd_kw = given_options(DistillConfig, args, skip=("seed",))
    # MLoRQ distils when a low-rank method is named (--method lra): planned ranks in float, KD, then quantized
    wants_kd = args.kd_steps != 0 and (low_rank is not None if alloc.method != "mlorq" else args.method is not None)
    if wants_kd:
        distill = DistillConfig(**kd_kw, **seed)
    elif kd_kw:
        DistillConfig(**kd_kw, **seed)  # unused here, but a bad value is still an error
    elif args.kd_steps not in (None, 0) or args.kd_epochs is not None:
        raise DeployError("--kd-steps/--kd-epochs distil a low-rank model: give --method lra|rb-lra"
                          + (" (with mlorq: --method lra distils the planned ranks)" if alloc.method == "mlorq"
                             else "") + ".")
    quant = None
    q_kw = given_options(WADSConfig, args, only=QUANT_FIELDS)
    if args.w_group_size is not None and args.w_bits != 4:
        raise DeployError("--w-group-size applies to 4-bit weights (XNNPACK's blockwise GEMM): add --w-bits 4.")
    calib = given_options(Recipe, args, only=("quant_calib_images",))
    if args.quant != "none":
        quant = quant_config(args.quant, **q_kw, progress=not args.quiet)
    elif q_kw or calib:
        flags = "/".join([flag_of(WADSConfig, f) for f in QUANT_FIELDS] + [flag_of(Recipe, "quant_calib_images")])
        raise DeployError(f"{flags} set quantization options: add --quant METHOD.")
    return Recipe(low_rank=low_rank, allocation=alloc, distill=distill, quant=quant, **calib)


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
    if recipe.allocation.cost_table is not None:  # the latency budget's table: read and checked before the model
        from ..rank_alloc.latency import check_cost_table

        check_cost_table(recipe.allocation.cost_table, getattr(args, "model", None) or "testbed",
                         recipe.allocation.latency_threads, getattr(args, "img_size", None))
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
    budgets = [f"{flag} {v:g}" for flag, v in (("--size-budget-mb", args.size_budget_mb),
                                               ("--latency-budget-ms", args.latency_budget_ms),
                                               ("--speedup", args.speedup)) if v is not None]
    what = (" ".join(budgets) + f" --target {args.target}" if budgets else f"--method {method} --quant {args.quant}")
    emit(report.to_dict(), args.json, title=f"compress {what}: {args.out}")
    return 0
