"""benchmarks/gpu_scale.py: --help and the no-CUDA path as a subprocess; the measurements and the report on the CPU.

The script itself needs a CUDA GPU; here its measuring functions run on a tiny DeiT on the CPU
(a few steps) so that a typo cannot hide until the next GPU run.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_scale.py"


@pytest.fixture(scope="module")
def gs():
    spec = importlib.util.spec_from_file_location("gpu_scale", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_scale"] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("gpu_scale", None)


def _run(*argv):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # tests/ on the path would shadow the SDK
    env["CUDA_VISIBLE_DEVICES"] = ""  # the no-CUDA path even on a GPU machine
    return subprocess.run([sys.executable, str(SCRIPT), *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_help_and_the_no_cuda_path(tmp_path):
    proc = _run("--help")
    assert proc.returncode == 0, proc.stderr
    assert "--steps" in proc.stdout and "--out STEM" in proc.stdout
    out = tmp_path / "gpu.json"
    proc = _run("--steps", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no CUDA device: nothing measured"
    assert not out.exists()
    assert _run("--steps", "0").returncode == 2  # argparse's usage error


def test_importing_the_script_stays_light(gs):
    header = SCRIPT.read_text().split("# ---- measurement")[0]
    assert "import torch" not in header and "lraqvit_deploy" not in header.split('"""', 2)[2]


@pytest.mark.usefixtures("one_thread")
def test_measurements_and_report_on_a_tiny_model_on_the_cpu(gs):
    args = gs.parse_args(["--model", "deit_tiny_patch16_224", "--img-size", "32", "--steps", "2", "--warmup", "1",
                          "--batch-size", "4", "--train-images", "8", "--calib-images", "4", "--wads-iters", "2",
                          "--amp", "bf16,off,fp16"])
    m = gs.measure(args, torch.device("cpu"))
    kd = m["kd"]
    assert kd["bf16"]["amp"] == "bf16" and kd["off"]["amp"] == "off" and kd["bf16"]["losses_finite"]
    assert kd["off"]["steps"] == 2 and kd["off"]["steps_per_s"] > 0 and kd["off"]["num_workers"] == 0
    assert "amp = 'fp16' needs a CUDA device" in kd["fp16"]["error"]  # recorded (the library names the field)
    assert m["wads"]["rb-lra"]["seconds"] > 0 and m["wads"]["dense"]["iters"] == 2
    assert m["params_rb_lra"] < m["params_dense"]
    res = {"schema": gs.SCHEMA, "date": "2025-01-01", "command": "python benchmarks/gpu_scale.py", "settings": {},
           "host": {"gpu": "NVIDIA H100 80GB HBM3", "torch": torch.__version__, "cuda": "12.8",
                    "bf16_supported": True, "tf32": False}, "results": m}
    json.dumps(res)  # the --json document
    md = gs.render_markdown(res)
    assert md.startswith("# GPU scale: deit_tiny_patch16_224 at 32 px, RB-LRA −45 % params")
    assert "NVIDIA H100 80GB HBM3" in md and f"torch {torch.__version__}" in md
    assert "| bf16 | bf16 | 4 | 0 |" in md and "| off | off | 4 | 0 |" in md
    assert "| fp16 | **failed**: OptionError: amp = 'fp16' needs a CUDA device" in md
    assert "amp bf16 (bf16) / off:" in md
    assert "| RB-LRA (merged) |" in md and "| dense |" in md
