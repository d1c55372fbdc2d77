"""Execute a plan: run each step through the library in-process, reuse what is done, never stop early.

A failing step (no phone, no TensorRT, a build error) is recorded with its reason and everything that
needs it is skipped with that reason; the other steps still run, so the table always completes and
shows "not measured (reason)" where a number could not be had.
"""
from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..artifacts import read_json, write_json
from ..benchmark import SCHEMA, BenchResult
from ..errors import DeployError, ToleranceError
from ..model_info import model_info
from .plan import Plan, Step

Runner = Callable[[Step, Plan], None]


@dataclass
class Outcome:
    status: str  # ran | reused | failed | skipped
    reason: str = ""
    seconds: float = 0.0
    # the step (or the step it depends on) failed a correctness gate (ToleranceError: a program that
    # disagrees with its reference, a Jetson result whose engine failed its output gates): its cell
    # reads "FAILED (...)", never a latency nor a plain "not measured"
    gate_failed: bool = False


@contextlib.contextmanager
def _threads(n: Optional[int]):
    """torch's CPU threads set to `n` for the block (None: leave them)."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _model(spec: Dict, deps) -> "object":
    """The step's input model: the artifact its dependency wrote, or a fresh `create_model`."""
    from ..models import create_model
    from ..targets import as_model

    if deps:
        return as_model(deps[0].out)
    kw = dict(spec["model"])
    return create_model(kw.pop("name"), kw.pop("weights", "auto"), progress=False, **kw)


def run_step(step: Step, plan: Plan, progress: bool = False) -> None:
    """Produce `step.out` with the library (the same calls `deploy eval|compress|build|bench` make)."""
    from ..backends import options_type
    from ..data_sources import eval_dataset
    from ..evaluate import evaluate
    from ..pipeline import compress
    from ..recipe import Recipe
    from ..targets import bench, build

    s, settings = step.spec, plan.config.settings
    if step.kind == "collect":
        return collect_result_file(step)
    if step.kind == "bench":
        options = options_type(s["target"], "bench").from_dict(
            {"iterations": s["iterations"], "warmup": s["warmup"], "threads": s["threads"] or 1, "progress": progress,
             **({"serial": s["serial"]} if s.get("serial") else {}),
             **({"precision": s["jetson_precision"]} if s.get("jetson_precision") else {})})
        result = bench(step.deps[0].out, options)
        return write_json(step.out, result.to_dict())
    with _threads(settings.work_threads):
        model = _model(s, step.deps)
        if step.kind == "eval":
            ds, _ = eval_dataset(model, s.get("eval_data"), s.get("eval_limit"))
            res = evaluate(model, ds, progress=progress)
            spec = model_info(model).spec
            return write_json(step.out, {"model": spec.name, "arch": spec.arch, "weights": spec.weights,
                                         **res.to_dict()})
        if step.kind == "compress":
            # resume=True: an interrupted distillation continues from its checkpoint (OUT.kd-checkpoint.pt),
            # which is only accepted when it was written with the same recipe
            report = compress(model, Recipe.from_dict(s["recipe"], f"{step.method} recipe"),
                              eval_data=s.get("eval_data"), eval_limit=s.get("eval_limit"),
                              train_data=s.get("train_data"), calib_data=s.get("train_data"),
                              train_limit=s.get("train_limit"), out=step.out,
                              resume=True, progress=progress)
            return write_json(step.json, report.to_dict())
        if step.kind == "build":
            options = options_type(s["target"], "build").from_dict({**s.get("options", {}), "progress": progress})
            result = build(model, step.out, options, data=settings.eval_data, data_limit=settings.eval_limit)
            return write_json(step.json, result.summary())
    raise ValueError(f"no library call for step kind {step.kind!r}")


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
    from ..jetson.run import gate_failure

    why = gate_failure(data)
    if why:  # shown as FAILED in the table, never as a latency
        raise ToleranceError(f"{src.name}: {why}")
    try:
        result = BenchResult.from_dict(data)
    except TypeError as e:
        raise DeployError(f"{src} is not a `deploy bench` result ({e})") from None
    write_json(step.out, {**result.to_dict(), "collected_from": str(src)})


def default_runner(quiet: bool = False) -> Runner:
    """Run each step in this process, its printed output going to `work/logs/<key>.log`."""

    def run(step: Step, plan: Plan) -> None:
        log = plan.work / "logs" / f"{step.key[:12]}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f, contextlib.redirect_stdout(f):
            run_step(step, plan, progress=False)

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
            outcomes[step.key] = Outcome("skipped", failed[0].reason, gate_failed=failed[0].gate_failed)
            continue
        if plan.is_done(step) and (resume or not step.measurement):
            outcomes[step.key] = Outcome("reused")
            continue
        t0 = time.perf_counter()
        try:
            runner(step, plan)
        except DeployError as e:
            reason = str(e) if step.kind == "collect" else f"{step.kind} failed: {e}"
            outcomes[step.key] = Outcome("failed", reason, time.perf_counter() - t0,
                                         gate_failed=isinstance(e, ToleranceError))
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
