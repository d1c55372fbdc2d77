"""Gather what the steps wrote into one results document (what `table4.json` holds and render.py draws).

Only outputs of steps that ran or were reused in this invocation are read, so a stale file from an
earlier run never fills a cell whose step failed now. Every number carries where it came from.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..artifacts import MANIFEST, read_json
from .plan import Cell, Plan, Step, column_label
from .run import Outcome

SCHEMA = "lraqvit-deploy/table4/1"
BENCH_KEYS = ("median_ms", "p90_ms", "min_ms", "max_ms", "mean_ms", "iterations", "warmup", "threads", "device",
              "size_mb", "load_ms")


def _state(cell: Cell, outcomes: Dict[str, Outcome]) -> Tuple[Optional[Step], str]:
    """(the step whose output is usable, or None, and else the reason)."""
    if isinstance(cell, str):
        return None, cell
    o = outcomes.get(cell.key)
    if o is None:
        return None, "not run"
    if o.status in ("ran", "reused"):
        return cell, ""
    return None, o.reason


def _read(step: Step, kind: str) -> Dict[str, Any]:
    if kind == "build":
        return read_json(step.out / MANIFEST)
    if kind == "compress":
        return read_json(step.json)
    return read_json(step.out)


def _stamp_run(plan: Plan, step: Step) -> Optional[str]:
    s = plan.stamp(step)
    return read_json(s).get("run_id") if s.is_file() else None


def latency_cell(plan: Plan, cell: Cell, outcomes: Dict[str, Outcome]) -> Dict[str, Any]:
    step, reason = _state(cell, outcomes)
    if step is None:
        o = outcomes.get(cell.key) if not isinstance(cell, str) else None
        if o is not None and o.gate_failed:  # a wrong program or engine: FAILED, never a latency
            return {"failed": reason}
        return {"not_measured": reason}
    data = _read(step, step.kind)
    out = {k: data.get(k) for k in BENCH_KEYS if data.get(k) is not None}
    if step.kind == "collect":
        out["source"] = f"result file {step.spec['file']}"
        out["run_id"] = None  # measured elsewhere, at another time
    else:
        out["source"] = str(step.out)
        out["run_id"] = _stamp_run(plan, step)
    return out


def metrics_of(plan: Plan, model: str, method: str, outcomes: Dict[str, Outcome]) -> Dict[str, Any]:
    """top1 / params / gflops / size_mb (+ reference accuracies) of a (model, method), or why not."""
    step, reason = _state(plan.metrics[(model, method)], outcomes)
    if step is None:
        return {"not_measured": reason}
    data = _read(step, step.kind)
    keys = ("top1", "params", "gflops", "size_mb", "baseline_top1", "baseline_params", "baseline_size_mb",
            "fp32_top1", "agreement")
    return {**{k: data[k] for k in keys if data.get(k) is not None}, "source": f"{step.kind} {step.out}"}


def size_of(plan: Plan, model: str, method: str, outcomes, metrics: Dict[str, Any]) -> Dict[str, Any]:
    """Size of the shipped program (the Android .pte) when built, else the model's own size."""
    step, reason = _state(plan.builds[(model, method)], outcomes)
    if step is not None:
        man = _read(step, "build")
        if man.get("size_mb") is not None:
            return {"size_mb": man["size_mb"], "size_source": "android build (.pte)", "build_top1": man.get("top1"),
                    "build_agreement": man.get("agreement")}
    if metrics.get("size_mb") is not None:
        return {"size_mb": metrics["size_mb"], "size_source": "model weights (" + metrics["source"].split()[0] + ")"}
    return {"size_not_measured": reason or metrics.get("not_measured", "no size reported")}


def speedups(rows: List[Dict[str, Any]], columns: List[str], baseline: Optional[str]) -> List[Dict[str, Any]]:
    """Baseline / method ratios per model, only between numbers from the same run on the same device."""
    out = []
    for row in rows:
        if baseline is None or row["method"] == baseline:
            continue
        base = next((r for r in rows if r["model"] == row["model"] and r["method"] == baseline), None)
        if base is None:
            continue
        entry: Dict[str, Any] = {"model": row["model"], "method": row["method"], "method_label": row["method_label"],
                                 "vs": baseline, "size": None, "latency": {}, "why_not": {}}
        if row.get("size_mb") and base.get("size_mb") and row.get("size_source") == base.get("size_source"):
            entry["size"] = base["size_mb"] / row["size_mb"]
        for col in columns:
            a, b = base["latency"][col], row["latency"][col]
            if "median_ms" not in a or "median_ms" not in b:
                entry["latency"][col] = None
                entry["why_not"][col] = "not measured"
            elif a.get("run_id") != b.get("run_id") or a.get("device") != b.get("device"):
                entry["latency"][col] = None
                entry["why_not"][col] = "different runs or devices"
            else:
                entry["latency"][col] = a["median_ms"] / b["median_ms"]
        out.append(entry)
    return out


def accuracy_tables(plan: Plan, outcomes: Dict[str, Outcome]) -> List[Dict[str, Any]]:
    tables = []
    for t in plan.config.accuracy:
        rows = []
        for model in plan.config.models:
            for mid in t.methods:
                m = plan.config.method(mid)
                rows.append({"model": model.name, "model_label": model.label, "method": mid, "method_label": m.label,
                             "prec": m.precision, **metrics_of(plan, model.name, mid, outcomes)})
        tables.append({"id": t.id, "title": t.title, "kind": t.kind, "rows": rows})
    return tables


def collect(plan: Plan, outcomes: Dict[str, Outcome], run: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The whole results document for `plan` after `run_plan` returned `outcomes`."""
    cfg = plan.config
    rows = []
    for model in cfg.models:
        for mid in cfg.table4:
            m = cfg.method(mid)
            metrics = metrics_of(plan, model.name, mid, outcomes)
            size = size_of(plan, model.name, mid, outcomes, metrics)
            if m.build_options():  # the build changed the model (e.g. precision = "q8"): its own top-1 is the program's
                top1, model_size = size.get("build_top1"), None
            else:
                top1, model_size = metrics.get("top1"), metrics.get("size_mb")
            rows.append({
                "model": model.name, "model_label": model.label, "method": mid, "method_label": m.label,
                "prec": m.precision,
                **size,
                "top1": top1,
                "model_size_mb": model_size,
                "params": metrics.get("params"),
                "latency": {col: latency_cell(plan, plan.cells[(model.name, mid, col)], outcomes)
                            for col in plan.columns},
            })
    counts: Dict[str, int] = {}
    for o in outcomes.values():
        counts[o.status] = counts.get(o.status, 0) + 1
    return {
        "schema": SCHEMA,
        "name": cfg.name,
        "run": {**(run or {}), "host": platform.node(), "cpu": _cpu(), "collected": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "loadavg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None},
        "settings": {"iterations": cfg.settings.iterations, "warmup": cfg.settings.warmup,
                     "threads": cfg.settings.threads},
        "columns": [{"id": c, "label": column_label(c)} for c in plan.columns],
        "baseline": cfg.baseline,
        "rows": rows,
        "speedups": speedups(rows, plan.columns, cfg.baseline),
        "accuracy": accuracy_tables(plan, outcomes),
        "steps": counts,
    }


def _cpu() -> Optional[str]:
    """This machine's CPU as the benchmarks describe it (lscpu model and flags), for the host column."""
    try:
        from ..measure.host import cpu_line, lscpu

        return cpu_line(lscpu())
    except Exception:  # the description is a courtesy; a table never fails for it
        return None


def load_results(path) -> Dict[str, Any]:
    data = read_json(Path(path))
    if data.get("schema") != SCHEMA:
        from ..errors import DeployError

        raise DeployError(f"{path}: not a table results file (schema {data.get('schema')!r}, want {SCHEMA}).")
    return data
