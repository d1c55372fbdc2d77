"""The Table 4 harness: from a TOML config to the paper's tables (LRA-QViT Table 4, and Tables 1, 2, 9).

    >>> from lraqvit_deploy.table import load_config, run_table
    >>> results = run_table(load_config("benchmarks/table4.toml"), "out/table4")
    >>> results["rows"][0]["latency"]["host"]["median_ms"]

config.py reads the TOML, plan.py turns it into content-hashed steps, run.py runs them through the
`deploy` CLI (reusing finished ones; child.py's runner puts each in a fresh interpreter and records its
peak memory; latency_rounds.py times built programs in interleaved rounds), results.py gathers their
JSON, render.py and plot.py draw it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from .child import ChildRun, run_child, step_resources, subprocess_runner
from .config import TableConfig, load_config, parse_config
from .latency_rounds import bench_rounds
from .plan import Plan, Step, make_plan
from .results import collect, load_results
from .run import Outcome, Runner, run_plan, summary

__all__ = ["TableConfig", "load_config", "parse_config", "Plan", "Step", "make_plan", "run_plan", "collect",
           "load_results", "Outcome", "summary", "run_table", "write_outputs", "ChildRun", "run_child",
           "step_resources", "subprocess_runner", "bench_rounds"]


def write_outputs(results: Dict[str, Any], out: Path) -> Dict[str, Any]:
    """Tables (Markdown, CSV, JSON) and plots for a results document."""
    from .plot import write_plots
    from .render import write_tables

    paths: Dict[str, Any] = dict(write_tables(results, out))
    paths["plots"] = write_plots(results, out)
    return paths


def run_table(config: TableConfig, out, resume: bool = False, progress: bool = True,
              runner: Optional[Runner] = None) -> Dict[str, Any]:
    """Plan, run what is missing, and write the tables and plots into `out`; returns the results document."""
    from ..artifacts import read_json

    out = Path(out)
    plan = make_plan(config, out)
    outcomes = run_plan(plan, resume=resume, progress=progress, runner=runner)
    run = read_json(out / "run.json")
    run.pop("steps", None)
    results = collect(plan, outcomes, run)
    results["outputs"] = {k: (str(v) if not isinstance(v, dict) else {a: str(b) for a, b in v.items()})
                          for k, v in write_outputs(results, out).items()}
    return results
