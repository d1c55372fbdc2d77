"""table/child.py: steps in a fresh interpreter with their peak memory; the tiny harness config run that way."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from lraqvit_deploy.table import load_config, make_plan, run_table
from lraqvit_deploy.table.child import proc_status_kib, run_child, step_resources, subprocess_runner

from .test_run import CONFIG

ALLOC = "import time; x = b'x' * ({mib} << 20); time.sleep(0.3)"


def test_peak_memory_of_a_child_both_ways(tmp_path):
    small = run_child([sys.executable, "-c", ALLOC.format(mib=1)])
    big = run_child([sys.executable, "-c", ALLOC.format(mib=120)], log=tmp_path / "big.log")
    assert small.returncode == big.returncode == 0 and big.seconds >= 0.3
    assert big.vmhwm_mb is not None and big.vmhwm_mb >= 120 > small.vmhwm_mb  # sampled during the sleep
    # ru_maxrss: at least the child's own peak, and at least this (pytest + torch) process's RSS at spawn
    assert big.ru_maxrss_mb >= big.vmhwm_mb - 1 and small.ru_maxrss_mb >= small.vmhwm_mb - 1
    assert small.ru_maxrss_mb >= proc_status_kib(os.getpid(), "VmRSS") / 1024 * 0.5
    assert proc_status_kib(999_999_999) is None


def test_exit_code_log_and_timeout(tmp_path):
    log = tmp_path / "c.log"
    res = run_child([sys.executable, "-c", "print('hello'); raise SystemExit(3)"], log=log)
    assert res.returncode == 3 and log.read_text() == "hello\n"
    slow = run_child([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert slow.returncode == -9 and slow.seconds < 10


def test_the_tiny_table_in_child_processes(tmp_path):
    """The real evals run in children (with their peak memory recorded); a missing Jetson file fails in the
    child as a DeployError, a gate failure as a ToleranceError: the table reads as with the in-process runner."""
    config = tmp_path / "tiny.toml"
    config.write_text(CONFIG)
    src = json.loads((Path(__file__).parents[2] / "data" / "table" / "xavier" / "testbed_fp32.json").read_text())
    (tmp_path / "xavier").mkdir()
    bad = {**src, "extra": {**src["extra"], "verification": {"passed": False, "failed": ["logit SQNR nan dB < 12.0 dB"]}}}
    (tmp_path / "xavier" / "vit_tiny_patch16_224_fp32.json").write_text(json.dumps(bad))
    out = tmp_path / "out"
    results = run_table(load_config(config), out, progress=False, runner=subprocess_runner())
    assert results["steps"] == {"ran": 2, "failed": 2}
    jetson = {r["model"]: r["latency"]["jetson"] for r in results["rows"]}
    assert jetson["deit_tiny_patch16_224"]["not_measured"].startswith("no result file deit_tiny_patch16_224_fp32.json")
    assert set(jetson["vit_tiny_patch16_224"]) == {"failed"}  # a gate failure, not "not measured"
    assert all(r["top1"] is not None for r in results["rows"])  # from the evals the children ran
    plan = make_plan(load_config(config), out)
    evals = [s for s in plan.steps if s.kind == "eval"]
    for step in plan.steps:
        res = step_resources(plan, step)
        assert res is not None and res["returncode"] == (0 if step.kind == "eval" else 1)
    # an eval imports torch and timm and runs a ViT: far above a bare interpreter's ~10 MiB
    assert all(step_resources(plan, s)["vmhwm_mb"] > 100 for s in evals)
