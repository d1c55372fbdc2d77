"""`deploy bench --target android`: the on-device half of the latency protocol, driven over adb."""
from __future__ import annotations

import argparse
from pathlib import Path

from lraqvit_deploy.benchmark import BenchResult


def add_bench_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--serial", "-s", default=None, help="android: device serial (default: $ANDROID_SERIAL or the "
                                                             "only attached device)")
    group.add_argument("--adb", default=None, metavar="PATH", help="android: adb client (default: adb on PATH)")
    group.add_argument("--runner", default=None, metavar="PATH",
                       help="android: executor_runner built by android_runner/build_executor_runner.sh")
    group.add_argument("--cpus", default=None, help="android: comma-separated cores to pin to (default: the fastest "
                                                    "--threads cores by cpuinfo_max_freq)")
    group.add_argument("--no-pin", action="store_true", help="android: do not taskset-pin the runner")
    group.add_argument("--cooldown", type=float, default=30.0, metavar="S", help="android: idle seconds before the run")
    group.add_argument("--fixed-performance", action="store_true",
                       help="android: `cmd power set-fixed-performance-mode-enabled true` during the run")
    group.add_argument("--remote-dir", default="/data/local/tmp/lraqvit", help="android: working folder on the device")


def bench(path, args: argparse.Namespace) -> BenchResult:
    from lraqvit_deploy.backends.executorch.runtime import resolve_program
    from lraqvit_deploy.errors import DeployError

    from .adb import Adb
    from .protocol import RunPlan, run_on_device
    from .runner_binary import find_runner

    pte = resolve_program(path)
    adb = Adb(getattr(args, "adb", None))
    adb.select(getattr(args, "serial", None))
    runner = find_runner(getattr(args, "runner", None))
    cpus = None
    if getattr(args, "cpus", None):
        try:
            cpus = [int(c) for c in str(args.cpus).split(",") if c.strip()]
        except ValueError:
            raise DeployError(f"--cpus takes comma-separated core numbers, e.g. 7 or 4,5,6,7; got {args.cpus!r}.") \
                from None
    plan = RunPlan(pte=Path(pte), runner=runner, threads=getattr(args, "threads", None) or 1,
                   warmup=args.warmup, iterations=args.iterations, cooldown_s=getattr(args, "cooldown", 30.0),
                   cpus=cpus, pin=not getattr(args, "no_pin", False),
                   fixed_performance=getattr(args, "fixed_performance", False),
                   remote_dir=getattr(args, "remote_dir", "/data/local/tmp/lraqvit"))
    return run_on_device(adb, plan, progress=not getattr(args, "quiet", False))
