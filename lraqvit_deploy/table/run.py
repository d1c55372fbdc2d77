"""Execute a plan: run each step through the `deploy` CLI in-process, reuse what is done, never stop early.

A failing step (no phone, no TensorRT, a build error) is recorded with its reason and everything that
needs it is skipped with that reason; the other steps still run, so the table always completes and
shows "not measured (reason)" where a number could not be had.
"""
from __future__ import annotations

import contextlib
import io
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..artifacts import read_json, write_json
from ..benchmark import SCHEMA, BenchResult
from ..errors import DeployError
from .plan import Plan, Step

Runner = Callable[[Step, Plan], None]


@dataclass
class Outcome:
    status: str  # ran | reused | failed | skipped
    reason: str = ""
    seconds: float = 0.0


def invoke(argv: List[str], stdout: Optional[Path] = None) -> None:
    """Run `deploy ARGV` in this process; a user-level failure raises DeployError with its message.

    Unlike `cli.main.main`, which prints the error and returns 1, this keeps the message so the
    table can say why a number is missing.
    """
    from ..cli.main import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = build_parser().parse_args(argv)
    except SystemExit:
        msg = (err.getvalue().strip().splitlines() or ["bad arguments"])[-1].split("error: ", 1)[-1]
        if "invalid choice" in msg and argv and f"'{argv[0]}'" in msg:
            raise DeployError(f"`deploy {argv[0]}` is not available in this installation") from None
        raise DeployError(f"`deploy {argv[0]}` rejected its options: {msg}; "
                          f"the command was: deploy {' '.join(map(str, argv))}") from None
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with contextlib.ExitStack() as stack:
        if stdout is not None:
            stdout.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(stdout, "a"))))
        rc = int(args.func(args) or 0)
    if rc:
        raise DeployError(f"`deploy {argv[0]}` exited with status {rc}")


def step_argv(step: Step, plan: Plan, quiet: bool = False) -> List[str]:
    """The `deploy` command line that produces `step.out`."""
    s = step.spec
    threads = plan.config.settings.threads if step.kind == "bench" else plan.config.settings.work_threads
    general = ["--threads", str(threads)] if threads else []
    general += ["--quiet"] if quiet else []
    if step.kind == "eval":
        return ["eval", *s["args"], "--json", str(step.out), *general]
    if step.kind == "compress":
        # --resume: an interrupted distillation continues from its checkpoint (OUT.kd-checkpoint.pt),
        # which `deploy compress` only accepts when it was written with the same options
        source = [str(step.deps[0].out)] if step.deps else []  # quantize an FP32 compressed artifact
        return ["compress", *source, *s["args"], "--out", str(step.out), "--json", str(step.json), "--resume",
                *general]
    if step.kind == "build":
        source = [str(step.deps[0].out)] if step.deps else s["args"]
        return ["build", "--target", step.target, *source, *s.get("build_args", []), "--out", str(step.out),
                "--json", str(step.json), *general]
    if step.kind == "bench":
        serial = ["--serial", s["serial"]] if s.get("serial") else []
        if s.get("jetson_precision"):
            serial += ["--jetson-precision", s["jetson_precision"]]
        return ["bench", "--target", s["target"], str(step.deps[0].out), "--iterations", str(s["iterations"]),
                "--warmup", str(s["warmup"]), *serial, "--json", str(step.out), *general]
    raise ValueError(f"no command for step kind {step.kind!r}")


def collect_result_file(step: Step) -> None:
    """Copy a bench JSON recorded on another device (the Jetson) after checking it is one."""
    src = Path(step.spec["file"])
    if not src.is_file():
        raise DeployError(f"no result file {src.name}; expected {src}: run `deploy bench --target jetson DIR "
                          f"--json {src.name}` on the Jetson and copy the file there")
    data = read_json(src)
    if data.get("schema") != SCHEMA or data.get("target") != "jetson":
        raise DeployError(f"{src} is not a Jetson `deploy bench` result (schema {data.get('schema')!r}, "
                          f"target {data.get('target')!r}; want {SCHEMA}, 'jetson')")
    try:
        result = BenchResult.from_dict(data)
    except TypeError as e:
        raise DeployError(f"{src} is not a `deploy bench` result ({e})") from None
    write_json(step.out, {**result.to_dict(), "collected_from": str(src)})


def default_runner(quiet: bool = False) -> Runner:
    def run(step: Step, plan: Plan) -> None:
        if step.kind == "collect":
            collect_result_file(step)
        else:
            invoke(step_argv(step, plan, quiet), stdout=plan.work / "logs" / f"{step.key[:12]}.log")

    return run


def mark_done(plan: Plan, step: Step, run_id: str, seconds: float = 0.0) -> None:
    """Write the step's stamp (only ever after its output is complete)."""
    write_json(plan.stamp(step), {"key": step.key, "kind": step.kind, "model": step.model, "method": step.method,
                                  "target": step.target, "out": str(step.out), "run_id": run_id,
                                  "seconds": round(seconds, 3), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def start_run(plan: Plan, resume: bool) -> Dict:
    """The run record: a fresh run gets a new id; --resume continues the previous one (same config)."""
    path = plan.out / "run.json"
    digest = plan.config.digest()
    if resume and path.is_file():
        prev = read_json(path)
        if prev.get("config_sha256") == digest:
            prev["resumed"] = prev.get("resumed", 0) + 1
            write_json(path, prev)
            return prev
    record = {"run_id": uuid.uuid4().hex[:12], "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "config": str(plan.config.source) if plan.config.source else None, "config_sha256": digest,
              "resumed": 0}
    write_json(path, record)
    return record


def run_plan(plan: Plan, resume: bool = False, progress: bool = True, runner: Optional[Runner] = None,
             echo: Callable[[str], None] = print) -> Dict[str, Outcome]:
    """Run every step not already done; returns {step key: Outcome}.

    Artifacts (eval, compress, build, collect) are reused whenever their stamp matches. Latency runs
    are repeated unless `resume`, so that a fresh run's speedups compare numbers from that run only.
    KeyboardInterrupt propagates; stamps of finished steps stay, so `--resume` continues from there.
    """
    from tqdm import tqdm

    runner = runner or default_runner(quiet=not progress)
    record = start_run(plan, resume)
    outcomes: Dict[str, Outcome] = {}
    bar = tqdm(plan.steps, desc=f"table {plan.config.name}", unit="step", disable=not progress, position=0)
    for step in bar:
        bar.set_postfix_str(step.name, refresh=True)
        failed = [outcomes[d.key] for d in step.deps if outcomes[d.key].status in ("failed", "skipped")]
        if failed:
            outcomes[step.key] = Outcome("skipped", failed[0].reason)
            continue
        if plan.is_done(step) and (resume or not step.measurement):
            outcomes[step.key] = Outcome("reused")
            continue
        t0 = time.perf_counter()
        try:
            runner(step, plan)
        except DeployError as e:
            reason = str(e) if step.kind == "collect" else f"{step.kind} failed: {e}"
            outcomes[step.key] = Outcome("failed", reason, time.perf_counter() - t0)
            tqdm.write(f"  {step.name}: {reason}") if progress else echo(f"  {step.name}: {reason}")
            continue
        seconds = time.perf_counter() - t0
        mark_done(plan, step, record["run_id"], seconds)
        outcomes[step.key] = Outcome("ran", seconds=seconds)
    bar.close()
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    record["steps"] = {k: asdict(o) for k, o in outcomes.items()}
    write_json(plan.out / "run.json", record)
    return outcomes


def summary(outcomes: Dict[str, Outcome]) -> Dict[str, int]:
    counts = {"ran": 0, "reused": 0, "failed": 0, "skipped": 0}
    for o in outcomes.values():
        counts[o.status] += 1
    return counts
