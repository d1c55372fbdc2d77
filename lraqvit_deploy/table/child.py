"""Run a step in a fresh interpreter and measure it: wall time and the child's peak memory.

Peak memory is read two ways. `VmHWM` (/proc/PID/status) is the high-water mark of the child's own
address space: sampled while it runs, and for a step also read by the child itself as it ends (exact).
`ru_maxrss` from `os.wait4` is the kernel's figure for that child, but Linux carries the high-water
mark of the address space the child was spawned from (this process) across exec, so it is at least
the harness's own RSS: an upper bound, recorded beside. A fresh interpreter per step means a step's
peak never includes what an earlier step left allocated; the price is each child's imports (seconds).

    results = run_table(config, out, runner=subprocess_runner())
    step_resources(plan, step)   # {"seconds", "ru_maxrss_mb", "vmhwm_mb", "returncode"} of its last run

The child is `python -m lraqvit_deploy.table.child JOB`, JOB a pickle of (step, plan) in
`work/child/`; a `DeployError` there is written beside JOB and raised again here with its type
(a `ToleranceError` stays a gate failure), so outcomes read as with the in-process runner.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from ..errors import DeployError, ToleranceError
from ..io import read_json, write_json


@dataclass(frozen=True)
class ChildRun:
    """One child process: exit code, wall seconds, its peak RSS (VmHWM) and wait4's ru_maxrss (MiB)."""

    returncode: int
    seconds: float
    ru_maxrss_mb: float  # >= the parent's RSS at spawn (see the module docstring): an upper bound
    vmhwm_mb: Optional[float]  # None when /proc could not be read before the child exited

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def proc_status_kib(pid: int, field: str = "VmHWM") -> Optional[int]:
    """A `kB` field of /proc/PID/status (None: no such process, no /proc, or the field is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def run_child(argv: Sequence[str], log: Optional[Path] = None, cwd: Optional[Path] = None,
              env: Optional[Dict[str, str]] = None, timeout: Optional[float] = None, poll_s: float = 0.02) -> ChildRun:
    """Run `argv` (its output to `log`, else discarded) and measure it; a child over `timeout` is killed (-9)."""
    out = open(log, "a") if log is not None else subprocess.DEVNULL
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        hwm: Optional[int] = None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            kib = proc_status_kib(proc.pid)
            if kib is not None:
                hwm = max(hwm or 0, kib)
            if timeout is not None and time.perf_counter() - t0 > timeout:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(poll_s)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    finally:
        if log is not None:
            out.close()
    return ChildRun(proc.returncode, round(seconds, 3), round(usage.ru_maxrss / 1024, 1),  # KiB on Linux
                    None if hwm is None else round(hwm / 1024, 1))


def resources_path(plan, step) -> Path:
    return plan.work / "resources" / f"{step.key}.json"


def step_resources(plan, step) -> Optional[Dict[str, Any]]:
    """What `subprocess_runner` measured for `step` the last time it ran it (None: never)."""
    path = resources_path(plan, step)
    return read_json(path) if path.is_file() else None


def subprocess_runner(python: str = sys.executable, timeout: Optional[float] = None):
    """A `Runner` that runs each step in a fresh interpreter and records its `ChildRun` (see `step_resources`)."""

    def run(step, plan) -> None:
        job = plan.work / "child" / f"{step.key[:12]}.pkl"
        job.parent.mkdir(parents=True, exist_ok=True)
        error = job.with_suffix(".error.json")
        error.unlink(missing_ok=True)
        job.write_bytes(pickle.dumps((step, plan)))
        log = plan.work / "logs" / f"{step.key[:12]}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        res = run_child([python, "-m", "lraqvit_deploy.table.child", str(job)], log=log, timeout=timeout)
        own = job.with_suffix(".vmhwm")  # the child's VmHWM as it ended: exact, where sampling may miss the end
        if own.is_file():
            res = replace(res, vmhwm_mb=max(res.vmhwm_mb or 0.0, round(int(own.read_text()) / 1024, 1)))
            own.unlink()
        write_json(resources_path(plan, step), res.to_dict())
        if res.returncode != 0:
            info = read_json(error) if error.is_file() else {
                "type": "DeployError", "message": f"the step's process exited with {res.returncode} (log: {log})"}
            raise (ToleranceError if info.get("gate") else DeployError)(info["message"])

    return run


def main(argv: Sequence[str]) -> int:
    """The child: run the pickled step with the library; a DeployError goes to JOB.error.json, exit 1."""
    from .run import run_step

    job = Path(argv[0])
    step, plan = pickle.loads(job.read_bytes())
    try:
        run_step(step, plan, progress=False)
    except DeployError as e:
        write_json(job.with_suffix(".error.json"), {"type": type(e).__name__, "gate": isinstance(e, ToleranceError),
                                                    "message": str(e)})
        return 1
    finally:
        job.with_suffix(".vmhwm").write_text(str(proc_status_kib(os.getpid()) or 0))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
