"""Argument groups shared by subcommands (model source, output), and their resolution."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from ..errors import DeployError


def add_model_args(p: argparse.ArgumentParser, positional: bool = True) -> None:
    g = p.add_argument_group("model", "What to load: an artifact folder, or a model name with a weight source.")
    if positional:
        g.add_argument("source", nargs="?", metavar="ARTIFACT_DIR",
                       help="a folder written by `deploy compress` (overrides --model)")
    g.add_argument("--model", "-m", default="testbed",
                   help="'testbed' (built-in, offline DINOv2 ViT-S/14 on Fashion-MNIST; default) or a timm "
                        "ViT-family name, e.g. deit_tiny_patch16_224, vit_base_patch16_224, swin_tiny_patch4_window7_224")
    g.add_argument("--weights", "-w", default="auto",
                   help="'auto' (testbed, else timm's on-disk cache), 'random' (smoke tests), 'timm-cache', "
                        "or a local .safetensors/.pth file. Never downloads.")
    g.add_argument("--num-classes", type=int, default=None, help="classifier size (timm models only)")
    g.add_argument("--img-size", type=int, default=None, help="input resolution (timm models only)")
    g.add_argument("--testbed-profile", choices=("quick", "full"), default="quick",
                   help="test bed sizes: quick (56 px, probe on 3k images, 1k test images) or full "
                        "(56 px, probe on 20k, all 10k test images)")


def load_model(args: argparse.Namespace):
    """The model named by the model argument group."""
    from ..artifacts import is_model_artifact, load_model_artifact
    from ..models import create_model

    source: Optional[str] = getattr(args, "source", None)
    if source:
        if not is_model_artifact(source):
            raise DeployError(f"{source}: not an artifact folder (no manifest.json + model.safetensors). "
                              "To load a model by name use --model.")
        return load_model_artifact(source)
    return create_model(args.model, args.weights, num_classes=args.num_classes, img_size=args.img_size,
                        testbed_profile=args.testbed_profile, progress=not getattr(args, "quiet", False))


def eval_dataset(args: argparse.Namespace, model):
    """`--data` if given, else the test bed's test subset; errors when a timm model has no data."""
    from timm.data import resolve_data_config

    from ..data import load_dataset, seeded_subset
    from ..models import TESTBED
    from ..models import testbed as tb

    spec = getattr(model, "lraqvit_spec", None)
    data_cfg = resolve_data_config(model=model)
    if getattr(args, "data", None):
        ds = load_dataset(args.data, data_cfg)
        return seeded_subset(ds, args.limit, 0) if getattr(args, "limit", None) else ds
    if spec is not None and spec.name == TESTBED:
        cfg = tb.get_profile(spec.testbed_profile or "quick")
        n = getattr(args, "limit", None) or cfg.n_test
        return seeded_subset(load_dataset("fashion-mnist:test", data_cfg), n, cfg.seed)
    raise DeployError("no evaluation data: pass --data DIR (ImageNet-val layout: one folder per class) "
                      "or --data fashion-mnist:test, or use --model testbed.")


def add_backend_groups(p: argparse.ArgumentParser, targets: dict, adder: str) -> None:
    """Give each installed target module (`{target: module name}`) its own option group via `module.<adder>`."""
    import importlib

    for target, modname in targets.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError:
            continue
        getattr(mod, adder)(p.add_argument_group(f"{target} options"))


def add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON here")
