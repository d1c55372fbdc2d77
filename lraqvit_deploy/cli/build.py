"""`deploy build --target {android,jetson}`: flags -> (Recipe, backend options) -> `lraqvit_deploy.build`."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..backends import backend_names, options_type
from .args import add_data_arg, add_json_arg, add_model_args, add_options, add_skip_arg, load_model, options_from_args
from .compress import add_recipe_args, check_recipe_inputs, data_from_args, recipe_from_args

HELP = "lower a model to an Android .pte (ExecuTorch/XNNPACK) or a Jetson Q/DQ ONNX + TensorRT bundle"
DESCRIPTION = """\
Build the deployable program for a target and verify it on this host (the .pte in the ExecuTorch
runtime, the ONNX in onnxruntime) against the PyTorch model it came from.

Verification images: --data if given, else the test bed's test split; a timm model without data
is verified on seeded synthetic images (agreement and output closeness only, no top-1; the
manifest says so). An INT8 artifact never needs calibration images; an FP32 model built for the
Jetson is quantized per tensor on --calib-data (the test bed: its training split).

examples:
  deploy build --target android --out out/android          # the FP32 test bed as an XNNPACK .pte
  deploy build --target android out/rb-lra-wads --out out/android-q8   # an INT8 artifact
  deploy build --target jetson --model deit_small_patch16_224 --weights random --out out/jetson
  deploy build --target jetson out/rb-lra-wads --out out/jetson-q8     # Q/DQ ONNX + on-device bundle
  deploy build --target android --method rb-lra --param-reduction 0.45 --quant wads --out out/android-q8
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    targets = backend_names("build")  # the registry's (lraqvit_deploy.backends.register_backend)
    p.add_argument("--target", "-t", required=True, choices=targets, help="deployment target")
    p.add_argument("--out", "-o", required=True, type=Path, help="output folder (replaced atomically)")
    add_model_args(p)
    d = p.add_argument_group("verification data")
    add_data_arg(d, "--data", "labelled images to verify on; default: the test bed's test split, else seeded "
                              "synthetic images")
    d.add_argument("--limit", type=int, default=None, metavar="N", help="verify on a seeded subset of N images")
    add_skip_arg(d)
    add_json_arg(p)
    add_recipe_args(p)  # --method / --quant ...: compress (and distil, quantize) before lowering
    for target in targets:
        cls = options_type(target, "build")
        add_options(p.add_argument_group(f"{target} options", cls.__doc__), cls)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..backends import get_backend
    from ..pipeline import compress
    from ..targets import build
    from .output import emit

    backend = get_backend(args.target, "build")  # "backend not installed: ..." before any work
    options = options_from_args(backend.build_options, args, progress=not args.quiet)
    recipe = recipe_from_args(args)
    check_recipe_inputs(args, recipe, None)  # counts, files, --out, --json, the checkpoint: before any model
    model = load_model(args)
    skipped = 0
    if not recipe.empty:
        skipped = compress(model, recipe, **data_from_args(args), evaluate=False, checkpoint=args.checkpoint,
                           resume=args.resume, progress=not args.quiet).skipped_images
    result = build(model, args.out, options, data=args.data, calib_data=args.calib_data, data_limit=args.limit,
                   skip_bad_images=args.skip_bad_images)
    summary = result.summary()
    summary["skipped_images"] = skipped + result.skipped_images
    emit(summary, args.json, title=f"build --target {args.target}: {args.out}")
    return 0
