"""Formatting shared by the renderers: signed numbers with a real minus, paired intervals, learning
rates, durations, the CPU label and Markdown tables; the error and the loaded result file."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

MINUS = "\u2212"


class FiguresError(Exception):
    """A document whose regions cannot be rendered (bad marker, unknown renderer, missing file)."""


@dataclass(frozen=True)
class Source:
    path: str  # as written in the marker (relative to the repository root)
    data: Any

def num(x: float, nd: int = 2) -> str:
    return f"{x:.{nd}f}".replace("-", MINUS)


def signed(x: float, nd: int = 2) -> str:
    return f"{x:+.{nd}f}".replace("-", MINUS)


def interval(cmp: Dict[str, Any], nd: int = 2) -> str:
    """`−0.88 [−1.18, −0.58]`: a paired difference (points) with its 95 % interval."""
    lo, hi = cmp["ci95_pt"]
    return f"{signed(cmp['diff_pt'], nd)} [{signed(lo, nd)}, {signed(hi, nd)}]"


def lr(x: float) -> str:
    """1e-3, 3e-5, 0.0015 -> 1.5e-3."""
    m, e = f"{x:.1e}".split("e")
    m = m.rstrip("0").rstrip(".")
    return f"{m}e{int(e)}"


def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def code(path: str) -> str:
    return f"`{path}`"


def cpu_label(cpu: Dict[str, Any]) -> str:
    """`AMD EPYC (Zen 4, AVX-512)` from the lscpu fields a benchmark recorded."""
    name = cpu.get("model_name") or "unknown CPU"
    try:
        family, model = int(cpu.get("family")), int(cpu.get("model"))
    except (TypeError, ValueError):
        family = model = -1
    arch = None
    if "AMD" in name:
        if family == 23:
            arch = "Zen 2" if model >= 0x30 else "Zen"
        elif family == 25:
            arch = "Zen 4" if (0x10 <= model <= 0x1F or 0x60 <= model <= 0x7F or 0xA0 <= model <= 0xAF) else "Zen 3"
        elif family == 26:
            arch = "Zen 5"
    flags = cpu.get("flags") or {}
    isa = "AVX-512" if flags.get("avx512f") else ("AVX2" if flags.get("avx2") else None)
    detail = ", ".join(x for x in (arch, isa) if x)
    return f"{name} ({detail})" if detail else name


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Optional[str] = None) -> List[str]:
    align = align or "l" * len(header)
    sep = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|", *("| " + " | ".join(r) + " |" for r in rows)]


def strip_reduction(label: str) -> str:
    return re.sub(r"\s*-\d+%$", "", label)


def reduction(params: float, ref_params: float) -> str:
    return f"{MINUS}{100 * (1 - params / ref_params):.1f} %"


def pct(frac: float) -> str:
    return f"{MINUS}{100 * frac:.0f} %"

