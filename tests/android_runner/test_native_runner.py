"""android_runner/native/pte_runner.cpp on this host: built against the installed executorch wheel,
compared with `executorch.runtime`, and read by the bench protocol's parsers.

The runner is built once by android_runner/native/build.sh (cached under build/native/; rebuilt
only when the source changes). Tests skip with the build script's reason when no compiler or no
executorch C++ package is present.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_tiny
from lraqvit_deploy.android_runner.protocol import RunPlan, to_result
from lraqvit_deploy.android_runner.runner_output import parse_pte_runner_json, parse_runner_output
from lraqvit_deploy.backends.executorch.arm import build_runner, run_native


@pytest.fixture(scope="module")
def host_runner() -> Path:
    path, why = build_runner("host")
    if path is None:
        pytest.skip(f"host pte_runner unavailable: {why}")
    return path


@pytest.fixture(scope="module")
def tiny_fp32_pte(tmp_path_factory) -> Path:
    from lraqvit_deploy.backends.executorch.export import lower_to_xnnpack

    path = tmp_path_factory.mktemp("native") / "tiny_fp32.pte"
    path.write_bytes(lower_to_xnnpack(make_tiny("vit"), "fp32").buffer)
    return path


def _runtime_logits(pte: Path, x: torch.Tensor) -> torch.Tensor:
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(pte)).load_method("forward")
    return torch.cat([method.execute([x[i : i + 1].contiguous()])[0] for i in range(len(x))])


def test_host_runner_matches_executorch_runtime(host_runner, tiny_fp32_pte):
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    logits, info = run_native(tiny_fp32_pte, x, cpu=None, threads=1, iterations=2, warmup=1)
    ref = _runtime_logits(tiny_fp32_pte, x)
    assert logits.shape == ref.shape == (3, 10)
    assert (logits - ref).abs().max().item() <= 1e-5
    assert info["ok"] and info["samples"] == 3 and info["threads"] == 1
    assert len(info["times_ms"]) == 2 and len(info["warmup_ms"]) == 1 and info["load_ms"] > 0
    assert info["inputs"][0]["shape"] == [1, 3, 32, 32] and info["outputs"][0]["dtype"] == "Float"


def test_runner_output_feeds_the_bench_protocol(host_runner, tiny_fp32_pte, tmp_path):
    """Its stdout carries executor_runner's lines, so `to_result` turns it into a BenchResult."""
    proc = subprocess.run([str(host_runner), "--model", str(tiny_fp32_pte), "--warmup", "2", "--iterations", "3",
                           "--threads", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout + proc.stderr
    out = parse_runner_output(text)
    assert out.succeeded and out.executions == 5 and len(out.iteration_ms) == 5
    assert out.threads == 1 and out.load_ms is not None and out.method == "forward"
    report = parse_pte_runner_json(text)
    assert report["ok"] and report["inputs"][0]["source"] == "ones" and report["times_ms"] == out.iteration_ms[2:]
    plan = RunPlan(pte=tiny_fp32_pte, runner=host_runner, warmup=2, iterations=3)
    res = to_result(text, 0, plan, "host", [0], {}, {})
    assert res.iterations == 3 and res.threads == 1 and res.extra["timing_source"] == "per-iteration log lines"


def test_raw_input_files_with_several_samples(host_runner, tiny_fp32_pte, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    x = np.random.default_rng(0).standard_normal((2, 1, 3, 32, 32)).astype("<f4")
    x.tofile(tmp_path / "in" / "input_0.bin")
    proc = subprocess.run([str(host_runner), "--model", str(tiny_fp32_pte), "--inputs", str(tmp_path / "in"),
                           "--outputs", str(tmp_path / "out"), "--iterations", "0", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    y = np.fromfile(tmp_path / "out" / "output_0.bin", dtype="<f4").reshape(2, 10)
    ref = _runtime_logits(tiny_fp32_pte, torch.from_numpy(x.reshape(2, 3, 32, 32)))
    assert np.abs(y - ref.numpy()).max() <= 1e-5
    assert parse_pte_runner_json(proc.stdout)["times_ms"] == []


def test_runner_errors(host_runner, tiny_fp32_pte, tmp_path):
    def run(*args):
        return subprocess.run([str(host_runner), *args], capture_output=True, text=True, timeout=60)

    missing = run("--model", str(tmp_path / "nope.pte"))
    assert missing.returncode == 1
    assert "Failed to parse model file" in parse_pte_runner_json(missing.stdout)["error"]
    assert parse_runner_output(missing.stdout).error  # executor_runner's failure wording

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "input_0.bin").write_bytes(b"\0" * 100)
    short = run("--model", str(tiny_fp32_pte), "--inputs", str(tmp_path / "bad"))
    assert short.returncode == 1
    assert "not a multiple of 12288" in parse_pte_runner_json(short.stdout)["error"]

    unknown = run("--model", str(tiny_fp32_pte), "--bogus")
    assert unknown.returncode == 2 and "unknown option '--bogus'" in unknown.stderr


def test_parse_pte_runner_json_picks_the_report():
    text = ('I 00:00:00.1 executorch:threadpool.cpp:66] Resetting threadpool to 1 threads.\n'
            'Model loaded in 3.5 ms.\n{"not": "ours"}\n'
            '{"schema": "lraqvit-deploy/pte_runner/1", "ok": true, "times_ms": [1.0, 2.0]}\ntrailing\n')
    d = parse_pte_runner_json(text)
    assert d == {"schema": "lraqvit-deploy/pte_runner/1", "ok": True, "times_ms": [1.0, 2.0]}
    assert parse_pte_runner_json("no report here\n{broken") is None


def test_device_command_for_pte_runner(tmp_path):
    from lraqvit_deploy.android_runner.protocol import check_not_glibc, runner_command
    from lraqvit_deploy.errors import DeployError

    cmd = runner_command("/data/local/tmp/lraqvit", "m.pte", 1, 55, "80", "run_1.log", kind="pte_runner", warmup=5)
    assert cmd == ("cd /data/local/tmp/lraqvit && taskset 80 ./pte_runner --model m.pte --warmup 5 --iterations 50 "
                   "--threads 1 > run_1.log 2>&1")
    with pytest.raises(DeployError, match="runner kind"):
        runner_command("/d", "m.pte", 1, 1, None, "l.log", kind="nope")
    glibc = tmp_path / "pte_runner"
    glibc.write_bytes(b"\x7fELF" + b"\0" * 60 + b"/lib/ld-linux-aarch64.so.1\0")
    with pytest.raises(DeployError, match="build.sh android"):
        check_not_glibc(glibc)
