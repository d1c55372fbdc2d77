"""On the Jetson: build the bundle's engines, check their outputs, time them, write `results/<precision>.json`.

    python3 jetson/run.py                 # in the folder `deploy build --target jetson` wrote

Needs only python3 + tensorrt + pycuda + numpy (JetPack). For each precision it builds the
engine with the version-adaptive builder (timing cache shared), runs the bundled verification
images through it and compares its logits with the ones the host computed (the PyTorch
simulator for INT8, the float model for FP16/FP32: agreement, SQNR, cosine, against the gates
in `jetson/bundle.json`), times it with CUDA events (warm-up, N iterations, median/p90/p99),
optionally with trtexec too, records the power mode and clock state, and writes the same JSON
schema as `deploy bench` on other targets. It exits with status 2 when an engine fails its
output gates (NaN/inf logits always do); the result is still written, for inspection, with
`extra.verification.passed = false`, and `deploy bench --target jetson` and `deploy table` refuse
it: a wrong engine's latency never enters a table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Callable, Dict, Optional, Sequence, Union

try:
    from . import engine as trt_engine
    from ..benchmark import BenchResult, summarize
    from ..measure import closeness
    from . import clocks, cuda_bench, trtexec
except ImportError:  # standalone on the Jetson: sibling files of this script
    import clocks  # type: ignore[no-redef]
    import closeness  # type: ignore[no-redef]
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


def onnx_for(bundle: Dict[str, Any], precision: str, trt_version: Union[int, str],
             strongly_typed: Optional[bool] = None) -> str:
    """The bundle ONNX an engine of `precision` is built from on TensorRT `trt_version` (see `engine.precision_plan`).

    INT8: the Q/DQ ONNX. FP16: the FP32 ONNX + FP16 flag under weak typing (8.5, 10.x default),
    the FP16 ONNX under strong typing (10.x `strongly_typed`, always on 11). `trt_version` is a
    version string or, as before, the major version alone.
    """
    version = f"{trt_version}.0" if isinstance(trt_version, int) else str(trt_version)
    want = trt_engine.precision_plan(version, precision, strongly_typed).onnx
    onnx = bundle["onnx"]
    if want not in onnx:
        raise SystemExit(f"the bundle has no {want.upper()} ONNX, which a {precision} engine on TensorRT {version} "
                         f"needs (bundle: {sorted(onnx)}); rebuild it on the host with the FP16 ONNX enabled.")
    return onnx[want]


# ---- output checks: lraqvit_deploy/measure/closeness.py (numpy only), shipped beside this file -----

def verification_data(bundle_dir: str, bundle: Dict[str, Any], precision: str):
    """(images, reference logits, labels or None, gates, what the reference is) for `precision`, or None."""
    import numpy as np

    v = bundle.get("verify")
    if not v or precision not in v.get("reference", {}):
        return None
    images = np.load(os.path.join(bundle_dir, v["images"]))
    ref = np.load(os.path.join(bundle_dir, v["reference"][precision]))
    labels = np.load(os.path.join(bundle_dir, v["labels"])) if v.get("labels") else None
    return images, ref, labels, v["gates"][precision], v["reference_is"][precision]


def verify_outputs(bundle_dir: str, precision: str, infer: Callable[[Any], Any], runner: str,
                   bundle: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
    """Run the bundled images through `infer` (images -> logits), compare with the bundled reference.

    On the Jetson `infer` is the TensorRT engine (`cuda_bench.run_engine`); `runner` names what
    ran, so a result never claims to be TensorRT when it was not. None if the bundle carries no
    verification data for `precision`.
    """
    bundle = bundle if bundle is not None else read_bundle(bundle_dir)
    data = verification_data(bundle_dir, bundle, precision)
    if data is None:
        return None
    images, ref, labels, gates, what = data
    metrics = closeness.compare_logits(infer(images), ref, labels)
    # agreement is gated on real labelled images only: a random model's logits are near-tied
    failed = closeness.gate_problems(metrics, gates, agreement_needs_labels=True)
    return {"runner": runner, "reference": what, **metrics, "gates": gates, "passed": not failed, "failed": failed}


def _json_safe(obj: Any) -> Any:
    """NaN/inf floats as null (strict JSON has neither); the verdict (`passed`, `failed`) says what they were."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def gate_failure(result: Dict[str, Any]) -> Optional[str]:
    """Why a result (a `BenchResult.to_dict()` this script wrote) is not a latency of a correct engine, or None.

    A result whose engine failed its output gates is still written (for inspection), with
    `extra.verification.passed = false`; `deploy bench --target jetson` and the table harness
    refuse it with this reason.
    """
    v = (result.get("extra") or {}).get("verification") if isinstance(result.get("extra"), dict) else None
    if isinstance(v, dict) and v.get("passed") is not True:
        why = "; ".join(str(f) for f in (v.get("failed") or [])) or "passed is not true"
        return f"the engine failed its output gates on the device ({why})"
    return None


def _write_json(path: str, data: Dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(_json_safe(data), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def bench_precision(bundle_dir: str, precision: str, iterations: int, warmup: int, use_trtexec: bool,
                    workspace_mb: int = 1024, rebuild: bool = False, power: Optional[Dict[str, Any]] = None,
                    verify: bool = True, strongly_typed: Optional[bool] = None) -> BenchResult:
    """Build (unless already built), verify and time one precision's engine; returns the BenchResult."""
    import tensorrt as trt

    bundle = read_bundle(bundle_dir)
    onnx = os.path.join(bundle_dir, onnx_for(bundle, precision, trt.__version__, strongly_typed))
    engines = os.path.join(bundle_dir, "engines")
    engine_path = os.path.join(engines, f"{bundle['name']}_{precision}.engine")
    build: Dict[str, Any] = {"reused": True}
    if rebuild or not os.path.isfile(engine_path):
        build = trt_engine.build_engine(onnx, engine_path, precision, workspace_mb=workspace_mb,
                                        timing_cache=os.path.join(engines, "timing.cache"),
                                        strongly_typed=strongly_typed)
    extra: Dict[str, Any] = {"precision": precision, "onnx": os.path.basename(onnx), "tensorrt": trt.__version__,
                             "build": build}
    if verify:
        extra["verification"] = verify_outputs(
            bundle_dir, precision, lambda x: cuda_bench.run_engine(engine_path, x),
            f"TensorRT {trt.__version__} engine {os.path.basename(engine_path)} (pycuda, batch 1)", bundle)
    timed = cuda_bench.time_engine(engine_path, iterations, warmup)
    stats = summarize(timed["times_ms"])
    power = power if power is not None else clocks.check_power_state()
    extra.update({"power": power, "timer": "pycuda CUDA events, batch 1, device buffers"})
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


def describe_verification(v: Optional[Dict[str, Any]]) -> str:
    if v is None:
        return "no verification data in the bundle"
    top1 = f", top-1 {v['top1']:.2f}% (reference {v['top1_reference']:.2f}%)" if v.get("top1") is not None else ""
    verdict = "PASSED" if v["passed"] else "FAILED: " + "; ".join(v["failed"])
    return (f"{v['n_images']} images vs {v['reference']}: agreement {100 * v['agreement']:.2f}%, "
            f"SQNR {closeness.format_sqnr(v['sqnr_db'])}, cosine {v['cosine_mean']:.5f}{top1} -> {verdict}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", nargs="?", default=here, help="the bundle folder (default: this script's parent)")
    p.add_argument("--precisions", default="int8,fp16", help="comma list of int8, fp16, fp32 (default int8,fp16)")
    p.add_argument("--iterations", "-n", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--no-trtexec", action="store_true", help="skip the trtexec cross-check")
    p.add_argument("--no-verify", action="store_true", help="skip the output check on the bundled images")
    p.add_argument("--strongly-typed", action="store_true",
                   help="TensorRT 10.x: build strongly typed networks (FP16 from the FP16 ONNX); always on for 11")
    p.add_argument("--workspace-mb", type=int, default=1024)
    p.add_argument("--rebuild", action="store_true", help="rebuild engines even if present")
    args = p.parse_args(argv)
    power = clocks.check_power_state()
    for w in power["warnings"]:
        print(f"WARNING: {w}", file=sys.stderr)
    failed = []
    for precision in [s.strip() for s in args.precisions.split(",") if s.strip()]:
        r = bench_precision(args.bundle, precision, args.iterations, args.warmup, not args.no_trtexec,
                            args.workspace_mb, args.rebuild, power, verify=not args.no_verify,
                            strongly_typed=True if args.strongly_typed else None)
        out = os.path.join(args.bundle, "results", f"{precision}.json")
        _write_json(out, r.to_dict())
        print(f"{precision}: median {r.median_ms:.3f} ms, p90 {r.p90_ms:.3f}, p99 {r.p99_ms:.3f} -> {out}")
        if not args.no_verify:
            v = r.extra.get("verification")
            print(f"{precision}: {describe_verification(v)}")
            if v is not None and not v["passed"]:
                failed.append(precision)
    if failed:
        print(f"FAILED output check: {', '.join(failed)} (see results/<precision>.json 'verification')", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
