"""LayerNorm delegation and rank rounding at 224 px: latency side by side, agreement, and time outside XNNPACK.

A table-harness config, `delegation_latency.toml`, names the programs (dense FP32, RB-LRA FP32 and + WADS INT8;
LayerNorm portable or delegated; ranks as computed or rounded to 32); the harness builds them (finished steps
reused), `table.bench_rounds` times them in interleaved rounds (ratios to dense FP32 within a round), ETDump
profiles their operators (the time outside XNNPACK).

    python benchmarks/delegation_latency.py --out benchmarks/results/delegation_latency
    python benchmarks/delegation_latency.py --config my.toml --rounds 2 --work /tmp/dl --out /tmp/dl
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import _result_file
from lraqvit_deploy import HostBenchOptions
from lraqvit_deploy.table import bench_rounds, load_config, make_plan, run_plan
from lraqvit_deploy.table.programs import built, program_records, programs_markdown, without_benches
HERE = Path(__file__).resolve().parent
SCHEMA = "lraqvit-deploy/delegation-latency/2"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=HERE / "delegation_latency.toml", help="the harness config")
    p.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds (default 5)")
    p.add_argument("--work", type=Path, default=Path("/tmp/delegation_latency"), help="the harness's folder")
    _result_file.add_out(p, HERE / "results" / "delegation_latency")
    args = p.parse_args(argv)
    t0, head = time.perf_counter(), _result_file.header(SCHEMA, __file__, argv)
    config = load_config(args.config)
    s, plan = config.settings, make_plan(config, args.work)
    outcomes = run_plan(without_benches(plan), resume=True, progress=False)
    opts = HostBenchOptions(iterations=s.iterations, warmup=s.warmup, threads=s.threads or 1, progress=False)
    rounds = bench_rounds({label: b.out for label, b in built(plan, outcomes).items()}, opts, args.rounds)
    programs = program_records(plan, rounds, op_profile_runs=max(3, s.iterations // 2))
    md = (f"# LayerNorm delegation and rank rounding: {config.models[0].label}\n\n- Command: `{head['command']}`; "
          f"{head['date']}\n- CPU: {_result_file.cpu_line(head['cpu'])}\n- Latency: {args.rounds} interleaved rounds x "
          f"({s.warmup} warm-up + {s.iterations} timed runs), {s.threads} thread(s); ratio = median over rounds of "
          f"(program / first program of the same round), with min-max.\n\n" + programs_markdown(programs))
    _result_file.write(args.out, {**head, "model": config.models[0].name, "seconds": time.perf_counter() - t0,
                                  "config": str(args.config), "rounds": rounds, "programs": programs}, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
