"""Timing a .pte on an adb-attached phone: the on-device half of the latency protocol."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional, Tuple

from lraqvit_deploy.measure.latency import BenchOptions
from lraqvit_deploy.benchmark import BenchResult
from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.options import option

from .protocol import REMOTE_DIR


@dataclass(frozen=True)
class AndroidBenchOptions(BenchOptions):
    """How `bench(..., target="android")` runs the program on the phone."""

    target: ClassVar[str] = "android"
    serial: Optional[str] = option(None, "device serial (default: $ANDROID_SERIAL or the only attached device)")
    adb: Optional[str] = option(None, "adb client (default: adb on PATH)", metavar="PATH")
    runner: Optional[str] = option(None, "executor_runner built by android_runner/build_executor_runner.sh",
                                   metavar="PATH")
    cpus: Optional[str] = option(None, "comma-separated cores to pin to (default: the fastest --threads cores by "
                                       "cpuinfo_max_freq)")
    pin: bool = option(True, "taskset-pin the runner", flag="--no-pin")
    cooldown: float = option(30.0, "idle seconds before the run", min=0, max=86_400, metavar="S")
    fixed_performance: bool = option(False, "`cmd power set-fixed-performance-mode-enabled true` during the run")
    remote_dir: str = option(REMOTE_DIR, "working folder on the device")

    def validate(self) -> None:
        self.cpu_list()

    def cpu_list(self) -> Optional[Tuple[int, ...]]:
        if not self.cpus:
            return None
        try:
            cpus = tuple(int(c) for c in str(self.cpus).split(",") if c.strip())
        except ValueError:
            cpus = ()
        if not cpus or any(c < 0 for c in cpus):
            raise DeployError(f"cpus = {self.cpus!r}: give comma-separated core numbers, e.g. 7 or 4,5,6,7.")
        return cpus


def bench(path, options: AndroidBenchOptions) -> BenchResult:
    from lraqvit_deploy.files import resolve_program

    from .adb import Adb
    from .protocol import RunPlan, run_on_device
    from .runner_binary import find_runner

    pte = resolve_program(path)
    adb = Adb(options.adb)  # the files named here (program, adb, runner) are checked before any device is contacted
    runner = find_runner(options.runner)
    cpus = options.cpu_list()
    adb.select(options.serial)
    plan = RunPlan(pte=Path(pte), runner=runner, threads=options.threads, warmup=options.warmup,
                   iterations=options.iterations, cooldown_s=options.cooldown,
                   cpus=None if cpus is None else list(cpus), pin=options.pin,
                   fixed_performance=options.fixed_performance, remote_dir=options.remote_dir)
    return run_on_device(adb, plan, progress=options.progress)
