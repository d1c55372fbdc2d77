"""`deploy table --config FILE`: the paper's Table 4 (and accuracy Tables 1, 2, 9) from one command."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "build, benchmark and tabulate FP32 / RB-LRA / INT8 models on every target (paper Table 4)"
DESCRIPTION = """\
Run the harness a TOML config describes: compress each method, build the Android program (and the
Jetson one when running on a Jetson), time it on every target, and write Table 4 (Model, Method,
Prec., Size (MB), Android (ms), Xavier (ms), Host (ms)) as Markdown, CSV and JSON, with speedups vs
the FP32 baseline, the accuracy tables the config lists, and plots.

Artifacts are reused by content hash. Latency is re-measured on every run so that speedups compare
numbers from one run; --resume keeps the latencies already measured (continue an interrupted run).
A target that cannot run shows "not measured (reason)" and the rest of the table completes.

examples:
  deploy table --config benchmarks/table4.toml                  # -> out/table4/table4.md
  deploy table --config benchmarks/table4.toml --resume         # after Ctrl-C: continue
  deploy table --config my.toml --out results/run1
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("table", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", required=True, type=Path, help="harness config (TOML), e.g. benchmarks/table4.toml")
    p.add_argument("--out", "-o", type=Path, default=None, help="output folder (default: out/<config name>)")
    p.add_argument("--resume", action="store_true",
                   help="keep latencies measured by an interrupted run of the same config instead of re-measuring")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..table import load_config, run_table
    from ..table.render import render_markdown

    from ..files import check_output_dir

    if args.out is not None:
        check_output_dir(args.out)
    config = load_config(args.config)
    out = check_output_dir(args.out or Path("out") / config.name)
    try:
        results = run_table(config, out, resume=args.resume, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"deploy table: finished steps are kept in {out}/work; continue with "
              f"`deploy table --config {args.config} --out {out} --resume`.", file=sys.stderr)
        raise
    print(render_markdown(results))
    for name, path in results["outputs"].items():
        if isinstance(path, dict):
            for k, v in path.items():
                print(f"{'plot skipped' if k == 'skipped' else 'wrote'}: {v}")
        else:
            print(f"wrote {path}")
    return 0
