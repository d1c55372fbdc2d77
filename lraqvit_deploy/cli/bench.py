"""`deploy bench --target {host,android,jetson} PROGRAM`: one latency protocol for every device.

Each target is a backend module exposing:
    add_bench_arguments(group)
    bench(path, args) -> lraqvit_deploy.benchmark.BenchResult
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from ..errors import DeployError
from .args import add_backend_groups, add_json_arg

TARGETS = {
    "host": "lraqvit_deploy.backends.executorch.host_bench",
    "android": "lraqvit_deploy.android_runner.cli",
    "jetson": "lraqvit_deploy.jetson.cli",
}
HELP = "measure latency of a built program on this host, an adb-attached phone or a Jetson"
DESCRIPTION = """\
Time a program built by `deploy build` with warm-up and N iterations; report median, p90, min,
max and mean latency (ms), load time, size, iterations and threads as one JSON schema for all
targets.

examples:
  deploy bench --target host out/android --json host.json
  deploy bench --target android out/android --serial R5CT... --json phone.json
  deploy bench --target jetson out/jetson --json xavier.json     # on the Jetson, or collect its result file
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", "-t", required=True, choices=sorted(TARGETS))
    p.add_argument("program", type=Path, metavar="DIR_OR_PROGRAM", help="a `deploy build` folder, or the .pte / engine")
    p.add_argument("--iterations", "-n", type=int, default=50, help="timed iterations (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up iterations (default 5)")
    add_json_arg(p)
    add_backend_groups(p, TARGETS, "add_bench_arguments")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .output import emit

    try:
        backend = importlib.import_module(TARGETS[args.target])
    except ModuleNotFoundError as e:
        raise DeployError(f"bench target {args.target!r} is not available in this installation ({e}).") from None
    if args.iterations < 1 or args.warmup < 0:
        raise DeployError("--iterations must be >= 1 and --warmup >= 0.")
    result = backend.bench(args.program, args)
    emit(result.to_dict(), args.json, title=f"bench --target {args.target}: {args.program}")
    return 0
