"""Latency of several built programs measured fairly: interleaved rounds, ratios within a round.

Timing program A then program B reads the machine's drift (clocks, neighbours, caches) as a
difference between them. Here each round benches every program once (`deploy bench`'s library call),
in an order rotated round by round (`measure.rounds.interleaved`), and each program's ratio to the
baseline is taken within a round, then summarized over rounds (`measure.rounds.summarize_rounds`).

    res = bench_rounds({"dense": "work/dense", "rb-lra": "work/rb"}, HostBenchOptions(iterations=20), rounds=5)
    res["summary"]["rb-lra"]["ratio_median"]     # rb-lra / dense, median of the per-round ratios
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

from ..errors import DeployError
from ..measure.rounds import interleaved, summarize_rounds


def bench_rounds(programs: Mapping[str, Any], options: Any = "host", rounds: int = 5,
                 baseline: Optional[str] = None,
                 on_round: Optional[Callable[[int, Dict[str, float]], None]] = None) -> Dict[str, Any]:
    """Bench each program (a `deploy build` folder or program file) once per round, orders rotated.

    Returns {"baseline", "rounds": [{label: median ms}], "orders": [[label]], "summary": {label: {"rounds",
    "median_ms", "min_ms", "max_ms", "ratio_median", "ratio_min", "ratio_max"}}}; `baseline` defaults to the
    first program. `options` is what `bench` takes (a target name or its bench options).
    """
    from ..targets import bench

    if not programs:
        raise DeployError("bench_rounds: no programs to time")
    if rounds < 1:
        raise DeployError(f"bench_rounds: rounds = {rounds}; time at least one round")
    baseline = next(iter(programs)) if baseline is None else baseline
    if baseline not in programs:
        raise DeployError(f"bench_rounds: baseline {baseline!r} is not one of the programs ({', '.join(programs)})")
    paths = {label: Path(p) for label, p in programs.items()}
    res = interleaved(list(paths), lambda label: bench(paths[label], options).median_ms, rounds, on_round)
    return {"baseline": baseline, **res, "summary": summarize_rounds(res["rounds"], baseline)}
