"""`deploy eval`: top-1, agreement, parameters, GFLOPs and size of a model or artifact."""
from __future__ import annotations

import argparse

from ..model_info import model_info
from .args import add_json_arg, add_model_args, add_skip_arg, check_count, check_inputs, load_model
from .output import emit

HELP = "measure top-1, params, GFLOPs and size of a model or artifact"
DESCRIPTION = """\
Evaluate a model on labelled images and print top-1 (%), parameters, GFLOPs per image and size (MB).

examples:
  deploy eval                                   # the built-in test bed (FP32 DINOv2 ViT-S/14 + probe)
  deploy eval out/rb-lra-45                     # an artifact written by `deploy compress`
  deploy eval --model deit_small_patch16_224 --weights deit_s.safetensors --data /data/imagenet/val
  deploy eval out/rb-lra-45 --reference testbed --json eval.json   # + agreement with the FP32 model
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--data", "-d", default=None, metavar="DATA",
                   help="ImageFolder path (ImageNet val layout) or fashion-mnist[:test|:train]; default: the test bed's test subset")
    p.add_argument("--limit", type=int, default=None, help="evaluate a seeded subset of N images")
    p.add_argument("--reference", default=None, metavar="MODEL_OR_DIR",
                   help="also report agreement (0-1) with this model's predictions (a model name or artifact folder)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    add_skip_arg(p)
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import skipped_images
    from ..data_sources import eval_dataset
    from ..evaluate import MAX_BATCH, evaluate

    check_count(args.batch_size, "--batch-size", 1, MAX_BATCH)
    check_count(args.limit, "--limit")
    check_inputs(args, ("--data",))
    reference_is_artifact = _check_reference(args.reference)
    model = load_model(args)
    ds, _ = eval_dataset(model, args.data, args.limit, skip_bad_images=args.skip_bad_images)
    reference = None
    if args.reference:
        reference = (load_model(args, source=args.reference) if reference_is_artifact
                     else load_model(args, source="", name=args.reference))
    result = evaluate(model, ds, reference=reference, batch_size=args.batch_size, progress=not args.quiet)
    spec = model_info(model).spec
    data = {"model": spec.name, "arch": spec.arch, "weights": spec.weights, **result.to_dict(),
            "skipped_images": len(skipped_images(ds))}
    emit(data, args.json, title=f"eval: {spec.name}")
    return 0


def _check_reference(reference) -> bool:
    """Whether --reference names an artifact folder (checked now), else a model name (checked now)."""
    import os

    if not reference:
        return False
    if os.path.exists(reference) or os.sep in reference:
        from ..artifacts import check_model_artifact

        check_model_artifact(reference, "an artifact folder or a model name (--reference)")
        return True
    if reference != "testbed":
        from ..errors import WeightsNotFoundError
        from ..models.factory import _no_weights_message, check_arch, timm_cache_file

        check_arch(reference)
        if timm_cache_file(reference) is None:  # a reference model by name loads weights="auto"
            raise WeightsNotFoundError(f"--reference {reference}: " + _no_weights_message(reference))
    return False
