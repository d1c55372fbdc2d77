"""One latency protocol and one result schema for every target (host, android, jetson)."""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional, Sequence

SCHEMA = "lraqvit-deploy/bench/1"


@dataclass
class BenchResult:
    """What `deploy bench` writes: latency statistics of one program on one device."""

    target: str  # "host" | "android" | "jetson"
    artifact: str  # the .pte / engine that ran
    device: str  # human description: CPU model, phone model + SoC, Jetson + power mode
    iterations: int
    warmup: int
    threads: Optional[int]
    median_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    mean_ms: float
    load_ms: Optional[float] = None
    size_mb: Optional[float] = None
    p99_ms: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict)  # target-specific: cpufreq log, trtexec flags, ...
    schema: str = SCHEMA

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "BenchResult":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def percentile(sorted_ms: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile q in [0, 100] of already sorted samples."""
    if not sorted_ms:
        raise ValueError("no samples")
    k = (len(sorted_ms) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(sorted_ms) - 1)
    return sorted_ms[lo] + (sorted_ms[hi] - sorted_ms[lo]) * (k - lo)


def summarize(times_ms: Sequence[float]) -> Dict[str, float]:
    """median / p90 / p99 / min / max / mean of per-iteration latencies in ms."""
    s = sorted(times_ms)
    return {
        "median_ms": statistics.median(s),
        "p90_ms": percentile(s, 90),
        "p99_ms": percentile(s, 99),
        "min_ms": s[0],
        "max_ms": s[-1],
        "mean_ms": statistics.fmean(s),
    }
