"""Built programs side by side: what a harness config built, timed in interleaved rounds, with each one's
closeness to its model, delegation, size and (host) operator profile; one record and one Markdown table.

    plan = make_plan(config, work)
    run_plan(without_benches(plan))                    # compress + build (reused when done), no sequential timing
    rows = program_records(plan, bench_rounds({...}))  # {label: record}, record keys as in FIELDS
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

from ..errors import DeployError
from ..io import read_json
from .plan import Plan

FIELDS = ("dir", "model", "precision", "delegate_layernorm", "build_s", "agreement", "sqnr_db", "min_cosine",
          "delegated_fraction", "delegate_segments", "size_mb", "params_m", "gflops", "median_ms", "ratio",
          "ratio_min", "ratio_max", "op_profile")


def without_benches(plan: Plan) -> Plan:
    """The plan's steps less its latency runs (timed separately, in rounds)."""
    return dataclasses.replace(plan, steps=[s for s in plan.steps if s.kind != "bench"])


def built(plan: Plan, outcomes: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """{method label: Android build step} of the config's first model, in Table 4's method order; a program
    that was not built is a DeployError naming why (from `run_plan`'s `outcomes` when given)."""
    model = plan.config.models[0].name
    out = {}
    for mid in plan.config.table4:
        step = plan.builds[(model, mid)]
        if isinstance(step, str) or not plan.is_done(step):
            why = step if isinstance(step, str) else getattr((outcomes or {}).get(step.key), "reason", "") or "not built"
            raise DeployError(f"{mid}: no built program ({why})")
        out[plan.config.method(mid).label] = step
    return out


def program_records(plan: Plan, rounds: Dict[str, Any], op_profile_runs: Optional[int] = None) -> Dict[str, Dict]:
    """One record per built program (keys FIELDS): its manifest, its model's metrics, its rounds' summary and,
    with `op_profile_runs`, its ETDump operator profile on this host."""
    model = plan.config.models[0].name
    records = {}
    for label, step in built(plan).items():
        man = read_json(step.out / "manifest.json")
        ver, opts = man.get("verification") or {}, step.spec.get("options") or {}
        metrics_step = plan.metrics[(model, step.method)]
        met = read_json(metrics_step.json or metrics_step.out)
        s = rounds["summary"][label]
        rec = {"dir": str(step.out), "model": step.method, "precision": man.get("precision"),
               "delegate_layernorm": bool(opts.get("delegate_layernorm")),
               "build_s": read_json(plan.stamp(step)).get("seconds"), "agreement": man.get("agreement"),
               "sqnr_db": ver.get("sqnr_db"), "min_cosine": ver.get("min_cosine"),
               "delegated_fraction": man.get("delegated_fraction"),
               "delegate_segments": (man.get("delegation") or {}).get("segments"), "size_mb": man.get("size_mb"),
               "params_m": met["params"] / 1e6, "gflops": met["gflops"], "median_ms": s["median_ms"],
               "ratio": s["ratio_median"], "ratio_min": s["ratio_min"], "ratio_max": s["ratio_max"]}
        if op_profile_runs:
            from ..backends.executorch.op_profile import op_profile

            rec["op_profile"] = op_profile(step.out, runs=op_profile_runs)
        records[label] = rec
    return records


def _f(v, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def programs_markdown(programs: Dict[str, Dict[str, Any]]) -> str:
    """The side-by-side table (ratios to the first program, min-max over rounds)."""
    lines = ["| program | params (M) | GFLOPs | median (ms) | x first | min-max | agreement | SQNR (dB) "
             "| delegate segments | ops delegated | time outside XNNPACK | largest portable ops (ms) | size (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for label, p in programs.items():
        prof = p.get("op_profile") or {}
        ops = ", ".join(f"{k} {v:.2f}" for k, v in list((prof.get("non_delegated_by_op_ms") or {}).items())[:3])
        share = prof.get("non_delegated_share")
        lines.append(f"| {label} | {p['params_m']:.2f} | {p['gflops']:.3f} | {p['median_ms']:.2f} | {p['ratio']:.3f} "
                     f"| {_f(p['ratio_min'], '.3f')}-{_f(p['ratio_max'], '.3f')} | {p['agreement']} | "
                     f"{_f(p['sqnr_db'], '.1f')} | {p['delegate_segments']} | {p['delegated_fraction']} "
                     f"| {'' if share is None else f'{100 * share:.1f} %'} | {ops} | {p['size_mb']} |")
    return "\n".join(lines) + "\n"
