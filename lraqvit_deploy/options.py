"""Option dataclasses that validate themselves and describe their own command-line flags.

Every options type of the SDK (backend build and bench options, the recipe's allocation config)
is a frozen dataclass whose fields are declared with `option(...)`: a default, one line of help,
and the constraints that `Options.__post_init__` checks (type, finite, bounds, choices). The CLI
builds its flags from the same declarations (`lraqvit_deploy.cli.args.add_options`), so a default
or a limit is written once, and a bad value fails before any heavy work with one line naming the
field (the CLI renames it to the flag):

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


class OptionError(DeployError):
    """A field of an options object has a value it cannot take; `.field` names it."""

    def __init__(self, owner: type, field: str, message: str):
        super().__init__(message)
        self.owner, self.field = owner, field  # the options class, the field name


def option(default: Any = _MISSING, help: str = "", *, min: Optional[float] = None, max: Optional[float] = None,
           min_exclusive: bool = False, choices: Optional[Sequence[Any]] = None, flag: Optional[str] = None,
           metavar: Optional[str] = None, cli: bool = True) -> Any:
    """A dataclass field with help text and constraints (checked by `Options.__post_init__`).

    `min`/`max` bound numbers (`min_exclusive` makes `min` strict: "> 0"); `choices` lists the
    allowed values; `flag` overrides the CLI flag name (default `--field-name`); `cli=False`
    keeps the field out of the command line (Python API only).
    """
    meta = {"help": help, "min": min, "max": max, "min_exclusive": min_exclusive,
            "choices": None if choices is None else tuple(choices), "flag": flag, "metavar": metavar, "cli": cli}
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
        parts.append(f"<= {fmt_number(meta['max'])}")
    return " and ".join(parts)


@dataclass(frozen=True)
class Options:
    """Base of every options dataclass: validates each field against its `option(...)` declaration."""

    def __post_init__(self) -> None:
        owner, types = type(self), field_types(type(self))
        for f in dataclasses.fields(self):
            meta = f.metadata
            tp, nullable = types[f.name]
            value = getattr(self, f.name)
            what = f" ({meta['help']})" if meta.get("help") else ""

            def fail(why: str) -> None:
                raise OptionError(owner, f.name, f"{f.name} = {value!r}: {why}{what}.")

            if value is None:
                if not nullable:
                    fail("a value is required")
                continue
            if tp is bool:
                if not isinstance(value, bool):
                    fail("expected true or false")
            elif tp is int:
                if isinstance(value, bool) or not isinstance(value, int):
                    if isinstance(value, float) and value.is_integer():
                        object.__setattr__(self, f.name, int(value))
                        value = int(value)
                    else:
                        fail("expected a whole number")
            elif tp is float:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    fail("expected a number")
                value = float(value)
                object.__setattr__(self, f.name, value)
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
                if hi is not None and value > hi:
                    fail(f"must be <= {fmt_number(hi)}")
        self.validate()

    def validate(self) -> None:
        """Checks across fields (override); single-field limits belong in `option(...)`."""

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
