"""Run a step in a fresh interpreter and measure it: wall time and the child's peak memory.

The measuring is `lraqvit_deploy.measure.process` (`run_child`: VmHWM sampled while the child runs,
wait4's `ru_maxrss` beside, an upper bound); here the child also reads its own VmHWM as it ends (exact).
A fresh interpreter per step means a step's peak never includes what an earlier step left allocated;
the price is each child's imports (seconds).

    results = run_table(config, out, runner=subprocess_runner())
    step_resources(plan, step)   # {"seconds", "ru_maxrss_mb", "vmhwm_mb", "returncode"} of its last run

The child is `python -m lraqvit_deploy.table.child JOB`, JOB a pickle of (step, plan) in
`work/child/`; a `DeployError` there is written beside JOB and raised again here with its type
(a `ToleranceError` stays a gate failure), so outcomes read as with the in-process runner.
"""
from __future__ import annotations

import os
import pickle
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from ..errors import DeployError, ToleranceError
from ..io import read_json, write_json
from ..measure.process import ChildRun, proc_status_kib, run_child

__all__ = ["ChildRun", "proc_status_kib", "run_child", "resources_path", "step_resources", "subprocess_runner", "main"]


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
            res = replace(res, vmhwm_mb=max(res.vmhwm_mb or 0.0, int(own.read_text()) / 1024))
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
