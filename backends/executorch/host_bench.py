"""Timing a .pte on this host, in-process, with the ExecuTorch runtime (XNNPACK)."""
from __future__ import annotations

import time
from pathlib import Path

from lraqvit_deploy.benchmark import BenchResult, summarize
from lraqvit_deploy.files import MANIFEST
from lraqvit_deploy.measure.host import cpu_description
from lraqvit_deploy.measure.latency import planned_latency


def bench(path, options) -> BenchResult:
    """Warm-up then `options.iterations` timed `forward` calls on one fixed input, same process, same threads.

    `options.runtime == "native"` times the same calls in the C++ pte_runner instead (its own process,
    `--threads` XNNPACK threads); the op profile, when asked for, always comes from the Python runtime.
    """
    from lraqvit_deploy.files import native_stderr, pass_on_native_log

    from lraqvit_deploy.files import resolve_program

    pte = resolve_program(path)
    logged = []  # the runtime's C++ log lines (fd 2): shown after a run only with --debug, dropped with an error
    with native_stderr(logged):
        result = _bench_native(pte, options) if getattr(options, "runtime", "python") == "native" else _bench(pte, options)
    pass_on_native_log(logged)
    predicted = planned_latency(pte.parent / MANIFEST, pte.name)
    if predicted:
        result.extra["predicted"] = predicted
    return result


def _bench(pte: Path, options) -> BenchResult:
    import torch

    from .runtime import load_forward, set_threads

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


def _bench_native(pte: Path, options) -> BenchResult:
    import torch

    from lraqvit_deploy.errors import DeployError

    from .arm import BUILD_SCRIPT, build_runner, run_native
    from .runtime import load_forward

    runner, why = build_runner("host")
    if runner is None:
        raise DeployError(f"--runtime native: {why}; build it with `bash {BUILD_SCRIPT} host` "
                          "(needs g++ and cmake) or use --runtime python")
    method, _ = load_forward(pte)  # the input shape (and a clear error for a program that does not load)
    x = torch.randn(1, *method.metadata.input_tensor_meta(0).sizes()[1:])
    threads = options.threads or 1
    _, info = run_native(pte, x, cpu=None, threads=threads, iterations=options.iterations, warmup=options.warmup,
                         toolchain=_host_toolchain(runner))
    times = [float(t) for t in info.get("times_ms") or []]
    if len(times) != options.iterations:
        raise DeployError(f"pte_runner reported {len(times)} timings for {options.iterations} iterations")
    extra = {"runtime": f"pte_runner (C++ Module API, XNNPACK): {runner}", "times_ms": times}
    if options.op_profile:
        from .op_profile import op_profile

        extra["op_profile"] = op_profile(pte)
    return BenchResult(target="host", artifact=str(pte), device=cpu_description(), iterations=options.iterations,
                       warmup=options.warmup, threads=int(info.get("threads") or threads),
                       load_ms=float(info.get("load_ms") or 0.0), size_mb=pte.stat().st_size / 1e6,
                       **summarize(times), extra=extra)


def _host_toolchain(runner: Path):
    from .arm import ArmToolchain

    return ArmToolchain(host_runner=runner)
