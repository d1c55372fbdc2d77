"""`deploy bench --target host`: time a .pte in-process with the ExecuTorch runtime (XNNPACK)."""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from lraqvit_deploy.benchmark import BenchResult, summarize


def add_bench_arguments(group: argparse._ArgumentGroup) -> None:
    """Host threads come from the general `--threads` (default 1 here)."""
    group.add_argument("--op-profile", action="store_true",
                       help="host: also profile per-operator time with ETDump (LayerNorm and other non-delegated ops)")


def cpu_description() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()} ({platform.system()} {platform.machine()})"


def bench(path, args: argparse.Namespace) -> BenchResult:
    """Warm-up then `--iterations` timed `forward` calls on one fixed input, same process, same threads."""
    import torch

    from .runtime import load_forward, resolve_program, set_threads

    pte = resolve_program(path)
    threads = set_threads(getattr(args, "threads", None) or 1)
    method, load_ms = load_forward(pte)
    x = torch.randn(*method.metadata.input_tensor_meta(0).sizes())
    for _ in range(getattr(args, "warmup", 5)):
        method.execute([x])
    times = []
    for _ in range(args.iterations):
        t0 = time.perf_counter()
        method.execute([x])
        times.append((time.perf_counter() - t0) * 1e3)
    extra = {"runtime": "executorch.runtime (pybindings, XNNPACK)", "times_ms": times}
    if getattr(args, "op_profile", False):
        from .op_profile import op_profile

        extra["op_profile"] = op_profile(pte)
    return BenchResult(target="host", artifact=str(pte), device=cpu_description(), iterations=args.iterations,
                       warmup=getattr(args, "warmup", 5), threads=threads, load_ms=load_ms,
                       size_mb=pte.stat().st_size / 1e6, **summarize(times),
                       extra=extra)

