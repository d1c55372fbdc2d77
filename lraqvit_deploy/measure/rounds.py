"""Timing several programs fairly on one machine: interleaved rounds, per-round ratios, the GEMM floor.

A machine drifts (clocks, neighbours, caches): timing A then B reads the drift as a difference. Each
round times every program once, in an order rotated round by round, and a ratio is taken between
programs OF THE SAME ROUND, so drift cancels instead of entering the ratio. The compute floor says
how far a measured latency is from this CPU's own GEMM rate at the model's FLOPs.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence


def rotated(programs: Sequence[str], r: int) -> List[str]:
    """Round r's order: the program list rotated left by r (each program leads once every len rounds)."""
    programs = list(programs)
    if not programs:
        return []
    k = r % len(programs)
    return programs[k:] + programs[:k]


def interleaved(programs: Sequence[str], time_one: Callable[[str], float], rounds: int,
                on_round: Optional[Callable[[int, Dict[str, float]], None]] = None) -> Dict[str, Any]:
    """Time each program once per round (`time_one(name)` -> ms), orders rotated; returns
    {"rounds": [{name: ms}], "orders": [[names]]}. `on_round(r, times)` after each round (progress)."""
    out: Dict[str, Any] = {"rounds": [], "orders": []}
    for r in range(rounds):
        order = rotated(programs, r)
        out["orders"].append(order)
        out["rounds"].append({p: time_one(p) for p in order})
        if on_round is not None:
            on_round(r, out["rounds"][-1])
    return out


def summarize_rounds(rounds: Sequence[Dict[str, float]], baseline: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
    """Per program: median/min/max of its per-round times, and its ratio to `baseline` OF THE SAME ROUND.

    `rounds[r][program]` is that program's time (ms) in round r; a program missing from a round (a
    failed build) is left out of that round. The ratio is the median of the per-round ratios (with
    their min-max). `baseline` defaults to the first program of the first round.
    """
    programs: List[str] = []
    for rnd in rounds:
        for p in rnd:
            if p not in programs:
                programs.append(p)
    baseline = programs[0] if baseline is None and programs else baseline
    out: Dict[str, Dict[str, Any]] = {}
    for p in programs:
        ms = [rnd[p] for rnd in rounds if p in rnd]
        ratios = [rnd[p] / rnd[baseline] for rnd in rounds if p in rnd and rnd.get(baseline)]
        out[p] = {"rounds": len(ms), "median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms),
                  "ratio_median": statistics.median(ratios) if ratios else None,
                  "ratio_min": min(ratios) if ratios else None, "ratio_max": max(ratios) if ratios else None}
    return out


def gemm_rate(m: int, k: int, n: int, seconds: float) -> float:
    """G(FL)OP/s of one (m x k) @ (k x n) product that took `seconds` (a multiply-add counts 2)."""
    return 2.0 * m * k * n / seconds / 1e9


def floor_ms(gflops: Optional[float], rate_gflops: Optional[float]) -> Optional[float]:
    """The compute floor: this many GFLOPs at the measured GEMM rate, in ms."""
    if not gflops or not rate_gflops:
        return None
    return gflops / rate_gflops * 1e3


def floor_fraction(floor: Optional[float], measured_ms: Optional[float]) -> Optional[float]:
    """floor_ms / measured_ms: 1.0 would be every FLOP at GEMM speed; > 1 means the kernels beat that GEMM."""
    if floor is None or not measured_ms:
        return None
    return floor / measured_ms


def measure_gemm(threads: int, shape: Sequence[int], reps: int) -> Dict[str, Any]:
    """Best-of-`reps` FP32 matmul and INT8 `torch._int_mm` rates at `threads` torch threads (restored after)."""
    import torch

    m, k, n = shape
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    out: Dict[str, Any] = {}

    def best(fn) -> Dict[str, float]:
        for _ in range(3):
            fn()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return {"best_ms": min(times) * 1e3, "median_ms": statistics.median(times) * 1e3,
                "gops": gemm_rate(m, k, n, min(times))}

    try:
        a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
        out["fp32"] = best(lambda: torch.matmul(a, b))
        try:
            a8 = torch.randint(-128, 128, (m, k), dtype=torch.int8, generator=g)
            b8 = torch.randint(-128, 128, (k, n), dtype=torch.int8, generator=g)
            torch._int_mm(a8, b8)
            out["int8"] = best(lambda: torch._int_mm(a8, b8))
        except Exception as e:  # not every build has a CPU int8 GEMM
            out["int8"] = {"gops": None, "reason": f"torch._int_mm: {type(e).__name__}: {str(e)[:120]}"}
    finally:
        torch.set_num_threads(before)
    return out
