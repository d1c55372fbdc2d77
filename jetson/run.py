"""On the Jetson: build the bundle's engines, time them, write `results/<precision>.json`.

    python3 jetson/run.py                 # in the folder `deploy build --target jetson` wrote

Needs only python3 + tensorrt + pycuda + numpy (JetPack). For each precision it builds the
engine with the version-adaptive builder (timing cache shared), times it with CUDA events
(warm-up, N iterations, median/p90/p99), optionally with trtexec too, records the power mode
and clock state, and writes the same JSON schema as `deploy bench` on other targets.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional

try:
    from ..backends.tensorrt import engine as trt_engine
    from ..benchmark import BenchResult, summarize
    from . import clocks, cuda_bench, trtexec
except ImportError:  # standalone on the Jetson: sibling files of this script
    import clocks  # type: ignore[no-redef]
    import cuda_bench  # type: ignore[no-redef]
    import engine as trt_engine  # type: ignore[no-redef]
    import trtexec  # type: ignore[no-redef]
    from benchmark import BenchResult, summarize  # type: ignore[no-redef]

BUNDLE_FILE = "bundle.json"  # written by `deploy build --target jetson` next to this script


def read_bundle(bundle_dir: str) -> Dict[str, Any]:
    path = os.path.join(bundle_dir, "jetson", BUNDLE_FILE)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise SystemExit(f"{path} not found: pass the folder written by `deploy build --target jetson`.") from None


def onnx_for(bundle: Dict[str, Any], precision: str, trt_major: int) -> str:
    """INT8: the Q/DQ ONNX. FP16: FP32 ONNX + FP16 flag (weak typing), the FP16 ONNX on 11 (strong typing)."""
    onnx = bundle["onnx"]
    if precision == "fp16" and (trt_major >= 11 or "fp32" not in onnx):
        return onnx["fp16"]
    return onnx["fp32" if precision == "fp16" else precision]


def _write_json(path: str, data: Dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def bench_precision(bundle_dir: str, precision: str, iterations: int, warmup: int, use_trtexec: bool,
                    workspace_mb: int = 1024, rebuild: bool = False, power: Optional[Dict[str, Any]] = None) -> BenchResult:
    """Build (unless already built) and time one precision's engine; returns the BenchResult."""
    import tensorrt as trt

    bundle = read_bundle(bundle_dir)
    major = trt_engine.parse_version(trt.__version__)[0]
    onnx = os.path.join(bundle_dir, onnx_for(bundle, precision, major))
    engines = os.path.join(bundle_dir, "engines")
    engine_path = os.path.join(engines, f"{bundle['name']}_{precision}.engine")
    build: Dict[str, Any] = {"reused": True}
    if rebuild or not os.path.isfile(engine_path):
        build = trt_engine.build_engine(onnx, engine_path, precision, workspace_mb=workspace_mb,
                                        timing_cache=os.path.join(engines, "timing.cache"))
    timed = cuda_bench.time_engine(engine_path, iterations, warmup)
    stats = summarize(timed["times_ms"])
    power = power if power is not None else clocks.check_power_state()
    extra: Dict[str, Any] = {"precision": precision, "onnx": os.path.basename(onnx), "tensorrt": trt.__version__,
                             "build": build, "power": power, "timer": "pycuda CUDA events, batch 1, device buffers"}
    exe = trtexec.find_trtexec() if use_trtexec else None
    if exe:
        shapes = trtexec.shapes_arg(bundle["input"]["name"], [1, *bundle["input"]["shape"]])
        log = os.path.join(bundle_dir, "results", f"trtexec_{precision}.log")
        os.makedirs(os.path.dirname(log), exist_ok=True)
        extra["trtexec"] = trtexec.parse_output(trtexec.run(trtexec.time_command(exe, engine_path, shapes), log))
    elif use_trtexec:
        extra["trtexec"] = "trtexec not found (looked on PATH and /usr/src/tensorrt/bin)"
    return BenchResult(target="jetson", artifact=engine_path, device=f"{clocks.describe_device()}, "
                       f"nvpmodel {power.get('power_mode')}", iterations=iterations, warmup=warmup, threads=None,
                       load_ms=timed["load_ms"], size_mb=os.path.getsize(engine_path) / 1e6, extra=extra, **stats)


def main(argv: Optional[List[str]] = None) -> int:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", nargs="?", default=here, help="the bundle folder (default: this script's parent)")
    p.add_argument("--precisions", default="int8,fp16", help="comma list of int8, fp16, fp32 (default int8,fp16)")
    p.add_argument("--iterations", "-n", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--no-trtexec", action="store_true", help="skip the trtexec cross-check")
    p.add_argument("--workspace-mb", type=int, default=1024)
    p.add_argument("--rebuild", action="store_true", help="rebuild engines even if present")
    args = p.parse_args(argv)
    power = clocks.check_power_state()
    for w in power["warnings"]:
        print(f"WARNING: {w}", file=sys.stderr)
    for precision in [s.strip() for s in args.precisions.split(",") if s.strip()]:
        r = bench_precision(args.bundle, precision, args.iterations, args.warmup, not args.no_trtexec,
                            args.workspace_mb, args.rebuild, power)
        out = os.path.join(args.bundle, "results", f"{precision}.json")
        _write_json(out, r.to_dict())
        print(f"{precision}: median {r.median_ms:.3f} ms, p90 {r.p90_ms:.3f}, p99 {r.p99_ms:.3f} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
