"""`deploy bench --target {host,android,jetson} PROGRAM`: flags -> bench options -> `lraqvit_deploy.bench`."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..backends import backend_names, options_type
from .args import add_json_arg, add_options, options_from_args

SHARED = ("iterations", "warmup")  # BenchOptions' own fields: one flag for every target
HELP = "measure latency of a built program on this host, an adb-attached phone or a Jetson"
DESCRIPTION = """\
Time a program built by `deploy build` with warm-up and N iterations; report median, p90, min,
max and mean latency (ms), load time, size, iterations and threads as one JSON schema for all
targets. --threads sets the runtime's threads (default 1: the paper times one core).

examples:
  deploy bench --target host out/android --json host.json
  deploy bench --target android out/android --serial R5CT... --json phone.json
  deploy bench --target jetson out/jetson --json xavier.json     # on the Jetson, or collect its result file
"""


def register(sub: argparse._SubParsersAction) -> None:
    from ..backends.base import BenchOptions

    p = sub.add_parser("bench", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    targets = backend_names("bench")  # the registry's (lraqvit_deploy.backends.register_backend)
    p.add_argument("--target", "-t", required=True, choices=targets)
    p.add_argument("program", type=Path, metavar="DIR_OR_PROGRAM", help="a `deploy build` folder, or the .pte / engine")
    add_options(p.add_argument_group("timing"), BenchOptions, shared=SHARED)
    add_json_arg(p)
    for target in targets:
        cls = options_type(target, "bench")
        add_options(p.add_argument_group(f"{target} options", cls.__doc__), cls, skip=SHARED)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..backends import get_backend
    from ..targets import bench
    from .output import emit

    from ..files import check_output_file

    backend = get_backend(args.target, "bench")
    options = options_from_args(backend.bench_options, args, shared=SHARED, threads=args.threads or 1,
                                progress=not args.quiet)
    if args.json is not None:
        check_output_file(args.json, "--json")
    result = bench(args.program, options)
    emit(result.to_dict(), args.json, title=f"bench --target {args.target}: {args.program}")
    line = predicted_line(result)
    if line:
        print(line)
    return 0


def predicted_line(result) -> str:
    """`predicted X ms (cost table, N threads) · measured median Y ms (Y/X)` when the program's manifest
    carries a latency-budget plan's prediction (`extra.predicted_latency_ms`), else ''."""
    p = (result.extra or {}).get("predicted")
    if not p or p.get("predicted_latency_ms") is None:
        return ""
    pred, meas = float(p["predicted_latency_ms"]), float(result.median_ms)
    threads = p.get("threads")
    same = "" if threads in (None, result.threads) else f"; the table was timed at {threads} thread(s)"
    rest = "" if p.get("rest_known", True) else "; encoder Linears only"
    return (f"  predicted    {pred:.4g} ms ({p.get('cost_table')}{same}{rest}) beside measured median "
            f"{meas:.4g} ms: measured / predicted {meas / pred:.3f}")
