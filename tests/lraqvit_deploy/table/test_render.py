"""Table 4 and the accuracy tables rendered from recorded step outputs (tests/data/table/).

The recorded files stand in for `deploy eval/compress/build/bench` outputs (same schemas); the
harness's own parts — plan, stamps, reuse, the Jetson result-file collection, results, render,
speedups — run for real. No `deploy` subcommand is invoked: the runner refuses anything but the
result-file collection.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from lraqvit_deploy.table import collect, make_plan, parse_config, run_plan
from lraqvit_deploy.table.render import (accuracy_rows, render_markdown, table4_rows, to_csv, write_tables)
from lraqvit_deploy.table.results import load_results
from lraqvit_deploy.table.run import collect_result_file, mark_done

DATA = Path(__file__).parents[2] / "data" / "table"
HEADER = ["Model", "Method", "Prec.", "Size (MB)", "Android (ms)", "Xavier (ms)", "Host (ms)"]


def recorded_config(**targets):
    rb = {"compress": "rb-lra", "param_reduction": 0.45}
    return parse_config({
        "name": "recorded",
        "models": {"testbed": {"label": "DINOv2 ViT-S/14 (test bed)"}},
        "methods": {
            "fp32": {"label": "FP32"},
            "lra": {"label": "LRA", "compress": "lra", "param_reduction": 0.45, "kd_steps": 0},
            "rb-lra": {"label": "RB-LRA", **rb},
            "rb-lra-wads": {"label": "RB-LRA + WADS", "quant": "wads", **rb},
        },
        "table4": {"methods": ["fp32", "rb-lra", "rb-lra-wads"], "baseline": "fp32"},
        "accuracy": {
            "table1": {"title": "Table 1", "kind": "compression", "methods": ["fp32", "lra", "rb-lra"]},
            "table9": {"title": "Table 9", "kind": "quantization", "methods": ["rb-lra", "rb-lra-wads"]},
        },
        "targets": targets or {"host": {}, "android": {"serials": []},
                               "jetson": {"results": str(DATA / "xavier" / "{model}_{method}.json")}},
        "settings": {"iterations": 20, "warmup": 3, "threads": 1},
    })


def install_recorded(plan, run_ids=None):
    """Put the recorded outputs where the plan expects them and stamp those steps done."""
    run_ids = run_ids or {}
    for step in plan.steps:
        if step.kind == "eval":
            step.out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(DATA / "eval" / f"{step.method}.json", step.out)
        elif step.kind == "compress":
            step.out.mkdir(parents=True, exist_ok=True)
            shutil.copy(DATA / "compress" / f"{step.method}.json", step.json)
        elif step.kind == "build":
            step.out.mkdir(parents=True, exist_ok=True)
            shutil.copy(DATA / "android_manifest" / f"{step.method}.json", step.out / "manifest.json")
        elif step.kind == "bench":
            step.out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(DATA / "bench_host" / f"{step.method}.json", step.out)
        else:
            continue
        mark_done(plan, step, run_ids.get(step.method, "recorded-run"))


def only_collect(step, plan):
    if step.kind != "collect":
        raise AssertionError(f"{step.name} should have been reused, not run")
    collect_result_file(step)


@pytest.fixture
def results(tmp_path):
    plan = make_plan(recorded_config(), tmp_path)
    install_recorded(plan)
    outcomes = run_plan(plan, resume=True, progress=False, runner=only_collect)
    return collect(plan, outcomes)


def rows_by_method(results):
    rows = table4_rows(results)
    assert rows[0] == HEADER
    return {r[1]: dict(zip(HEADER, r)) for r in rows[1:]}


def test_table4_from_recorded_json(results):
    rows = rows_by_method(results)
    assert list(rows) == ["FP32", "RB-LRA", "RB-LRA + WADS"]
    fp32, rb, q8 = rows["FP32"], rows["RB-LRA"], rows["RB-LRA + WADS"]
    assert (fp32["Prec."], rb["Prec."], q8["Prec."]) == ("FP32", "FP32", "INT8")
    # size: the Android program from its manifest
    assert (fp32["Size (MB)"], rb["Size (MB)"], q8["Size (MB)"]) == ("88.3", "48.7", "12.9")
    # host: median of the recorded bench JSON; Xavier: the collected result files
    assert (fp32["Host (ms)"], rb["Host (ms)"], q8["Host (ms)"]) == ("41.2", "24.8", "19.6")
    assert (fp32["Xavier (ms)"], rb["Xavier (ms)"]) == ("6.10", "4.20")
    # the missing paths: no phone configured, no Xavier result file for the INT8 model
    for r in rows.values():
        assert r["Android (ms)"] == "not measured (no Android serial configured)"
    assert q8["Xavier (ms)"] == "not measured (no result file testbed_rb-lra-wads.json)"
    assert str(DATA / "xavier" / "testbed_rb-lra-wads.json") in results["rows"][2]["latency"]["jetson"]["not_measured"]


def test_speedups_are_ratios_of_measured_medians(results):
    sp = {s["method"]: s for s in results["speedups"]}
    assert set(sp) == {"rb-lra", "rb-lra-wads"}
    assert sp["rb-lra"]["latency"]["host"] == pytest.approx(41.2 / 24.8)
    assert sp["rb-lra-wads"]["latency"]["host"] == pytest.approx(41.2 / 19.6)
    assert sp["rb-lra"]["latency"]["jetson"] == pytest.approx(6.1 / 4.2)
    assert sp["rb-lra-wads"]["latency"]["jetson"] is None  # no number: no ratio
    assert sp["rb-lra"]["latency"]["android"] is None
    assert sp["rb-lra-wads"]["size"] == pytest.approx(88.3 / 12.9)
    md = render_markdown(results)
    assert f"{41.2 / 24.8:.2f}×" in md and f"{41.2 / 19.6:.2f}×" in md


def test_no_ratio_across_runs(tmp_path):
    plan = make_plan(recorded_config(), tmp_path)
    install_recorded(plan, run_ids={"rb-lra": "an-older-run"})
    results = collect(plan, run_plan(plan, resume=True, progress=False, runner=only_collect))
    sp = {s["method"]: s for s in results["speedups"]}
    assert sp["rb-lra"]["latency"]["host"] is None
    assert sp["rb-lra"]["why_not"]["host"] == "different runs or devices"
    assert sp["rb-lra-wads"]["latency"]["host"] == pytest.approx(41.2 / 19.6)


def test_accuracy_tables(results):
    t1, t9 = results["accuracy"]
    rows = accuracy_rows(t1)
    assert rows[0][:3] == ["Model", "Method", "Params (M)"]
    by = {r[1]: r for r in rows[1:]}
    assert by["FP32"][2:] == ["21.68", "—", "1.416", "82.70", "—"]
    assert by["LRA"][2:] == ["11.92", f"{100 * (11921966 / 21676426 - 1):+.1f}", "0.790", "70.25", "-12.45"]
    assert by["RB-LRA"][5:] == ["81.90", "-0.80"]
    q = {r[1]: r for r in accuracy_rows(t9)[1:]}
    assert q["RB-LRA"][2:] == ["FP32", "47.7", "81.90", "—"]  # the reference row of its INT8 versions
    assert q["RB-LRA + WADS"][2:] == ["INT8", "12.4", "81.50", "-0.40"]  # vs its FP32 (compressed) model


def test_files_written_and_readable(results, tmp_path):
    paths = write_tables(results, tmp_path / "tables")
    md = paths["markdown"].read_text()
    assert "| " + " | ".join(HEADER) + " |" in md
    assert "Host (ms): AMD EPYC 7B12" in md  # the device behind the column
    assert "Android (ms) not measured: no Android serial configured; list phones in" in md  # the full reason
    parsed = list(csv.reader(io.StringIO(paths["csv"].read_text())))
    assert parsed == table4_rows(results)
    assert to_csv(parsed) == paths["csv"].read_text()
    back = load_results(paths["json"])
    assert back["rows"][0]["latency"]["host"]["median_ms"] == 41.2
    assert json.loads(paths["json"].read_text())["schema"] == "lraqvit-deploy/table4/1"
    assert {"table1", "table9", "speedups"} <= set(paths)


def test_failed_metrics_show_not_measured(tmp_path):
    plan = make_plan(recorded_config(), tmp_path)
    install_recorded(plan)
    for step in plan.steps:  # lose the LRA compression: its row must say why, not show numbers
        if step.kind == "compress" and step.method == "lra":
            plan.stamp(step).unlink()

    def fail_lra(step, plan_):
        if step.method == "lra":
            from lraqvit_deploy.errors import DeployError

            raise DeployError("out of memory while distilling")
        only_collect(step, plan_)

    results = collect(plan, run_plan(plan, resume=True, progress=False, runner=fail_lra))
    rows = {r[1]: r for r in accuracy_rows(results["accuracy"][0])[1:]}
    assert rows["LRA"][2] == "not measured (compress failed: out of memory while distilling)"
    assert rows["RB-LRA"][5] == "81.90"


def test_plot_pngs(results, tmp_path):
    pytest.importorskip("matplotlib")
    from lraqvit_deploy.table.plot import accuracy_points, write_plots

    paths = write_plots(results, tmp_path)
    for key in ("latency_size", "accuracy_vs_size"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pts = {p["label"]: p for p in accuracy_points(results)}
    assert pts["RB-LRA + WADS"]["size_mb"] == 12.4 and pts["LRA"]["top1"] == 70.25  # weights sizes, all points
