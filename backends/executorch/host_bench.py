"""Timing a .pte on this host, in-process, with the ExecuTorch runtime (XNNPACK)."""
from __future__ import annotations

import platform
import time
from pathlib import Path

from lraqvit_deploy.benchmark import BenchResult, summarize


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


def bench(path, options) -> BenchResult:
    """Warm-up then `options.iterations` timed `forward` calls on one fixed input, same process, same threads."""
    import torch

    from .runtime import load_forward, resolve_program, set_threads

    pte = resolve_program(path)
    threads = set_threads(options.threads)
    method, load_ms = load_forward(pte)
    x = torch.randn(*method.metadata.input_tensor_meta(0).sizes())
    for _ in range(options.warmup):
        method.execute([x])
    times = []
    for _ in range(options.iterations):
        t0 = time.perf_counter()
        method.execute([x])
        times.append((time.perf_counter() - t0) * 1e3)
    extra = {"runtime": "executorch.runtime (pybindings, XNNPACK)", "times_ms": times}
    if options.op_profile:
        from .op_profile import op_profile

        extra["op_profile"] = op_profile(pte)
    return BenchResult(target="host", artifact=str(pte), device=cpu_description(), iterations=options.iterations,
                       warmup=options.warmup, threads=threads, load_ms=load_ms,
                       size_mb=pte.stat().st_size / 1e6, **summarize(times), extra=extra)
