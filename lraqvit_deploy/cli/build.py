"""`deploy build --target {android,jetson}`: lower a model or artifact to a deployable program.

Each target is a backend module exposing:
    add_build_arguments(group)              target-specific options
    build(model, out_dir, args) -> dict     writes the program + manifest.json into out_dir
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from ..errors import DeployError
from .args import add_backend_groups, add_json_arg, add_model_args, load_model
from ..quant.cli_args import add_quant_args, quantize_from_args
from .compress import add_compression_args, compress_from_args

TARGETS = {
    "android": "lraqvit_deploy.backends.executorch.cli",
    "jetson": "lraqvit_deploy.backends.tensorrt.cli",
}
HELP = "lower a model to an Android .pte (ExecuTorch/XNNPACK) or a Jetson Q/DQ ONNX + TensorRT engine"
DESCRIPTION = """\
Build the deployable program for a target and verify it on this host.

examples:
  deploy build --target android --out out/android          # the FP32 test bed as an XNNPACK .pte
  deploy build --target android out/rb-lra-wads --out out/android-q8   # an INT8 artifact
  deploy build --target jetson --model testbed --out out/jetson        # Q/DQ ONNX + on-device bundle
  deploy build --target android --method rb-lra --param-reduction 0.45 --quant wads --out out/android-q8
"""


def _backend(target: str):
    try:
        return importlib.import_module(TARGETS[target])
    except ModuleNotFoundError as e:
        raise DeployError(f"target {target!r} is not available in this installation ({e}).") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", "-t", required=True, choices=sorted(TARGETS), help="deployment target")
    p.add_argument("--out", "-o", required=True, type=Path, help="output folder (replaced atomically)")
    add_model_args(p)
    add_json_arg(p)
    add_compression_args(p)  # --method lra|rb-lra ...: compress (and distil) before lowering
    add_quant_args(p)  # --quant wads ...: INT8 simulator scales that the backend lowers
    add_backend_groups(p, TARGETS, "add_build_arguments")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .output import emit

    backend = _backend(args.target)
    model = compress_from_args(load_model(args), args)
    if args.quant != "none":
        quantize_from_args(model, args)
    manifest = backend.build(model, args.out, args)
    emit({k: v for k, v in manifest.items() if not isinstance(v, (dict, list))}, args.json,
         title=f"build --target {args.target}: {args.out}")
    return 0
