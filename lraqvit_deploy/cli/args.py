"""Argument groups shared by subcommands, and flags generated from the library's option dataclasses.

`add_options(group, OptionsClass)` turns each `option(...)` field of an options dataclass into a
flag (help, limits, choices and default come from the field), and `options_from_args` builds the
object back from the parsed flags: the CLI never repeats a default, and a bad value is reported by
the dataclass's own validation under the flag's name (`flag_error`).
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Type

from ..errors import DeployError
from ..model_options import ModelOptions
from ..options import OptionError, describe_limits, field_types, flag_of


def add_model_args(p: argparse.ArgumentParser, positional: bool = True) -> None:
    g = p.add_argument_group("model", "What to load: an artifact folder, or a model name with a weight source.")
    if positional:
        g.add_argument("source", nargs="?", metavar="ARTIFACT_DIR",
                       help="a folder written by `deploy compress` (overrides --model)")
    g.add_argument("--model", "-m", default="testbed",
                   help="'testbed' (built-in, offline DINOv2 ViT-S/14 on Fashion-MNIST; default) or a timm "
                        "ViT-family name, e.g. deit_tiny_patch16_224, vit_base_patch16_224, swin_tiny_patch4_window7_224")
    add_options(g, ModelOptions, plain=True)  # --weights, --num-classes, --img-size, --testbed-profile


def model_options(args: argparse.Namespace):
    """The `ModelOptions` the model flags give (checked: a bad value is an OptionError naming the flag)."""
    return ModelOptions(**given_options(ModelOptions, args))


def load_model(args: argparse.Namespace, source: Optional[str] = None, name: Optional[str] = None):
    """The model the model options name (or `source` / `name` instead of the positional and --model)."""
    from ..models import create_model
    from ..targets import as_model

    source = source if source is not None else getattr(args, "source", None)
    if source:
        return as_model(source)
    opts = model_options(args)
    return create_model(name or args.model, "auto" if name else opts.weights, num_classes=opts.num_classes,
                        img_size=opts.img_size, testbed_profile=opts.testbed_profile,
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

    if hasattr(args, "testbed_profile"):  # the model flags (add_model_args)
        model_options(args)
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
def _aliases(field: dataclasses.Field) -> tuple:
    flag = field.metadata.get("flag")
    return flag[1:] if isinstance(flag, tuple) else ()


def _dest(cls: type, field: dataclasses.Field, shared: bool, plain: bool) -> str:
    if plain:  # the flag's own name: --kd-lr -> kd_lr, --no-activation-aware -> activation_aware
        flag = flag_of(cls, field.name)
        return flag[5 if flag.startswith("--no-") else 2:].replace("-", "_")
    return f"opt__{field.name}" if shared else f"opt_{cls.__name__}__{field.name}"


def _int_list(text: str) -> Tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers like 4,8") from None


def _cli_fields(cls: Type, skip: tuple, only: Optional[tuple]):
    for f in dataclasses.fields(cls):
        if f.name in skip or (only is not None and f.name not in only) or not f.metadata.get("cli", True):
            continue
        yield f


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def add_options(group, cls: Type, skip: tuple = (), shared: tuple = (), only: Optional[tuple] = None,
                plain: bool = False) -> None:
    """Add a flag for every CLI field of the options dataclass `cls` (except `skip`; only `only`) to `group`.

    Fields named in `shared` get a destination common to every class (e.g. bench's --iterations,
    added once for all targets). `plain`: each flag's destination is its own name (`--kd-lr` ->
    `args.kd_lr`) and None when the flag is not given (`given_options` collects the given ones).
    """
    types = field_types(cls)
    for f in _cli_fields(cls, skip, only):
        flag = flag_of(cls, f.name)
        tp, _ = types[f.name]
        meta = f.metadata
        default = meta["cli_default"] if meta.get("cli_default", dataclasses.MISSING) is not dataclasses.MISSING \
            else f.default
        dest = _dest(cls, f, f.name in shared, plain)
        unset = (None if default is f.default else default) if plain else argparse.SUPPRESS
        help_ = _flag_names(cls, meta.get("help", ""))
        if tp is bool:
            action = "store_false" if f.default is True else "store_true"
            group.add_argument(flag, *_aliases(f), dest=dest, action=action, default=unset,
                               help=(f"do not {help_[0].lower()}{help_[1:]}" if action == "store_false"
                                     else help_).replace("%", "%%"))
            continue
        cli_choices = meta.get("cli_choices")
        if isinstance(cli_choices, dict):  # the shell's spellings of the values
            conv, choices = str, tuple(cli_choices)
            default = next((k for k, v in cli_choices.items() if v == default), default)
        else:
            conv = {int: int, float: float}.get(tp, str)
            choices = tuple(cli_choices) if cli_choices else meta.get("choices")
        metavar = meta.get("metavar")
        if typing.get_origin(tp) is tuple:
            conv, metavar = _int_list, metavar or "B,B"
        limits = describe_limits(meta) if tp in (int, float) and not choices else ""
        if choices and metavar:  # the metavar hides them
            limits = describe_limits({"choices": choices})
        extra = f" ({limits})" if limits else ""
        shown = "" if default is None or default is dataclasses.MISSING else f"; default {_shown(default)}"
        group.add_argument(flag, *_aliases(f), dest=dest, type=conv, default=unset, choices=choices,
                           metavar=metavar or (None if choices else f.name.upper()),
                           help=f"{help_}{extra}{shown}".replace("%", "%%"))


def _flag_names(cls: Type, text: str) -> str:
    """A help text with the fields of `cls` it names (snake_case, or any in backquotes) written as their flags."""
    for f in dataclasses.fields(cls):
        flag = flag_of(cls, f.name)
        if flag and f"`{f.name}`" in text:
            text = text.replace(f"`{f.name}`", flag)
        if flag and "_" in f.name and f.name in text:
            text = re.sub(rf"(?<![\w.-]){re.escape(f.name)}(?![\w])", flag, text)
    return text


def given_options(cls: Type, args: argparse.Namespace, skip: tuple = (),
                  only: Optional[tuple] = None) -> Dict[str, Any]:
    """{field: value} of the `plain` flags of `cls` given on the command line, and the `cli_default`s of the others."""
    values = {}
    for f in _cli_fields(cls, skip, only):
        value = getattr(args, _dest(cls, f, False, True), None)
        cli_choices = f.metadata.get("cli_choices")
        if value is not None and isinstance(cli_choices, dict):
            value = cli_choices[value]
        if value is None and f.metadata.get("cli_default", dataclasses.MISSING) not in (dataclasses.MISSING, None):
            value = f.metadata["cli_default"]
        if value is not None:
            values[f.name] = value
    return values


def options_from_args(cls: Type, args: argparse.Namespace, shared: tuple = (), **overrides: Any):
    """The `cls` object the parsed flags describe (unset flags keep the dataclass defaults)."""
    values = {}
    for f in dataclasses.fields(cls):
        dest = _dest(cls, f, f.name in shared, False)
        if hasattr(args, dest):
            values[f.name] = getattr(args, dest)
    values.update(overrides)
    return cls(**values)


def flag_error(e: OptionError) -> str:
    """An options error, with each field it names written as the flag the user typed (`flag_of`)."""
    msg = str(e)
    for name in getattr(e, "fields", (e.field,)):
        flag = flag_of(e.owner, name) if isinstance(e.owner, type) else None
        if not flag:
            continue
        if msg.startswith(f"{name} = "):  # "lr = 0.0: must be > 0 (...)" -> "--kd-lr 0.0: must be > 0 (...)"
            msg = f"{flag} " + msg[len(name) + 3:]
        if getattr(e, "prose", False):  # a sentence of `validate`: every mention of the field
            msg = re.sub(rf"(?<![\w.-]){re.escape(name)} = ", f"{flag} ", msg)
            msg = re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w])", flag, msg)
    return msg
