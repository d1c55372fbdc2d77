"""Paired accuracy differences with their uncertainty: the one place every accuracy table gets its interval.

Two models scored on the SAME images are compared image by image: the difference in top-1 is the
mean of d_i = correct_b,i - correct_a,i, and its 95 % interval comes from those paired differences
(a normal interval on the mean of d; the images both models get right or both get wrong add no
variance). The exact McNemar test on the discordant images (only one of the two is right) gives the
p-value. Text may call b better (or worse) than a only when the interval excludes 0.

    >>> d = paired_difference(ref_correct, new_correct)
    >>> d.diff_pt, d.ci95_pt, d.significant
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Sequence, Tuple

import torch

from .errors import DeployError

Z95 = 1.959963984540054


@dataclass(frozen=True)
class PairedDifference:
    """Top-1 of b minus top-1 of a over the same images, in percentage points, with its 95 % interval."""

    diff_pt: float
    ci95_pt: Tuple[float, float]
    n_images: int
    only_a_right: int  # discordant images: a right, b wrong
    only_b_right: int
    mcnemar_p: float  # exact two-sided McNemar (binomial on the discordant images)
    method: str = field(default="paired normal interval on per-image differences; exact McNemar p")

    @property
    def significant(self) -> bool:
        """True when the 95 % interval excludes 0 (the only case text may rank the two)."""
        return self.ci95_pt[0] > 0 or self.ci95_pt[1] < 0

    def to_dict(self) -> Dict[str, Any]:
        return {"diff_pt": self.diff_pt, "ci95_pt": list(self.ci95_pt), "n_images": self.n_images,
                "only_a_right": self.only_a_right, "only_b_right": self.only_b_right,
                "mcnemar_p": self.mcnemar_p, "significant": self.significant, "method": self.method}

    def cell(self, digits: int = 1) -> str:
        """`+1.2 [+0.4, +2.0]`: the Markdown cell every table uses."""
        return format_difference(self.to_dict(), digits)


def format_difference(d: Dict[str, Any], digits: int = 2) -> str:
    """`+1.20 [+0.40, +2.00]` from a `PairedDifference.to_dict()` (what the tables' JSON rows hold)."""
    lo, hi = d["ci95_pt"]
    return f"{d['diff_pt']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def _as_bool(x: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 1:
        raise DeployError(f"{name}: expected one flag per image (1-D), got shape {tuple(t.shape)}.")
    return t.bool()


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: P(a binomial(n, 1/2) is at least as unbalanced), n = discordant pairs."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    # sum_{i<=k} C(n, i) / 2^n, in logs so large n does not overflow
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(v - top) for v in logs)
    return min(1.0, 2.0 * tail)


def paired_difference(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> PairedDifference:
    """b's top-1 minus a's over the same images (per-image correctness flags, in the same order)."""
    a, b = _as_bool(correct_a, "correct_a"), _as_bool(correct_b, "correct_b")
    if len(a) != len(b):
        raise DeployError(f"paired difference needs the same images: {len(a)} vs {len(b)} flags.")
    n = len(a)
    if n == 0:
        raise DeployError("paired difference of zero images.")
    d = b.double() - a.double()
    mean = float(d.mean())
    se = float(d.std(unbiased=True)) / math.sqrt(n) if n > 1 else float("inf")
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    half = Z95 * se
    return PairedDifference(100 * mean, (100 * (mean - half), 100 * (mean + half)), n, only_a, only_b,
                            mcnemar_exact_p(only_a, only_b))


def binomial_interval(correct: Sequence[bool]) -> Tuple[float, float]:
    """Wilson 95 % interval of one model's top-1 (in %), for a figure shown without a partner."""
    c = _as_bool(correct, "correct")
    n = len(c)
    if n == 0:
        raise DeployError("interval of zero images.")
    p = float(c.double().mean())
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return 100 * (centre - half), 100 * (centre + half)
