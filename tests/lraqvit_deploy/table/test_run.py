"""The harness end to end with the real `deploy eval`: interrupt + resume, no repeated work, missing targets.

Two random-weight timm models at 32 px on 16 Fashion-MNIST images keep each eval to seconds. No
target can run in this config (host disabled, no phone, no Jetson result file), which is the
missing-target path: every latency cell says why, and the tables are still written.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lraqvit_deploy.artifacts import read_json
from lraqvit_deploy.cli.main import main
from lraqvit_deploy.table import load_config, make_plan, run_plan, run_table, summary
from lraqvit_deploy.table.run import default_runner

TINY = 'weights = "random"\nimg_size = 32\nnum_classes = 10'
CONFIG = f"""
name = "tiny"
[models.deit_tiny_patch16_224]
label = "DeiT-T (random, 32 px)"
{TINY}
[models.vit_tiny_patch16_224]
label = "ViT-T (random, 32 px)"
{TINY}

[methods.fp32]
label = "FP32"

[table4]
methods = ["fp32"]

[accuracy.table1]
title = "Table 1"
methods = ["fp32"]

[targets.host]
enabled = false
[targets.android]
serials = []
[targets.jetson]
results = "xavier/{{model}}_{{method}}.json"

[settings]
threads = 1
work_threads = 1
eval_data = "fashion-mnist:test"
eval_limit = 16
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(CONFIG)
    return path


def counting(runner, interrupt_before=None):
    calls = []

    def run(step, plan):
        calls.append(step.name)
        if step.name == interrupt_before:
            raise KeyboardInterrupt
        runner(step, plan)

    run.calls = calls
    return run


def test_interrupt_then_resume_does_only_the_rest(config_file, tmp_path):
    out = tmp_path / "out"
    config = load_config(config_file)
    plan = make_plan(config, out)
    evals = [s for s in plan.steps if s.kind == "eval"]
    assert sorted(s.kind for s in plan.steps) == ["collect", "collect", "eval", "eval"]

    first = counting(default_runner(quiet=True), interrupt_before=evals[1].name)
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, progress=False, runner=first)
    assert plan.is_done(evals[0]) and not plan.is_done(evals[1])
    assert not evals[1].out.exists()  # nothing half-written
    mtime = evals[0].out.stat().st_mtime_ns

    second = counting(default_runner(quiet=True))
    outcomes = run_plan(make_plan(config, out), resume=True, progress=False, runner=second)
    assert sorted(second.calls) == sorted([evals[1].name, *(s.name for s in plan.steps if s.kind == "collect")])
    assert summary(outcomes) == {"ran": 1, "reused": 1, "failed": 2, "skipped": 0}
    assert evals[0].out.stat().st_mtime_ns == mtime
    assert read_json(evals[1].out)["params"] == 5_489_482  # the real eval: ViT-T at 32 px, 10 classes

    third = counting(default_runner(quiet=True))
    outcomes = run_plan(make_plan(config, out), resume=True, progress=False, runner=third)
    assert summary(outcomes)["ran"] == 0
    assert all(name.startswith("collect") for name in third.calls)  # only the result-file look-ups


def test_missing_targets_and_cli(config_file, tmp_path):
    out = tmp_path / "out"
    assert main(["table", "--config", str(config_file), "--out", str(out), "--quiet"]) == 0
    results = read_json(out / "table4.json")
    assert results["steps"] == {"ran": 2, "failed": 2}
    from lraqvit_deploy.measure.host import lscpu

    assert results["run"]["cpu"].startswith(lscpu()["model_name"])  # the host column's CPU, as benchmarks write it
    for row in results["rows"]:
        lat = row["latency"]
        assert lat["host"] == {"not_measured": "host disabled in the config"}
        assert lat["android"]["not_measured"].startswith("no Android serial configured")
        assert lat["jetson"]["not_measured"].startswith(f"no result file {row['model']}_fp32.json")
        assert row["size_mb"] is None or "size_mb" not in row or row["size_mb"] > 0
        assert row["top1"] is not None and row["model_size_mb"] > 0  # from the real eval
    md = (out / "table4.md").read_text()
    assert md.count("not measured (host disabled in the config)") == 2
    assert "DeiT-T (random, 32 px)" in md and "| 5.49 |" in md  # Table 1 params (M) of deit_tiny, 10 classes
    assert (out / "table4.csv").is_file() and (out / "accuracy_table1.csv").is_file()

    # a second run of the command does no work, with or without --resume (no latencies to redo here)
    assert main(["table", "--config", str(config_file), "--out", str(out), "--quiet", "--resume"]) == 0
    steps = read_json(out / "run.json")["steps"]
    assert sorted(o["status"] for o in steps.values()) == ["failed", "failed", "reused", "reused"]

    # a Jetson result file appearing later fills its cell on the next run, the rest is reused
    src = Path(__file__).parents[2] / "data" / "table" / "xavier" / "testbed_fp32.json"
    (config_file.parent / "xavier").mkdir()
    (config_file.parent / "xavier" / "deit_tiny_patch16_224_fp32.json").write_text(src.read_text())
    results = run_table(load_config(config_file), out, progress=False)
    cells = {r["model"]: r["latency"]["jetson"] for r in results["rows"]}
    assert cells["deit_tiny_patch16_224"]["median_ms"] == json.loads(src.read_text())["median_ms"]
    assert "not_measured" in cells["vit_tiny_patch16_224"]
    assert results["steps"] == {"reused": 2, "ran": 1, "failed": 1}


def test_a_result_whose_engine_failed_its_gates_is_shown_failed_never_as_a_latency(config_file, tmp_path):
    """jetson/run.py writes its result file even when the engine fails its output gates (for inspection):
    the harness refuses it, and Table 4 reads FAILED in that cell."""
    src = json.loads((Path(__file__).parents[2] / "data" / "table" / "xavier" / "testbed_fp32.json").read_text())
    (config_file.parent / "xavier").mkdir()
    good = {**src, "extra": {**src["extra"], "verification": {"passed": True, "failed": []}}}
    bad = {**src, "median_ms": 1.234, "extra": {**src["extra"], "verification": {
        "passed": False, "failed": ["NaN/inf logits on 32 of 32 images", "logit SQNR nan dB < 12.0 dB"]}}}
    (config_file.parent / "xavier" / "deit_tiny_patch16_224_fp32.json").write_text(json.dumps(good))
    (config_file.parent / "xavier" / "vit_tiny_patch16_224_fp32.json").write_text(json.dumps(bad))
    out = tmp_path / "out"
    results = run_table(load_config(config_file), out, progress=False)
    cells = {r["model"]: r["latency"]["jetson"] for r in results["rows"]}
    assert cells["deit_tiny_patch16_224"]["median_ms"] == src["median_ms"]  # the control
    failed = cells["vit_tiny_patch16_224"]
    assert set(failed) == {"failed"} and "failed its output gates on the device (NaN/inf logits" in failed["failed"]
    md = (out / "table4.md").read_text()
    assert "FAILED (vit_tiny_patch16_224_fp32.json: the engine failed its output gates" in md
    assert "1.23" not in md and "FAILED (no latency shown)" in md  # the timing of a wrong engine never shows
