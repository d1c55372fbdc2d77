"""Parse ExecuTorch `executor_runner` logs (v1.4-v1.5 format strings of
`examples/portable/executor_runner/executor_runner.cpp`).

Lines come either from the posix PAL on stderr
(`I 00:00:00.051509 executorch:executor_runner.cpp:218] Model file m.pte is loaded.`) or from
the android PAL through logcat (`I ExecuTorch: Model file m.pte is loaded.`); the parser only
looks at the message bodies, so both work.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional

_NUM = r"([0-9]+(?:\.[0-9]+)?)"
_ITER = re.compile(r"Iteration (\d+) of (\d+): " + _NUM + " ms")
_TOTAL = re.compile(r"Model executed successfully (\d+) time\(s\) in " + _NUM + " ms")
_LOAD = re.compile(r"Model loaded in " + _NUM + " ms")
_THREADS = re.compile(r"Resetting threadpool with num threads = (-?\d+)")
_METHOD = re.compile(r"Using method (\S+)")
_FAIL = re.compile(r"(Execution of method \S+ failed with status 0x[0-9a-fA-F]+|Loading of method \S+ failed with "
                   r"status 0x[0-9a-fA-F]+|Failed to parse model file \S+|FileDataLoader::from\(\) failed[^\n]*|"
                   r"ERROR: unknown command line flag '[^']+')")


@dataclass
class RunnerOutput:
    iteration_ms: List[float] = field(default_factory=list)  # per execution, in order
    executions: Optional[int] = None
    total_ms: Optional[float] = None
    load_ms: Optional[float] = None
    threads: Optional[int] = None
    method: Optional[str] = None
    error: Optional[str] = None

    @property
    def succeeded(self) -> bool:
        return self.total_ms is not None and self.error is None


def parse_runner_output(text: str) -> RunnerOutput:
    out = RunnerOutput()
    for line in text.splitlines():
        if m := _ITER.search(line):
            out.iteration_ms.append(float(m.group(3)))
        elif m := _TOTAL.search(line):
            out.executions, out.total_ms = int(m.group(1)), float(m.group(2))
        elif m := _LOAD.search(line):
            out.load_ms = float(m.group(1))
        elif m := _THREADS.search(line):
            out.threads = int(m.group(1))
        elif m := _METHOD.search(line):
            out.method = m.group(1)
        elif (m := _FAIL.search(line)) and out.error is None:
            out.error = m.group(1)
    return out


# --- pte_runner (android_runner/native/pte_runner.cpp) ---------------------------------------
# pte_runner prints executor_runner's message formats (so `parse_runner_output` reads its timings)
# and then one JSON line with this schema: load_ms, times_ms (timed), warmup_ms, threads, inputs,
# outputs (shape, dtype, file), ok/error, and with --print-cpu-features / --print-libs the HWCAP
# features and the load address of each shared object.
PTE_RUNNER_SCHEMA = "lraqvit-deploy/pte_runner/1"


def parse_pte_runner_json(text: str) -> Optional[dict]:
    """The last pte_runner JSON report in `text` (stdout or a log), or None when there is none."""
    import json

    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and PTE_RUNNER_SCHEMA in line:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if d.get("schema") == PTE_RUNNER_SCHEMA:
                return d
    return None
