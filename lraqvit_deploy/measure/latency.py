"""The latency protocol every target follows (host runtime, phone over adb, Jetson): its options.

Warm-up, then N timed iterations on `threads` threads; each target's bench options extend this
(`HostBenchOptions`, `AndroidBenchOptions`, `JetsonBenchOptions`). It lives here, below the backends
and their device halves, so both import it and neither imports the other's side.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lraqvit_deploy.options import Options, option


@dataclass(frozen=True)
class BenchOptions(Options):
    """The latency protocol every target follows: warm-up, then N timed iterations on `threads` threads."""

    target: ClassVar[str] = ""
    iterations: int = option(50, "timed iterations", min=1, max=1_000_000, flag=("--iterations", "-n"))
    warmup: int = option(5, "untimed warm-up iterations", min=0, max=1_000_000)
    threads: int = option(1, "CPU threads of the runtime", min=1, max=1024, cli=False)  # the CLI's --threads
    progress: bool = option(True, "progress output", cli=False)
