"""The validation layer: every options field checks its type, finiteness, bounds and choices on construction."""
import math
from dataclasses import dataclass
from typing import Optional

import pytest

from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.options import OptionError, Options, option, option_like


@dataclass(frozen=True)
class Demo(Options):
    count: int = option(3, "things", min=1, max=100)
    rate: float = option(0.5, "a rate", min=0, min_exclusive=True, max=1)
    mode: str = option("a", "the mode", choices=("a", "b"))
    limit: Optional[int] = option(None, "a limit", min=1)
    flag: bool = option(False, "a switch")


@pytest.mark.parametrize("field, value, words", [
    ("count", 0, ">= 1"), ("count", -1, ">= 1"), ("count", 10**12, "<= 100"), ("count", 2.5, "whole number"),
    ("count", "3", "whole number"), ("count", True, "whole number"), ("count", None, "required"),
    ("rate", 0.0, "> 0"), ("rate", math.nan, "finite"), ("rate", math.inf, "finite"), ("rate", -math.inf, "finite"),
    ("rate", 1.5, "<= 1"), ("rate", "x", "a number"), ("mode", "c", "one of a, b"), ("limit", 0, ">= 1"),
    ("flag", 1, "true or false"),
])
def test_bad_values_are_one_clear_error(field, value, words):
    with pytest.raises(OptionError) as e:
        Demo(**{field: value})
    msg = str(e.value)
    assert e.value.field == field and msg.startswith(f"{field} = ") and words in msg and "\n" not in msg
    assert isinstance(e.value, DeployError)


def test_good_values_are_normalised():
    d = Demo(count=7.0, rate=1, limit=None)
    assert d.count == 7 and isinstance(d.count, int) and d.rate == 1.0 and isinstance(d.rate, float)
    assert Demo.from_dict({"count": 2}).count == 2
    with pytest.raises(DeployError, match=r"unknown option\(s\) \['cuont'\]"):
        Demo.from_dict({"cuont": 2})


@dataclass(frozen=True)
class Part(Options):
    share: float = option(0.5, "a share", min=0, min_exclusive=True, max=1, max_exclusive=True, flag="--part-share")
    on: bool = option(True, "switch it on")


@dataclass(frozen=True)
class Whole(Options):
    part: Optional[Part] = option(None, "the part", cli=False)
    size: int = option(2, "the size", min=1)
    like: float = option_like(Part, "share", "a share like the part's")

    @classmethod
    def parts(cls):
        return {"part": Part}

    def validate(self):
        if self.part is not None and self.size > 3:
            raise self.error("size", "size = 4 with part.share: too big.", "part.share")


def test_exclusive_bounds_flags_and_declarations_taken_over():
    from lraqvit_deploy.cli.args import flag_error
    from lraqvit_deploy.options import flag_of

    with pytest.raises(OptionError, match="share = 1.0: must be < 1"):
        Part(share=1)
    with pytest.raises(OptionError, match="like = 0.0: must be > 0 \\(a share like the part's\\)"):
        Whole(like=0)
    assert Whole().like == 0.5 and Whole.check("size", 3.0) == 3
    with pytest.raises(OptionError, match="size = 0"):
        Whole.check("size", 0)
    assert (flag_of(Part, "share"), flag_of(Part, "on"), flag_of(Whole, "part.share"), flag_of(Whole, "part")) == \
        ("--part-share", "--no-on", "--part-share", None)
    with pytest.raises(OptionError) as e:
        Whole(part=Part(), size=4)
    assert str(e.value) == "size = 4 with part.share: too big."
    assert flag_error(e.value) == "--size 4 with --part-share: too big."
