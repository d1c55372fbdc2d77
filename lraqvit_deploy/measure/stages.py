"""Stage timings the results carry: `compress` and `build` say how long each of their stages took.

The library marks its stages with `stage("lower")`; `recording()` around a call collects them. A
benchmark reads `BuildResult.stage_seconds` / `CompressionReport.stage_seconds` instead of patching
library functions to time them. A stage nested in a stage of the same name counts once (the
outermost); different names nest freely (each is inclusive of what it contains).

    >>> with recording() as times:
    ...     with stage("lower"):
    ...         ...
    >>> times   # {"lower": {"seconds": 0.12, "calls": 1}}
"""
from __future__ import annotations

import contextlib
import contextvars
import time
from typing import Dict, Iterator, Tuple

_recorders: contextvars.ContextVar[Tuple[Dict[str, Dict[str, float]], ...]] = contextvars.ContextVar(
    "lraqvit_stage_recorders", default=())
_open: contextvars.ContextVar[frozenset] = contextvars.ContextVar("lraqvit_open_stages", default=frozenset())


@contextlib.contextmanager
def recording() -> Iterator[Dict[str, Dict[str, float]]]:
    """Collect the stages run inside into the yielded dict {name: {"seconds", "calls"}} (an outer
    recording sees them too)."""
    times: Dict[str, Dict[str, float]] = {}
    token = _recorders.set(_recorders.get() + (times,))
    try:
        yield times
    finally:
        _recorders.reset(token)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as stage `name` for every active `recording()` (free when none is active)."""
    recorders, running = _recorders.get(), _open.get()
    if not recorders or name in running:
        yield
        return
    token = _open.set(running | {name})
    t0 = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - t0
        _open.reset(token)
        for times in recorders:
            entry = times.setdefault(name, {"seconds": 0.0, "calls": 0})
            entry["seconds"] += seconds
            entry["calls"] += 1


def rounded(times: Dict[str, Dict[str, float]], digits: int = 3) -> Dict[str, Dict[str, float]]:
    return {k: {"seconds": round(v["seconds"], digits), "calls": int(v["calls"])} for k, v in times.items()}
