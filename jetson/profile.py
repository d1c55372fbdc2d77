"""On the Jetson: time every cell of a cost-table bundle with trtexec; write the table to copy back.

    python3 jetson/profile.py            # in the folder `deploy profile --target jetson` wrote

Standard library + trtexec only (JetPack's /usr/src/tensorrt/bin/trtexec). `jetson/profile.json`
lists the cells (each encoder-Linear shape of the model, dense and as rank-r pairs, in FP32, FP16
and INT8 Q/DQ) and the whole dense model. For each, trtexec builds an engine (the precision flags
of `engine.precision_plan`, as `jetson/run.py` builds the model's own engines; one timing cache;
engines kept, so a second run only times), then every engine is timed with trtexec (CUDA graph,
no host transfers, spin-wait) in interleaved rounds, the order rotated each round (`rounds.py`,
the host profiler's protocol). Each cell keeps the median over rounds of trtexec's median latency,
its min-max over rounds and the fastest call (`best_ms`). The result, `results/cost_table.json`,
is the host's cost-table format with target "jetson": copy it back and pass it to
`deploy compress --target jetson --cost-table results/cost_table.json`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

try:
    from . import clocks, trtexec
    from .engine import precision_plan
    from ..measure.rounds import interleaved, summarize_rounds
except ImportError:  # standalone on the Jetson: sibling files of this script
    import clocks  # type: ignore[no-redef]
    import trtexec  # type: ignore[no-redef]
    from engine import precision_plan  # type: ignore[no-redef]
    from rounds import interleaved, summarize_rounds  # type: ignore[no-redef]

PROFILE_FILE = "profile.json"  # written by `deploy profile --target jetson` next to this script
OUT = os.path.join("results", "cost_table.json")
VERSION_HEADERS = ("/usr/include/aarch64-linux-gnu/NvInferVersion.h", "/usr/include/x86_64-linux-gnu/NvInferVersion.h",
                   "/usr/include/NvInferVersion.h")


CELL_KEYS = ("name", "shape", "form", "rank", "precision", "onnx", "input")  # of each profile.json cell
WHOLE_KEYS = ("name", "form", "precision", "onnx", "input")  # of each whole-model entry


class ProfileError(Exception):
    """A problem the user can fix (missing bundle, no trtexec, an engine trtexec cannot build): one line."""


def read_profile(bundle_dir: str) -> Dict[str, Any]:
    path = os.path.join(bundle_dir, "jetson", PROFILE_FILE)
    try:
        with open(path) as f:
            prof = json.load(f)
    except FileNotFoundError:
        raise ProfileError(f"{path} not found: pass the folder written by `deploy profile --target jetson`.") from None
    except ValueError as e:
        raise ProfileError(f"{path}: not JSON ({e}); copy the bundle again.") from None
    if not isinstance(prof, dict) or prof.get("target") != "jetson" or not isinstance(prof.get("cells"), list):
        raise ProfileError(f"{path}: not a Jetson cost-table bundle (write one with `deploy profile --target jetson`).")
    whole = prof.get("whole") or {}
    entries = [(c, CELL_KEYS) for c in prof["cells"]] + [(w, WHOLE_KEYS) for w in whole.values()]
    if not isinstance(whole, dict) or not isinstance(prof.get("shapes"), dict) or not isinstance(prof.get("forms"), list):
        entries.append(({}, ("shapes", "forms", "whole")))
    for c, keys in entries:
        missing = [k for k in keys if not isinstance(c, dict) or k not in c]
        if missing:
            raise ProfileError(f"{path}: an entry lacks {', '.join(missing)}: the bundle was edited or truncated; write "
                               "it again with `deploy profile --target jetson`.")
        if not os.path.isfile(os.path.join(bundle_dir, c["onnx"])):
            raise ProfileError(f"{c['onnx']}: missing from the bundle; copy the whole folder `deploy profile --target "
                               "jetson` wrote.")
    return prof


def trt_version(exe: str, given: Optional[str] = None, headers: Sequence[str] = VERSION_HEADERS) -> str:
    """TensorRT's version: `given`, else trtexec's own banner (`--help`), else NvInferVersion.h."""
    if given:
        return given
    try:  # trtexec's banner `&&&& RUNNING TensorRT.trtexec [TensorRT v8502]` (its exit status does not matter)
        proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60, check=False)
        text = proc.stdout + proc.stderr
    except (OSError, subprocess.SubprocessError):
        text = ""
    v = trtexec.parse_output(text).get("tensorrt")
    if v:
        return v
    for h in headers:
        try:
            src = open(h).read()
        except OSError:
            continue
        parts = [re.search(rf"#define NV_TENSORRT_{k}\s+(\d+)", src) for k in ("MAJOR", "MINOR", "PATCH")]
        if all(parts):
            return ".".join(m.group(1) for m in parts)  # type: ignore[union-attr]
    raise ProfileError("cannot tell the TensorRT version (trtexec printed none, no NvInferVersion.h); "
                       "pass --trt-version, e.g. --trt-version 8.5.2.")


def engine_name(name: str) -> str:
    """`768x3072@197/w8/r96` -> a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".engine"


def build_cell(exe: str, bundle_dir: str, cell: Dict[str, Any], version: str, engines: str, rebuild: bool,
               strongly_typed: Optional[bool], run: Callable = trtexec.run) -> Optional[str]:
    """Build the engine of one cell (or whole model) with trtexec; its path, or None when this TensorRT
    cannot build that form (FP16 from an FP32 ONNX under strong typing)."""
    plan = precision_plan(version, cell["precision"], strongly_typed)
    onnx_kind = "int8" if cell["precision"] == "int8" else "fp32"
    if plan.onnx != onnx_kind:
        return None  # strongly typed FP16 needs an FP16 ONNX; the bundle's cells are FP32 (Xavier's 8.5 is weak)
    path = os.path.join(engines, engine_name(cell["name"]))
    if os.path.isfile(path) and not rebuild:
        return path
    shapes = trtexec.shapes_arg("input", cell["input"])
    partial = f"{path}.partial{os.getpid()}"  # an interrupted build leaves no engine a later run would reuse
    cmd = trtexec.build_command(exe, os.path.join(bundle_dir, cell["onnx"]), partial, cell["precision"], shapes,
                                timing_cache=os.path.join(engines, "timing.cache"),
                                version_major=plan.version[0], strongly_typed=plan.strongly_typed,
                                fp32_layers=(cell.get("layernorm_nodes") or ()) if plan.fp32_tag else ())
    try:
        run(cmd, os.path.join(engines, engine_name(cell["name"]) + ".build.log"))
    except RuntimeError as e:
        raise ProfileError(f"{cell['name']}: trtexec could not build its engine: {str(e).splitlines()[0]} "
                           f"(log: {path}.build.log)") from None
    if not os.path.isfile(partial):
        raise ProfileError(f"{cell['name']}: trtexec exited 0 but wrote no engine at {partial}.")
    os.replace(partial, path)
    return path


def time_engine(exe: str, engine: str, cell: Dict[str, Any], iterations: int, warmup_ms: int, log: str,
                run: Callable = trtexec.run) -> Dict[str, float]:
    """One trtexec timing run of an engine: {"median_ms", "min_ms"} of its latency."""
    shapes = trtexec.shapes_arg("input", cell["input"])
    parsed = trtexec.parse_output(run(trtexec.time_command(exe, engine, shapes, warmup_ms, iterations,
                                                           min(iterations, 100)), log))
    lat = parsed.get("latency") or parsed.get("gpu_compute") or {}
    if "median" not in lat:
        raise ProfileError(f"{cell['name']}: trtexec printed no latency summary (log: {log}).")
    return {"median_ms": float(lat["median"]), "min_ms": float(lat.get("min", lat["median"]))}


def assemble(prof: Dict[str, Any], summary: Dict[str, Dict[str, Any]], best: Dict[str, float], skipped: List[str],
             device: Dict[str, Any], versions: Dict[str, str], protocol: Dict[str, Any],
             meta: Dict[str, Any]) -> Dict[str, Any]:
    """The cost table (the host's `measure.costs.CostTable` JSON) of the timed cells."""
    def stat(name: str) -> Dict[str, Any]:
        v = summary[name]
        return {"median_ms": v["median_ms"], "min_ms": v["min_ms"], "max_ms": v["max_ms"], "best_ms": best.get(name),
                "fp32_ratio": v.get("ratio_median")}

    shapes: Dict[str, Dict[str, Any]] = {k: {**v, "forms": {}} for k, v in prof["shapes"].items()}
    for c in prof["cells"]:
        if c["name"] not in summary:
            continue
        entry = shapes[c["shape"]]["forms"].setdefault(c["form"], {"dense": None, "ranks": [], "pairs": {}})
        if c["rank"] is None:
            entry["dense"] = stat(c["name"])
        else:
            entry["ranks"].append(int(c["rank"]))
            entry["pairs"][str(c["rank"])] = stat(c["name"])
    for v in shapes.values():  # a form whose dense cell was skipped cannot price anything
        v["forms"] = {f: e for f, e in v["forms"].items() if e["dense"] is not None}
    whole = {form: {k: v for k, v in stat(w["name"]).items() if k != "fp32_ratio"}
             for form, w in prof.get("whole", {}).items() if w["name"] in summary}
    meta = {**meta, "model": prof.get("model"), "skipped": skipped}
    return {"format": prof["format"], "target": "jetson", "threads": 1, "cpu": device, "versions": versions,
            "runtime": f"TensorRT {versions.get('tensorrt')} (trtexec)", "protocol": protocol, "meta": meta,
            "shapes": shapes, **({"whole_ms": whole} if whole else {})}


def profile(bundle_dir: str, exe: str, version: str, rounds: int = 3, iterations: int = 200, warmup_ms: int = 500,
            forms: Optional[Sequence[str]] = None, rebuild: bool = False, strongly_typed: Optional[bool] = None,
            run: Callable = trtexec.run, out: Optional[str] = None, say: Callable[[str], None] = print,
            prof: Optional[Dict[str, Any]] = None, power: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Build and time every cell of the bundle; write the table to `out` (default results/cost_table.json).
    `prof` / `power`: the bundle's profile.json and the device's power state, when the caller has read them."""
    prof = read_profile(bundle_dir) if prof is None else prof
    forms = list(forms or prof["forms"])
    unknown = [f for f in forms if f not in prof["forms"]]
    if unknown:
        raise ProfileError(f"--forms {' '.join(unknown)}: this bundle has {', '.join(prof['forms'])}.")
    todo = [c for c in prof["cells"] if c["form"] in forms] + [w for f, w in prof.get("whole", {}).items() if f in forms]
    engines = os.path.join(bundle_dir, "engines")
    logs = os.path.join(bundle_dir, "results", "logs")
    os.makedirs(engines, exist_ok=True)
    os.makedirs(logs, exist_ok=True)
    t0 = time.time()
    built: Dict[str, str] = {}
    skipped: List[str] = []
    for i, c in enumerate(todo, 1):
        path = build_cell(exe, bundle_dir, c, version, engines, rebuild, strongly_typed, run)
        if path is None:
            skipped.append(c["name"])
        else:
            built[c["name"]] = path
        say(f"build {i}/{len(todo)} {c['name']} ({time.time() - t0:.0f} s, {i / max(time.time() - t0, 1e-9):.2f}/s)")
    by_name = {c["name"]: c for c in todo}
    best: Dict[str, float] = {}
    done = [0]

    def time_one(name: str) -> float:
        r = time_engine(exe, built[name], by_name[name], iterations, warmup_ms,
                        os.path.join(logs, engine_name(name) + ".time.log"), run)
        best[name] = min(best.get(name, r["min_ms"]), r["min_ms"])
        done[0] += 1
        say(f"time {done[0]}/{len(built) * rounds} {name}: {r['median_ms']:.4f} ms")
        return r["median_ms"]
    names = list(built)
    timed = interleaved(names, time_one, rounds)  # one round times every engine of the bundle
    summary: Dict[str, Dict[str, Any]] = {}
    for group in dict.fromkeys(n.rsplit("/", 1)[0] if n.startswith("whole/") else n.split("/", 1)[0] for n in names):
        members = [n for n in names if n.startswith(group + "/")]  # a shape's cells, or the whole models
        baseline = f"{group}/fp32" if f"{group}/fp32" in members else members[0]  # ratios within the same round
        summary.update(summarize_rounds([{n: r[n] for n in members if n in r} for r in timed["rounds"]], baseline))
    power = clocks.check_power_state() if power is None else power
    device = {"model_name": clocks.describe_device(), "power_mode": power.get("power_mode"),
              "clocks_pinned": power.get("pinned")}
    protocol = {"rounds": rounds, "iterations": iterations, "warmup_ms": warmup_ms, "forms": forms,
                "rank_fractions": prof.get("rank_fractions"), "timer": "trtexec --loadEngine --useCudaGraph "
                "--noDataTransfers --useSpinWait; per round trtexec's median latency; rounds interleaved, order "
                "rotated; median and min-max over rounds", "cell": "one engine per cell ONNX: layer(x) on a "
                "(1, tokens, in) input; w8: Q/DQ per-tensor activations, int8 per-channel weights"}
    meta = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "profile_s": round(time.time() - t0, 1),
            "cells": len(built), "power": power}
    table = assemble(prof, summary, best, skipped, device, {"tensorrt": version}, protocol, meta)
    out = out or os.path.join(bundle_dir, OUT)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(table, f, indent=2)
        f.write("\n")
    os.replace(tmp, out)
    return table


def main(argv: Optional[Sequence[str]] = None) -> int:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", nargs="?", default=here, help="the bundle folder (default: this script's parent)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default: the bundle's, else 3)")
    p.add_argument("--iterations", "-n", type=int, default=None,
                   help="trtexec --iterations per timing (default: the bundle's, else 200)")
    p.add_argument("--warmup-ms", type=int, default=500, help="trtexec --warmUp per timing, ms (default 500)")
    p.add_argument("--forms", nargs="+", default=None, help="forms to time (default: the bundle's)")
    p.add_argument("--trtexec", default=None, metavar="PATH", help="trtexec (default: on PATH or /usr/src/tensorrt/bin)")
    p.add_argument("--trt-version", default=None, help="TensorRT version when trtexec does not print it, e.g. 8.5.2")
    p.add_argument("--strongly-typed", action="store_true", help="TensorRT 10: strongly typed networks")
    p.add_argument("--rebuild", action="store_true", help="rebuild engines even if present")
    p.add_argument("--out", default=None, help=f"the table (default: BUNDLE/{OUT})")
    args = p.parse_args(argv)
    try:  # the bundle, its defaults, the counts, then trtexec: all before any warning about the device
        prof = read_profile(args.bundle)
        defaults = prof.get("defaults") if isinstance(prof.get("defaults"), dict) else {}

        def default(key: str, fallback: int) -> int:  # what `deploy profile --rounds/--iterations` wrote
            v = defaults.get(key, fallback)
            return v if isinstance(v, int) and not isinstance(v, bool) else fallback
        args.rounds = args.rounds if args.rounds is not None else default("rounds", 3)
        args.iterations = args.iterations if args.iterations is not None else default("iterations", 200)
        for flag, v, low in (("--rounds", args.rounds, 1), ("--iterations", args.iterations, 1),
                             ("--warmup-ms", args.warmup_ms, 0)):
            if v < low:
                raise ProfileError(f"{flag} {v}: must be at least {low}.")
        exe = args.trtexec or trtexec.find_trtexec()
        if not exe or not os.path.isfile(exe):
            raise ProfileError(f"trtexec not found ({args.trtexec or 'PATH, ' + ', '.join(trtexec.TRTEXEC_PATHS)}); "
                               "pass --trtexec PATH.")
        power = clocks.check_power_state()
        for w in power["warnings"]:
            print(f"WARNING: {w}", file=sys.stderr)
        table = profile(args.bundle, exe, trt_version(exe, args.trt_version), args.rounds, args.iterations,
                        args.warmup_ms, args.forms, args.rebuild, True if args.strongly_typed else None, out=args.out,
                        prof=prof, power=power)
    except ProfileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only folder: the table is written atomically, so nothing half-written
        print(f"error: {e.filename or ''}: {e.strerror or e} (engines built so far are kept; no table written)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: engines built so far are kept; run again to go on (no table written).", file=sys.stderr)
        return 130
    print(f"cost table: {len(table['shapes'])} shapes, {table['meta']['cells']} engines, "
          f"{table['meta']['profile_s']} s -> {args.out or os.path.join(args.bundle, OUT)}")
    if table["meta"]["skipped"]:
        print(f"skipped (this TensorRT cannot build them from the bundle's ONNX): {len(table['meta']['skipped'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
