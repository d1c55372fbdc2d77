"""Running a .pte with pte_runner, natively or under qemu-aarch64 -cpu MODEL, with an optional kernel trace."""
from __future__ import annotations

import math
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from lraqvit_deploy.errors import DeployError

from .kernels import kernel_report
from .toolchain import BUILD_SCRIPT, ArmToolchain, find_toolchain


class ArmTimeout(DeployError):
    """An emulated run that went past its time bound (killed): the check is incomplete, not failed."""


def _runner_command(tc: ArmToolchain, cpu: Optional[str], trace_log: Optional[Path]) -> List[str]:
    if cpu is None:
        if tc.host_runner is None:
            raise DeployError(f"no host pte_runner; build it with: bash {BUILD_SCRIPT} host")
        return [str(tc.host_runner)]
    if not tc:
        raise DeployError(f"cannot run on an emulated Arm CPU: {tc.reason}")
    cmd = [str(tc.qemu), "-cpu", cpu, "-L", str(tc.sysroot)]
    if trace_log is not None:
        cmd += ["-d", "in_asm", "-D", str(trace_log)]
    return cmd + [str(tc.aarch64_runner)]


def run_native(pte, images: torch.Tensor, cpu: Optional[str] = None, threads: int = 1, iterations: int = 1,
               warmup: int = 0, toolchain: Optional[ArmToolchain] = None, trace_kernels: bool = False,
               timeout: Optional[float] = None) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Execute `pte` on each image with pte_runner: natively (`cpu=None`) or under qemu `-cpu cpu`.

    images: (N, C, H, W) float32 (or one image (C, H, W)); each row is fed as a batch-1 input.
    Returns (outputs (N, ...) of output 0, info) with info = the runner's JSON report
    (`load_ms`, `times_ms` of `iterations` timed runs of image 0 after `warmup`, `threads`, ...)
    plus `wall_s`, `cpu` and, for emulated runs, `cpu_features` and, with `trace_kernels`,
    `kernels` (see `kernel_report`). Raises DeployError when the runner fails.
    """
    from lraqvit_deploy.android_runner.runner_output import parse_pte_runner_json

    tc = toolchain if toolchain is not None else find_toolchain()
    x = images.detach().to(torch.float32).contiguous()
    if x.dim() == 3:
        x = x.unsqueeze(0)
    n = x.shape[0]
    with tempfile.TemporaryDirectory(prefix="pte_runner_") as tmp:
        tmp_p = Path(tmp)
        (tmp_p / "in").mkdir()
        (tmp_p / "out").mkdir()
        x.numpy().tofile(tmp_p / "in" / "input_0.bin")
        trace = tmp_p / "trace.log" if (trace_kernels and cpu is not None) else None
        cmd = _runner_command(tc, cpu, trace) + [
            "--model", str(Path(pte).resolve()), "--inputs", str(tmp_p / "in"), "--outputs", str(tmp_p / "out"),
            "--iterations", str(iterations), "--warmup", str(warmup), "--threads", str(threads), "--quiet"]
        if cpu is not None:
            cmd.append("--print-cpu-features")
        if trace is not None:
            cmd.append("--print-libs")
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ArmTimeout(f"pte_runner on {cpu or 'host'} ran past {timeout:g} s and was stopped") from None
        wall = time.perf_counter() - t0
        report = parse_pte_runner_json(proc.stdout)
        if proc.returncode != 0 or report is None or not report.get("ok"):
            why = (report or {}).get("error") or _tail(proc.stderr) or f"exit status {proc.returncode}"
            if proc.returncode < 0 or proc.returncode >= 128:
                why = f"crashed (signal {-proc.returncode if proc.returncode < 0 else proc.returncode - 128}): {why}"
            raise DeployError(f"pte_runner failed on {cpu or 'host'}: {why}")
        outs = report.get("outputs") or []
        if not outs:
            raise DeployError(f"pte_runner on {cpu or 'host'} wrote no tensor output")
        shape = list(outs[0]["shape"])
        if outs[0].get("dtype") != "Float":
            raise DeployError(f"output 0 is {outs[0].get('dtype')}, not float32")
        data = torch.from_numpy(_read_f32(tmp_p / "out" / "output_0.bin").copy())
        per = math.prod(shape)
        if data.numel() != per * n:
            raise DeployError(f"pte_runner wrote {data.numel()} floats for {n} images of output shape {shape}")
        logits = data.reshape(n, *shape[1:]) if shape and shape[0] == 1 else data.reshape(n, *shape)
        info = dict(report, wall_s=wall, cpu=cpu or "host")
        if cpu is not None:
            info["cpu_features"] = report.get("cpu", {})
        if trace is not None:
            info["kernels"] = kernel_report(trace, report, tc, info.get("cpu_features", {}))
    return logits, info


def _read_f32(path: Path):
    import numpy as np

    return np.fromfile(path, dtype="<f4")


def _tail(text: str, n: int = 3) -> str:
    lines = [ln for ln in text.strip().splitlines() if not ln.startswith("I ")]
    return " | ".join(lines[-n:])
