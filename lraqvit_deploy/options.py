"""Option dataclasses that validate themselves and describe their own command-line flags.

Every options type of the SDK (backend build and bench options, and the recipe's configs: low
rank, allocation, distillation, quantization, the `Recipe` itself) is a frozen dataclass whose
fields are declared with `option(...)`: a default, one line of help, and the constraints that
`Options.__post_init__` checks (type, finite, bounds, choices). The CLI builds its flags from the
same declarations (`lraqvit_deploy.cli.args.add_options`), so a default or a limit is written
once, and a bad value fails before any heavy work with one line naming the field (the CLI renames
it to the flag, `flag_of`):

    >>> @dataclass(frozen=True)
    ... class BenchOptions(Options):
    ...     iterations: int = option(50, "timed iterations", min=1)
    >>> BenchOptions(iterations=0)
    OptionError: iterations = 0: must be >= 1 (timed iterations).
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

from .errors import DeployError

_MISSING = dataclasses.MISSING


MAX_SEED = 2 ** 31 - 1  # every seed of the recipe (torch.manual_seed takes more; numpy's RandomState does not)
MAX_IMAGES = 1_000_000  # images of a calibration set or a batch


class OptionError(DeployError):
    """A field of an options object has a value it cannot take; `.field` names it.

    `fields` lists every field the message names (the first is `.field`; a dotted path such as
    `distill.branch_lr` names a field of a part, see `Options.parts`), so that the CLI can write
    each one as its flag.
    """

    def __init__(self, owner: type, field: str, message: str, fields: Sequence[str] = (), prose: bool = False):
        super().__init__(message)
        self.owner, self.field = owner, field  # the options class, the field name
        self.fields = (field, *[f for f in fields if f != field])
        self.prose = prose  # a sentence that names its fields anywhere (`Options.error`), not "field = value: ..."


def option(default: Any = _MISSING, help: str = "", *, min: Optional[float] = None, max: Optional[float] = None,
           min_exclusive: bool = False, max_exclusive: bool = False, choices: Optional[Sequence[Any]] = None,
           flag: Any = None, metavar: Optional[str] = None, cli: bool = True, cli_default: Any = _MISSING,
           cli_choices: Any = None) -> Any:
    """A dataclass field with help text and constraints (checked by `Options.__post_init__`).

    `min`/`max` bound numbers (`min_exclusive` / `max_exclusive` make them strict: "> 0", "< 1");
    `choices` lists the allowed values; `flag` overrides the CLI flag name (default
    `--field-name`; a tuple adds aliases); `cli=False` keeps the field out of the command line
    (Python API only). Command line only: `cli_default` is what an absent flag means when that
    differs from the Python default (None: the part is not built, no default shown);
    `cli_choices` narrows the values the flag takes (a sequence), or spells them for the shell
    (a mapping {spelling: value}).
    """
    meta = {"help": help, "min": min, "max": max, "min_exclusive": min_exclusive, "max_exclusive": max_exclusive,
            "choices": None if choices is None else tuple(choices), "flag": flag, "metavar": metavar, "cli": cli,
            "cli_default": cli_default, "cli_choices": cli_choices}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _base_type(tp: Any) -> Tuple[Any, bool]:
    """(the non-None type of an annotation, whether None is allowed)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), len(args) < len(typing.get_args(tp))
    return tp, False


def field_types(cls) -> Dict[str, Tuple[Any, bool]]:
    hints = typing.get_type_hints(cls)
    return {f.name: _base_type(hints[f.name]) for f in dataclasses.fields(cls)}


def fmt_number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def describe_limits(meta: Dict[str, Any]) -> str:
    parts = []
    if meta.get("choices"):
        parts.append("one of " + ", ".join(map(str, meta["choices"])))
    if meta.get("min") is not None:
        parts.append(f"{'>' if meta.get('min_exclusive') else '>='} {fmt_number(meta['min'])}")
    if meta.get("max") is not None:
        parts.append(f"{'<' if meta.get('max_exclusive') else '<='} {fmt_number(meta['max'])}")
    return " and ".join(parts)


def seed_option(help: str = "data order and random init") -> Any:
    """The seed field of every recipe config: one flag (--seed), one bound (MAX_SEED)."""
    return option(0, help, min=0, max=MAX_SEED, flag="--seed")


def option_like(cls: type, name: str, help: Optional[str] = None, **changes: Any) -> Any:
    """A field declared as field `name` of `cls` (its default, limits and choices), for a class that carries
    the same value under another name (e.g. a table config's `kd_steps` is `DistillConfig.steps`).
    `help` and `changes` (any `option` keyword) replace the original's."""
    f = declared(cls, name)
    meta = dict(f.metadata)
    default = f.default if f.default is not _MISSING else f.default_factory()  # type: ignore[misc]
    keep = {k: meta[k] for k in ("min", "max", "min_exclusive", "max_exclusive", "choices", "metavar")}
    return option(changes.pop("default", default), meta["help"] if help is None else help, **{**keep, **changes})


def declared(cls: type, name: str) -> dataclasses.Field:
    """The `option(...)` field `name` of the options class `cls`."""
    return {f.name: f for f in dataclasses.fields(cls)}[name]


def flag_of(cls: type, name: str) -> Optional[str]:
    """The command-line flag of field `name` of `cls` (None for a field kept off the command line).

    A dotted path (`distill.lr`) is looked up in the part's class (`cls.parts()`). The flag is the
    declared one (also with `cli=False`: a flag the CLI writes itself), else `--field-name`, and
    `--no-field-name` for a switch that is on by default.
    """
    head, _, rest = name.partition(".")
    if rest:
        part = getattr(cls, "parts", lambda: {})().get(head)
        return None if part is None else flag_of(part, rest)
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    f = fields.get(name)
    if f is None:
        return None
    flag = f.metadata.get("flag")
    if flag:  # declared: also for a field whose flag the CLI writes itself (cli=False, e.g. a file to read)
        return flag[0] if isinstance(flag, tuple) else flag
    if not f.metadata.get("cli", True):
        return None
    if f.default is True:
        return "--no-" + name.replace("_", "-")
    return "--" + name.replace("_", "-")


def _checked(owner: type, f: dataclasses.Field, tp: Any, nullable: bool, value: Any) -> Any:
    """`value` of field `f` checked against its declaration: the value (normalised: 7.0 -> 7 for an int)."""
    meta = f.metadata
    what = f" ({meta['help']})" if meta.get("help") else ""

    def fail(why: str) -> None:
        raise OptionError(owner, f.name, f"{f.name} = {value!r}: {why}{what}.")

    if value is None:
        if not nullable and tp is not Any:
            fail("a value is required")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            fail("expected true or false")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                fail("expected a whole number")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("expected a number")
        value = float(value)
        if not math.isfinite(value):
            fail("expected a finite number")
    elif tp is str and not isinstance(value, str):
        fail("expected a string")
    if meta.get("choices") and value not in meta["choices"]:
        fail("must be " + describe_limits({"choices": meta["choices"]}))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and (value <= lo if meta.get("min_exclusive") else value < lo):
            fail(f"must be {'>' if meta.get('min_exclusive') else '>='} {fmt_number(lo)}")
        if hi is not None and (value >= hi if meta.get("max_exclusive") else value > hi):
            fail(f"must be {'<' if meta.get('max_exclusive') else '<='} {fmt_number(hi)}")
    return value


@dataclass(frozen=True)
class Options:
    """Base of every options dataclass: validates each field against its `option(...)` declaration."""

    def __post_init__(self) -> None:
        owner, types = type(self), field_types(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            checked = _checked(owner, f, *types[f.name], value)
            if checked is not value:
                object.__setattr__(self, f.name, checked)
        self.validate()

    @classmethod
    def check(cls, name: str, value: Any) -> Any:
        """`value` checked as field `name` would be (an OptionError if it cannot be), normalised."""
        return _checked(cls, declared(cls, name), *field_types(cls)[name], value)

    def validate(self) -> None:
        """Checks across fields (override); single-field limits belong in `option(...)`.

        Raise `self.error(field, message, *other_fields)` so the CLI can name the flags."""

    def error(self, field: str, message: str, *others: str) -> OptionError:
        """An OptionError of this class about `field` (and `others`), for `validate`."""
        return OptionError(type(self), field, message, others, prose=True)

    @classmethod
    def parts(cls) -> Dict[str, type]:
        """{field: options class} of fields that hold other options objects (for dotted error paths)."""
        return {}

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any], where: str = ""):
        """Build from a mapping (a TOML table, a JSON object); unknown keys are one clear error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DeployError(f"{where or cls.__name__}: unknown option(s) {unknown}; known: {sorted(known)}.")
        return cls(**data)
