"""ExecuTorch's C++ log lines (`[cpuinfo_utils.cpp:71] Reading file ...`, written to fd 2 on the first program
load of a process) stay off the terminal unless --debug. A fresh process each time: only the first load logs."""
from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("executorch.runtime")

TINY = ["--model", "deit_tiny_patch16_224", "--weights", "random", "--img-size", "32", "--num-classes", "10"]
LOG = "cpuinfo_utils.cpp"


def _deploy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lraqvit_deploy", *args], capture_output=True, text=True, timeout=600)


def test_runtime_log_lines_only_with_debug(tmp_path):
    out = tmp_path / "android"
    build = _deploy("build", "--target", "android", *TINY, "--out", str(out), "--quiet", "--no-arm-verify",
                    "--verify-images", "4", "--threads", "1")
    assert build.returncode == 0, build.stderr[-2000:]
    assert LOG not in build.stderr  # the build loaded and ran the .pte on this host
    assert "is an Enum subclass" not in build.stderr  # torch's deprecation line about ExecuTorch's enums
    debug = _deploy("bench", "--target", "host", str(out), "-n", "1", "--warmup", "0", "--quiet", "--debug")
    assert debug.returncode == 0 and f"[{LOG}:" in debug.stderr  # the lines exist, and --debug shows them
