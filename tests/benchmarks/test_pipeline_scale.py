"""benchmarks/pipeline_scale.py: its pure parts (floors per program, the step cache) and its report
(benchmarks/figures/pipeline_scale.py: Markdown); interleaving, per-round ratios, GEMM floors and lscpu are
lraqvit_deploy.measure (tests/lraqvit_deploy/measure/test_rounds.py), the step process and its record
lraqvit_deploy.measure.process (tests/lraqvit_deploy/measure/test_process.py).

The script itself (minutes to hours) is never run here; the Markdown is rendered from a recorded
results document (tests/data/pipeline_scale/smoke.json, a `--quick` run on deit_tiny) and from a
synthetic one built below.
"""
from __future__ import annotations

import importlib.util
import json
import os
import statistics
import sys
from pathlib import Path

import pytest
from figures.pipeline_scale import render_markdown, wads_label

from lraqvit_deploy.measure.rounds import rotated, summarize_rounds

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "tests" / "data" / "pipeline_scale" / "smoke.json"


@pytest.fixture(scope="module")
def ps():
    spec = importlib.util.spec_from_file_location("pipeline_scale", ROOT / "benchmarks" / "pipeline_scale.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["pipeline_scale"] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("pipeline_scale", None)


def test_importing_the_script_stays_light():
    # the parent process imports no torch: only lraqvit_deploy.measure (itself torch-free at import)
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('ps', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); print('torch' in sys.modules)")
    import subprocess

    # benchmarks/ first on sys.path, as when the script runs (its report and steps modules are beside it)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "benchmarks" / "pipeline_scale.py")],
                         capture_output=True, text=True, check=True, env=env).stdout.strip()
    assert out == "False"


def test_attach_floors(ps):
    bench = {"gemm": {"fp32": {"1": {"gops": 50.0}}, "int8": {"1": {"gops": None, "reason": "x"}}},
             "threads": {"1": {"summary": summarize_rounds([{"fp32": 100.0, "rb-wads-int8": 40.0}])}}}
    ps.attach_floors(bench, {"dense": 2.5, "rb": 1.5})
    rows = bench["threads"]["1"]["summary"]
    assert rows["fp32"]["floor_fp32_ms"] == pytest.approx(50.0) and rows["fp32"]["floor_int8_ms"] is None
    assert rows["fp32"]["floor_fraction_fp32"] == pytest.approx(0.5)
    assert rows["rb-wads-int8"]["floor_fp32_ms"] == pytest.approx(30.0)
    assert rows["rb-wads-int8"]["floor_fraction_fp32"] == pytest.approx(0.75)
    assert rows["rb-wads-int8"]["floor_int8_ms"] is None  # no INT8 GEMM rate: no INT8 floor


def _synthetic_results(ps):
    step = {"ok": True, "seconds": 1.5, "start_rss_kib": 800 * 1024, "peak_rss_kib": 1200 * 1024,
            "process_seconds": 9.0, "timers": {}, "info": {}}
    android = {**step, "timers": {"lower": {"seconds": 0.5, "calls": 1}, "verify": {"seconds": 0.25, "calls": 1}},
               "info": {"agreement": 1.0, "sqnr_db": 101.0, "size_mb": 22.0}}
    rounds = [{"fp32": 10.0, "pt2e-int8": 6.0, "rb-fp32": 7.0, "rb-wads-int8": 4.0},
              {"pt2e-int8": 6.6, "rb-fp32": 7.7, "rb-wads-int8": 4.4, "fp32": 11.0}]
    bench = {"programs": list(ps.PROGRAMS), "seconds": 3.0, "peak_rss_kib": 900 * 1024, "process_seconds": 8.0,
             "gemm": {"shape": [197, 768, 3072], "fp32": {"1": {"gops": 93.0}}, "int8": {"1": {"gops": 40.0}}},
             "threads": {"1": {"rounds": rounds, "orders": [rotated(ps.PROGRAMS, r) for r in range(2)],
                               "summary": summarize_rounds(rounds)}}}
    ps.attach_floors(bench, {"dense": 2.5, "rb": 1.5})
    settings = ps.resolve_config(ps.parse_args(["--models", "deit_tiny_patch16_224", "--quick", "--threads", "1"]))
    return {"schema": ps.SCHEMA, "date": "2025-01-01 00:00:00 +0000", "quick": True,
            "command": "python benchmarks/pipeline_scale.py --models deit_tiny_patch16_224 --quick",
            "settings": settings,
            "host": {"cpu": {"model_name": "Intel(R) Xeon(R) Platinum 8480+", "family": "6", "model": "143",
                             "stepping": "8", "cpus": "16", "flags": {"avx512_vnni": True, "amx_int8": True}}, "nproc": 16, "versions": {"torch": "2.14.1"},
                     "loadavg_start": 0.1, "loadavg_end": 0.2},
            "models": {"deit_tiny_patch16_224": {
                "info": {"params_dense": 5.5e6, "params_rb": 3.0e6, "gflops_dense": 2.5, "gflops_rb": 1.5,
                         "param_reduction": 0.45},
                "steps": {"compress": {**step, "info": {"svd": "activation", "n_layers": 48}},
                          "calibrate": {**step, "info": {"calib_seconds": 1.0, "search_seconds": 0.4,
                                                         "n_layers": 96, "scaled_layers": 19}},
                          "android-fp32": android,
                          "android-pt2e-int8": {"ok": False, "error": "DeployError: boom | pipe",
                                                "peak_rss_kib": 1000 * 1024, "process_seconds": 4.0},
                          "android-rb-fp32": android, "android-rb-wads": android,
                          "jetson-rb-wads": {"ok": False, "skipped": "needs calibrate, which failed"}},
                "bench": bench}},
            "notes": ["a note"]}


def test_markdown_from_a_synthetic_document(ps):
    md = render_markdown(_synthetic_results(ps))
    assert md.startswith("# Pipeline scale") and "Quick smoke run" in md
    assert "Intel(R) Xeon(R) Platinum 8480+" in md and "amx_int8 yes" in md
    assert "`python benchmarks/pipeline_scale.py --models deit_tiny_patch16_224 --quick`" in md
    assert "2025-01-01" in md
    # the step table: times, verification split, RSS in MiB, failures and skips with their reasons
    assert "| RB-LRA -45 % params (no KD) | 1.5 | — | 1200 | 800 | 9.0 |" in md
    assert "| android build: dense FP32 | 1.5 | 0.2 | 1200 | 800 | 9.0 | lowering 0.5 s; agreement 1.000" in md
    assert "**failed**: DeployError: boom \\| pipe" in md
    assert "**skipped**: needs calibrate, which failed" in md
    assert "calib 1.0 s + WADS search 0.4 s; 19 of 96 layers scaled" in md
    # the latency table: per-round ratio (0.4), floors at both GEMMs for INT8 programs only
    assert "## Host latency, 1 thread" in md
    row = next(l for l in md.splitlines() if l.startswith("| deit_tiny_patch16_224 | RB-LRA + WADS INT8 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3:7] == ["4.20", "4.00–4.40", "0.400", "0.400–0.400"]
    assert cells[7] == f"{1.5 / 93.0 * 1e3:.2f}" and cells[9] == f"{1.5 / 40.0 * 1e3:.2f}"
    assert cells[8] == f"{1.5 / 93.0 * 1e3 / 4.2:.2f}"
    assert cells[2].endswith(" %)")  # the .pte size and its share of the dense FP32 .pte
    fp32 = next(l for l in md.splitlines() if l.startswith("| deit_tiny_patch16_224 | dense FP32 |"))
    assert fp32.rstrip().endswith("|  |  |")  # no INT8 floor for an FP32 program
    assert "| deit_tiny_patch16_224 | 93.0 GFLOP/s | 40.0 GOP/s |" in md
    assert md.rstrip().endswith("- a note")


@pytest.mark.skipif(not SMOKE.is_file(), reason="no recorded smoke run yet (python benchmarks/pipeline_scale.py --quick)")
def test_markdown_from_the_recorded_smoke_run(ps):
    res = json.loads(SMOKE.read_text())
    assert res["schema"] == ps.SCHEMA
    md = render_markdown(res)
    assert "## deit_tiny_patch16_224" in md and res["host"]["cpu"]["model_name"] in md
    for t in res["settings"]["threads"]:
        assert f"## Host latency, {t} thread" in md
    # the recorded summary is what the arithmetic gives from the recorded rounds
    for tb in res["models"]["deit_tiny_patch16_224"]["bench"]["threads"].values():
        again = summarize_rounds(tb["rounds"])
        for p, row in tb["summary"].items():
            assert row["median_ms"] == pytest.approx(again[p]["median_ms"])
            assert row["ratio_median"] == pytest.approx(again[p]["ratio_median"])
            per_round = [r[p] / r["fp32"] for r in tb["rounds"]]
            assert row["ratio_median"] == pytest.approx(statistics.median(per_round))
        for r, order in enumerate(tb["orders"]):
            assert order == rotated(res["models"]["deit_tiny_patch16_224"]["bench"]["programs"], r)


def test_quick_and_full_presets(ps):
    full = ps.resolve_config(ps.parse_args([]))
    assert full["models"] == list(ps.DEFAULT_MODELS) and full["img_size"] == 224 and full["calib_images"] == 32
    assert full["wads_iters"] is None and full["svd"] == "activation" and full["threads"] == [1, 2]
    quick = ps.resolve_config(ps.parse_args(["--quick", "--rounds", "7"]))
    assert quick["rounds"] == 7 and quick["iterations"] == ps.QUICK["iterations"]
    assert quick["wads_iters"] == ps.QUICK["wads_iters"]


def test_reuse_needs_success_same_settings_and_the_output(ps, tmp_path):
    cfg = ps.resolve_config(ps.parse_args(["--quick"]))
    rec = {"ok": True, "seconds": 1.0, "digest": ps.step_digest(cfg, "compress")}
    (tmp_path / "compress.result.json").write_text(json.dumps(rec))
    assert ps.reusable("compress", cfg, tmp_path) is None  # no artifact yet
    (tmp_path / "rb-lra").mkdir()
    (tmp_path / "rb-lra" / "manifest.json").write_text("{}")
    assert ps.reusable("compress", cfg, tmp_path)["reused"] is True
    # latency settings and build-only settings do not touch the compress step; its own settings do
    assert ps.step_digest({**cfg, "rounds": 9, "verify_images": 3}, "compress") == rec["digest"]
    assert ps.reusable("compress", {**cfg, "svd": "plain"}, tmp_path) is None
    assert ps.step_digest({**cfg, "wads_iters": 1}, "calibrate") != ps.step_digest(cfg, "calibrate")
    assert ps.step_digest({**cfg, "verify_images": 3}, "android-fp32") != ps.step_digest(cfg, "android-fp32")
    assert ps.step_digest({**cfg, "rounds": 9}, "android-fp32") == ps.step_digest(cfg, "android-fp32")
    (tmp_path / "compress.result.json").write_text(json.dumps({**rec, "ok": False}))
    assert ps.reusable("compress", cfg, tmp_path) is None


def test_wads_label_comes_from_what_the_run_recorded(ps):
    res = _synthetic_results(ps)
    res["settings"]["wads_iters"] = None
    # nothing recorded: say so, never today's default
    assert wads_label(res) == "library default, iteration count not recorded"
    # the calibrate step's resolved config wins
    res["models"]["deit_tiny_patch16_224"]["steps"]["calibrate"]["info"]["wads_config"] = {
        "wads_iters": 7, "wads_lr": 0.5, "wads_max_rows": 64, "wads_sampling": "fresh"}
    assert wads_label(res) == "7 iterations per layer (library default; lr 0.5, max_rows 64, sampling fresh)"
    assert "7 iterations per layer (library default" in render_markdown(res)
    # else the settings' record (a run that predates the per-step record)
    del res["models"]["deit_tiny_patch16_224"]["steps"]["calibrate"]["info"]["wads_config"]
    res["settings"].update(wads_iters=20, wads_config={"wads_iters": 20})
    assert wads_label(res) == "20 iterations per layer (not the default)"


def test_the_committed_report_is_the_rendering_of_its_json(ps):
    # benchmarks/results/pipeline_scale.md is never edited by hand: it is render_markdown(the committed JSON)
    base = ROOT / "benchmarks" / "results" / "pipeline_scale"
    res = json.loads(base.with_suffix(".json").read_text())
    assert base.with_suffix(".md").read_text() == render_markdown(res), \
        "benchmarks/results/pipeline_scale.md differs from render_markdown(pipeline_scale.json)"
    assert f"{res['settings']['wads_config']['wads_iters']} iterations per layer" in render_markdown(res)


def test_every_committed_report_is_the_rendering_of_its_json():
    # the same for each pipeline_scale*.md beside its JSON (the 4-bit forms' run among them)
    pairs = [(p, p.with_suffix(".md")) for p in sorted((ROOT / "benchmarks" / "results").glob("pipeline_scale*.json"))
             if p.with_suffix(".md").is_file()]
    assert len(pairs) >= 2
    for js, md in pairs:
        assert md.read_text() == render_markdown(json.loads(js.read_text())), f"{md.name} differs from its JSON"
