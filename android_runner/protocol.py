"""One on-device latency run: push, pin, cool down, execute warm-up + N iterations, log, pull, parse."""
from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from lraqvit_deploy.benchmark import BenchResult, summarize
from lraqvit_deploy.errors import DeployError

from .device import CUR_FREQ_CMD, THERMAL_CMD, check_abi, cpu_mask, parse_core_table, parse_thermal, prime_cores, \
    read_device
from .runner_output import parse_runner_output

REMOTE_DIR = "/data/local/tmp/lraqvit"


@dataclass
class RunPlan:
    pte: Path
    runner: Path
    threads: int = 1
    warmup: int = 5
    iterations: int = 50
    cooldown_s: float = 30.0
    cpus: Optional[List[int]] = None  # None: the `threads` fastest cores
    pin: bool = True
    fixed_performance: bool = False
    remote_dir: str = REMOTE_DIR
    results_dir: Optional[Path] = None
    log: Dict[str, Any] = field(default_factory=dict)
    # "executor_runner" (ExecuTorch's example runner) or "pte_runner" (android_runner/native, built
    # with `build.sh android`); both print the per-iteration lines `to_result` reads.
    runner_kind: str = "executor_runner"


RUNNER_KINDS = ("executor_runner", "pte_runner")


def runner_command(remote_dir: str, pte_name: str, threads: int, executions: int, mask: Optional[str],
                   log_name: str, kind: str = "executor_runner", warmup: int = 0) -> str:
    """The device shell line: cd, optional taskset pinning, the runner, all output into a log file.

    `executions` counts every run, warm-up included (executor_runner has no warm-up flag; pte_runner
    gets `--warmup warmup --iterations executions-warmup` and prints the same per-iteration lines).
    """
    if kind == "pte_runner":
        run = (f"./pte_runner --model {shlex.quote(pte_name)} --warmup {warmup} --iterations {executions - warmup} "
               f"--threads {threads}")
    elif kind == "executor_runner":
        run = (f"./executor_runner --model_path={shlex.quote(pte_name)} --num_executions={executions} "
               f"--cpu_threads={threads}")
    else:
        raise DeployError(f"runner kind must be one of {RUNNER_KINDS}, got {kind!r}.")
    pin = f"taskset {mask} " if mask else ""
    return f"cd {shlex.quote(remote_dir)} && {pin}{run} > {shlex.quote(log_name)} 2>&1"


def check_not_glibc(runner: Path) -> None:
    """A pte_runner for a phone must be the NDK build: the linux-aarch64 one needs glibc's loader."""
    head = Path(runner).read_bytes()[:1 << 16]
    if b"/lib/ld-linux-aarch64.so.1" in head:
        raise DeployError(f"{runner} is the linux-aarch64 (glibc) pte_runner, which Android cannot load; build the "
                          "Android one with: bash android_runner/native/build.sh android EXECUTORCH_CHECKOUT NDK")


def snapshot(adb, cores: List[int]) -> Dict[str, Any]:
    freqs = parse_core_table(adb.shell(CUR_FREQ_CMD, check=False).stdout)
    temps = parse_thermal(adb.shell(THERMAL_CMD, check=False).stdout)
    return {"time": time.time(), "cur_khz": {c: freqs.get(c) for c in cores},
            "max_temp_c": max(temps.values()) if temps else None, "thermal_c": temps}


def run_on_device(adb, plan: RunPlan, progress: bool = True) -> BenchResult:
    info = read_device(adb)
    check_abi(info)
    cores = plan.cpus or prime_cores(info.max_khz, plan.threads)
    mask = cpu_mask(cores) if plan.pin else None
    say = print if progress else (lambda *a, **k: None)
    say(f"device: {info.description}; cores {cores} (max kHz {[info.max_khz.get(c) for c in cores]})", flush=True)

    kind = plan.runner_kind
    if kind == "pte_runner":
        check_not_glibc(plan.runner)
    adb.shell(f"mkdir -p {shlex.quote(plan.remote_dir)}")
    adb.push(str(plan.runner), f"{plan.remote_dir}/{kind}")
    adb.shell(f"chmod 755 {shlex.quote(plan.remote_dir)}/{kind}")
    adb.push(str(plan.pte), f"{plan.remote_dir}/{plan.pte.name}")
    if plan.fixed_performance:
        adb.shell("cmd power set-fixed-performance-mode-enabled true", check=False)

    if plan.cooldown_s > 0:
        say(f"cooling down {plan.cooldown_s:.0f} s ...", flush=True)
        time.sleep(plan.cooldown_s)
    before = snapshot(adb, cores)
    log_name = f"run_{int(time.time())}.log"
    cmd = runner_command(plan.remote_dir, plan.pte.name, plan.threads, plan.warmup + plan.iterations, mask, log_name,
                         kind=kind, warmup=plan.warmup)
    proc = adb.shell(cmd, timeout=max(600.0, adb.timeout), check=False)
    after = snapshot(adb, cores)

    results_dir = plan.results_dir or plan.pte.parent / "android_runs"
    results_dir.mkdir(parents=True, exist_ok=True)
    local_log = results_dir / f"{info.serial or 'device'}_{log_name}"
    pulled = adb.run(["pull", f"{plan.remote_dir}/{log_name}", str(local_log)], check=False)
    text = local_log.read_text(errors="replace") if pulled.returncode == 0 and local_log.exists() else ""
    text = text or (proc.stdout + proc.stderr)
    if plan.fixed_performance:
        adb.shell("cmd power set-fixed-performance-mode-enabled false", check=False)
    return to_result(text, proc.returncode, plan, info.description, cores, before, after, local_log)


def to_result(text: str, returncode: int, plan: RunPlan, device: str, cores: List[int], before, after,
              local_log: Optional[Path] = None) -> BenchResult:
    """Turn the runner's log into a BenchResult; raise a DeployError when it crashed or failed."""
    out = parse_runner_output(text)
    tail = "\n".join(text.strip().splitlines()[-15:])
    if returncode >= 128 or returncode < 0:
        sig = returncode - 128 if returncode >= 128 else -returncode
        raise DeployError(f"executor_runner crashed (signal {sig}) on the device. Last output:\n{tail}\n"
                          "Check that the runner was built from the same ExecuTorch version as the .pte (v1.5.1) "
                          "with XNNPACK on.")
    if returncode != 0 or not out.succeeded:
        why = out.error or f"exit status {returncode}"
        raise DeployError(f"executor_runner failed on the device ({why}). Last output:\n{tail}")
    if len(out.iteration_ms) >= plan.warmup + plan.iterations:
        timed = out.iteration_ms[plan.warmup:]
        source = "per-iteration log lines"
    else:  # an older runner that prints only the total
        timed = [out.total_ms / max(out.executions or 1, 1)]
        source = "total / executions (runner prints no per-iteration times; warm-up included)"
    return BenchResult(target="android", artifact=str(plan.pte), device=device, iterations=len(timed),
                       warmup=plan.warmup, threads=out.threads if out.threads and out.threads > 0 else plan.threads,
                       load_ms=out.load_ms, size_mb=plan.pte.stat().st_size / 1e6, **summarize(timed),
                       extra={"cores": cores, "pinned": plan.pin, "cooldown_s": plan.cooldown_s,
                              "timing_source": source, "before": before, "after": after,
                              "log": str(local_log) if local_log else None, "times_ms": timed})
