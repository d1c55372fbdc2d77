"""A step in a fresh interpreter, measured: wall time and the child's peak memory; its record and reuse.

Peak memory is read two ways. `VmHWM` (/proc/PID/status) is the high-water mark of the child's own
address space: sampled while it runs, and read by the child itself as it ends (exact). `ru_maxrss`
from `os.wait4` is the kernel's figure for that child, but Linux carries the high-water mark of the
address space the child was spawned from (this process) across exec, so it is at least the parent's
own RSS: an upper bound, recorded beside (a parent that imports no torch keeps it close). A fresh
interpreter per step means a step's peak never includes what an earlier step left allocated; the
price is each child's imports (seconds).

    run = run_child([sys.executable, "-c", "..."], log=log)     # ChildRun: returncode, seconds, MiB
    rec = run_recorded(argv, result, log, "compress deit_tiny", digest=d)   # the child's record + the parent's
    rec = reused_record(result, d, out / "manifest.json")       # a finished record of the same settings, or None
    sys.exit(record_call(lambda: {"ok": True, ...}, result))    # in the child: write its record

`run_recorded` / `record_call` are the two ends of one protocol: the child writes a JSON record (a
dict with "ok") to RESULT, with its own `peak_rss_kib` (VmHWM as it ends); the parent adds what it
measured. `lraqvit_deploy.table.child` runs the table harness's steps with `run_child`. Standard
library only (no torch), so that a parent importing this stays small.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from ..io import write_json


@dataclass(frozen=True)
class ChildRun:
    """One child process: exit code, wall seconds, its peak RSS (VmHWM) and wait4's ru_maxrss (MiB)."""

    returncode: int
    seconds: float
    ru_maxrss_mb: float  # >= the parent's RSS at spawn (see the module docstring): an upper bound
    vmhwm_mb: Optional[float]  # None when /proc could not be read before the child exited

    def to_dict(self) -> Dict[str, Any]:
        """Seconds to the millisecond, memory to 0.1 MiB."""
        return {"returncode": self.returncode, "seconds": round(self.seconds, 3),
                "ru_maxrss_mb": round(self.ru_maxrss_mb, 1),
                "vmhwm_mb": None if self.vmhwm_mb is None else round(self.vmhwm_mb, 1)}


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
    return ChildRun(proc.returncode, seconds, usage.ru_maxrss / 1024,  # KiB on Linux
                    None if hwm is None else hwm / 1024)


def run_recorded(argv: Sequence[str], result: Path, log: Path, title: str, cwd: Optional[Path] = None,
                 digest: Optional[str] = None) -> Dict[str, Any]:
    """Run `argv`, a child that writes its record to `result` (see `record_call`), its output appended to `log`
    under a `===== title HH:MM:SS =====` line; returns that record, written back to `result`, with what this
    process measured: `process_seconds` (wall), `ru_maxrss_kib` and `exit_status`, `peak_rss_kib` = ru_maxrss
    where the child recorded none, and `digest` when given (what `reused_record` compares)."""
    result, log = Path(result), Path(log)
    result.unlink(missing_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"\n===== {title} {time.strftime('%H:%M:%S')} =====\n")
    run = run_child(argv, log=log, cwd=cwd)
    rec: Dict[str, Any] = json.loads(result.read_text()) if result.is_file() else {}
    if not rec:
        rec = {"ok": False, "error": f"the step process exited with status {run.returncode} and wrote no result; "
                                     f"see {log}"}
    rec["process_seconds"] = run.seconds
    rec["ru_maxrss_kib"] = round(run.ru_maxrss_mb * 1024)
    rec.setdefault("peak_rss_kib", rec["ru_maxrss_kib"])
    rec["exit_status"] = run.returncode
    if digest is not None:
        rec["digest"] = digest
    write_json(result, rec)
    return rec


def record_call(call: Callable[[], Dict[str, Any]], result: Path) -> int:
    """In the child: `call()`'s record (a dict with "ok"), or {"ok": False, "error": "Type: message"} when it raises
    (traceback to stderr), plus this process's peak RSS as it ends (`peak_rss_kib`, VmHWM), written to `result`;
    returns the exit status (0 when ok)."""
    try:
        rec = call()
    except BaseException as e:  # record why, so that the report says it
        traceback.print_exc()
        rec = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    rec["peak_rss_kib"] = proc_status_kib(os.getpid(), "VmHWM")
    write_json(result, rec)
    return 0 if rec["ok"] else 1


def reused_record(result: Path, digest: str, needs: Optional[Path] = None) -> Optional[Dict[str, Any]]:
    """The record `run_recorded` left at `result` when it succeeded with this `digest` and `needs` (its output's
    file, if given) exists, marked `reused`; else None."""
    try:
        rec = json.loads(Path(result).read_text())
    except (OSError, ValueError):
        return None
    if rec.get("ok") and rec.get("digest") == digest and (needs is None or Path(needs).is_file()):
        return {**rec, "reused": True}
    return None


__all__ = ["ChildRun", "proc_status_kib", "run_child", "run_recorded", "record_call", "reused_record"]
