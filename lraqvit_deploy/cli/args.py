"""Argument groups shared by subcommands, and flags generated from the library's option dataclasses.

`add_options(group, OptionsClass)` turns each `option(...)` field of an options dataclass into a
flag (help, limits, choices and default come from the field), and `options_from_args` builds the
object back from the parsed flags: the CLI never repeats a default, and a bad value is reported by
the dataclass's own validation under the flag's name (`flag_error`).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Dict, Optional, Type

from ..errors import DeployError
from ..options import OptionError, describe_limits, field_types

_FLAGS: Dict[tuple, str] = {}  # (options class name, field) -> flag, for error messages


def add_model_args(p: argparse.ArgumentParser, positional: bool = True) -> None:
    g = p.add_argument_group("model", "What to load: an artifact folder, or a model name with a weight source.")
    if positional:
        g.add_argument("source", nargs="?", metavar="ARTIFACT_DIR",
                       help="a folder written by `deploy compress` (overrides --model)")
    g.add_argument("--model", "-m", default="testbed",
                   help="'testbed' (built-in, offline DINOv2 ViT-S/14 on Fashion-MNIST; default) or a timm "
                        "ViT-family name, e.g. deit_tiny_patch16_224, vit_base_patch16_224, swin_tiny_patch4_window7_224")
    g.add_argument("--weights", "-w", default="auto",
                   help="'auto' (testbed: the converged reference, fine-tuned end to end; else timm's on-disk "
                        "cache), 'probe' (testbed: frozen backbone + linear probe only), 'random' (smoke tests), "
                        "'timm-cache', or a local .safetensors/.pth file. Never downloads.")
    g.add_argument("--num-classes", type=int, default=None, help="classifier size (timm models only)")
    g.add_argument("--img-size", type=int, default=None, help="input resolution (timm models only)")
    g.add_argument("--testbed-profile", choices=("quick", "full"), default="quick",
                   help="test bed sizes: quick (56 px, probe and reference fine-tune on 3k training images, "
                        "1k test images) or full (56 px, 20k training images, all 10k test images)")


def load_model(args: argparse.Namespace, source: Optional[str] = None, name: Optional[str] = None):
    """The model the model options name (or `source` / `name` instead of the positional and --model)."""
    from ..models import create_model
    from ..targets import as_model

    source = source if source is not None else getattr(args, "source", None)
    if source:
        return as_model(source)
    return create_model(name or args.model, "auto" if name else args.weights, num_classes=args.num_classes,
                        img_size=args.img_size, testbed_profile=args.testbed_profile,
                        progress=not getattr(args, "quiet", False))


def add_data_arg(g, flag: str, help: str) -> None:
    g.add_argument(flag, default=None, metavar="DATA", help=help + " (ImageFolder path or fashion-mnist[:train|:test])")


def add_skip_arg(g) -> None:
    """--skip-bad-images, on every command that reads image folders."""
    g.add_argument("--skip-bad-images", action="store_true",
                   help="leave out the images of an ImageFolder that cannot be read (their count is reported) "
                        "instead of stopping at the first one")


def add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON here")


# ---- checks every command makes before any model is built ------------------------------------------
MAX_IMAGES = 10 ** 9  # --limit, --train-limit


def check_count(value: Optional[int], flag: str, lo: int = 1, hi: int = MAX_IMAGES, what: str = "images") -> None:
    """A count flag (images, a batch size): a whole number in lo..hi, or not given."""
    if value is not None and not lo <= value <= hi:
        raise DeployError(f"{flag} {value}: must be a whole number in {lo}..{hi:,} ({what}).")


def check_inputs(args: argparse.Namespace, data_flags: tuple = ()) -> None:
    """The user-named inputs and outputs of a command, checked before any model is built or data read:
    model options, the artifact folder, data specs, --json and --out."""
    from ..data import check_data_spec
    from ..files import check_output_dir, check_output_file

    for flag, v, hi in (("--num-classes", getattr(args, "num_classes", None), 1_000_000),
                        ("--img-size", getattr(args, "img_size", None), 16_384)):
        check_count(v, flag, 1, hi, "classifier classes" if flag == "--num-classes" else "input pixels")
    source = getattr(args, "source", None)
    if source:
        from ..artifacts import check_model_artifact

        check_model_artifact(source)
    for flag in data_flags:
        check_data_spec(getattr(args, flag.lstrip("-").replace("-", "_")), flag)
    if getattr(args, "json", None) is not None:
        check_output_file(args.json, "--json")
    if getattr(args, "out", None) is not None:
        check_output_dir(args.out, "--out")


# ---- flags from option dataclasses ----------------------------------------------------------------
def flag_of(cls: type, field: dataclasses.Field) -> str:
    flag = field.metadata.get("flag") or "--" + field.name.replace("_", "-")
    return flag[0] if isinstance(flag, tuple) else flag


def _aliases(field: dataclasses.Field) -> tuple:
    flag = field.metadata.get("flag")
    return flag[1:] if isinstance(flag, tuple) else ()


def _dest(cls: type, name: str, shared: bool) -> str:
    return f"opt__{name}" if shared else f"opt_{cls.__name__}__{name}"


def add_options(group, cls: Type, skip: tuple = (), shared: tuple = ()) -> None:
    """Add a flag for every CLI field of the options dataclass `cls` (except `skip`) to `group`.

    Fields named in `shared` get a destination common to every class (e.g. bench's --iterations,
    added once for all targets).
    """
    types = field_types(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.metadata.get("cli", True):
            continue
        flag = flag_of(cls, f)
        _FLAGS[(cls.__name__, f.name)] = flag
        tp, _ = types[f.name]
        meta, default = f.metadata, f.default
        dest = _dest(cls, f.name, f.name in shared)
        help_ = meta.get("help", "")
        limits = describe_limits(meta) if tp is not str else ""
        if tp is bool:
            if default is True and not meta.get("flag"):
                flag = "--no-" + f.name.replace("_", "-")
                _FLAGS[(cls.__name__, f.name)] = flag
            action = "store_false" if default is True else "store_true"
            group.add_argument(flag, dest=dest, action=action, default=argparse.SUPPRESS,
                               help=(f"do not {help_[0].lower()}{help_[1:]}" if action == "store_false" else help_))
            continue
        conv = {int: int, float: float}.get(tp, str)
        extra = f" ({limits})" if limits and not meta.get("choices") else ""
        shown = "" if default is None or default is dataclasses.MISSING else f"; default {default}"
        group.add_argument(flag, *_aliases(f), dest=dest, type=conv, default=argparse.SUPPRESS, choices=meta.get("choices"),
                           metavar=meta.get("metavar") or (None if meta.get("choices") else f.name.upper()), help=f"{help_}{extra}{shown}".replace("%", "%%"))


def options_from_args(cls: Type, args: argparse.Namespace, shared: tuple = (), **overrides: Any):
    """The `cls` object the parsed flags describe (unset flags keep the dataclass defaults)."""
    values = {}
    for f in dataclasses.fields(cls):
        dest = _dest(cls, f.name, f.name in shared)
        if hasattr(args, dest):
            values[f.name] = getattr(args, dest)
    values.update(overrides)
    return cls(**values)


def flag_error(e: OptionError) -> str:
    """An options error, with the field renamed to the flag the user typed."""
    flag = next((_FLAGS[(c.__name__, e.field)] for c in getattr(e.owner, "__mro__", ())
                 if (c.__name__, e.field) in _FLAGS), None)
    msg = str(e)
    return msg.replace(f"{e.field} = ", f"{flag} ", 1) if flag and msg.startswith(f"{e.field} = ") else msg


def name_flags(cls: type, flags: Dict[str, str]) -> None:
    """Name the flags of fields of an options class whose flags are written by hand (for `flag_error`)."""
    for field, flag in flags.items():
        _FLAGS[(cls.__name__, field)] = flag

