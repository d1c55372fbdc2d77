"""benchmarks/delegation_latency.py as a table-harness config: run for real on a tiny model, few iterations.

The committed config with DeiT-T at 32 px, three of its programs, 8 images, 2 rounds of 2 timed runs:
the result file has the committed result's fields; no timing value is asserted. About 3 minutes on 2 cores
(12-block models: every build exports and verifies one), hence `slow`.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "delegation_latency.py"


def tiny_config(tmp_path: Path) -> Path:
    text = (ROOT / "benchmarks" / "delegation_latency.toml").read_text()
    text = text.replace('[models.deit_small_patch16_224]\nlabel = "DeiT-S (random weights, 224 px)"',
                        '[models.deit_tiny_patch16_224]\nlabel = "DeiT-T (random weights, 32 px)"')
    text = text.replace("img_size = 224", "img_size = 32").replace("iterations = 20", "iterations = 2")
    text = text.replace("warmup = 3", "warmup = 1").replace("eval_limit = 64", "eval_limit = 8")
    text = text.replace("train_limit = 32", "train_limit = 8").replace("quant_calib_images = 32", "quant_calib_images = 8")
    text = re.sub(r'methods = \["fp32", .*\]', 'methods = ["fp32", "fp32-ln", "rb-wads"]', text)
    assert text.count("img_size = 32") == 1 and 'methods = ["fp32", "fp32-ln", "rb-wads"]' in text
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path


@pytest.mark.slow
def test_the_harness_config_writes_the_committed_fields(tmp_path):
    committed = json.loads((ROOT / "benchmarks" / "results" / "delegation_latency.json").read_text())
    out = tmp_path / "dl.json"
    cmd = [sys.executable, str(SCRIPT), "--config", str(tiny_config(tmp_path)), "--rounds", "2",
           "--work", str(tmp_path / "work"), "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert set(committed) <= set(res) and res["model"] == "deit_tiny_patch16_224"
    programs = res["programs"]
    assert list(programs) == ["dense FP32", "dense FP32, LN delegated", "RB-LRA + WADS INT8"]
    want = set(next(iter(committed["programs"].values())))
    assert all(set(p) == want for p in programs.values())
    first = programs["dense FP32"]
    assert first["ratio"] == first["ratio_min"] == first["ratio_max"] == 1.0
    assert programs["dense FP32, LN delegated"]["delegate_layernorm"] and not first["delegate_layernorm"]
    assert programs["RB-LRA + WADS INT8"]["precision"] == "q8" and first["precision"] == "fp32"
    assert programs["RB-LRA + WADS INT8"]["params_m"] < first["params_m"]
    assert all(p["op_profile"] and p["median_ms"] > 0 for p in programs.values())
    assert len(res["rounds"]["rounds"]) == 2 and res["rounds"]["orders"][1][0] == "dense FP32, LN delegated"
    md = out.with_suffix(".md").read_text()
    assert "| RB-LRA + WADS INT8 |" in md and "2 interleaved rounds" in md
    # a second run reuses every build (the harness's stamps) and times them again
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads(out.read_text())["programs"]
    assert [p["dir"] for p in again.values()] == [p["dir"] for p in programs.values()]
    assert [p["build_s"] for p in again.values()] == [p["build_s"] for p in programs.values()]
