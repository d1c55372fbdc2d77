"""`deploy build --target jetson`: Q/DQ + FP32/FP16 ONNX, host verification, on-device bundle, engine.

Steps: export the FP32/FP16 ONNX of the model as given; bring a copy to the simulator's
per-tensor configuration (quantize or recalibrate); export its Q/DQ ONNX; check structure and
onnxruntime agreement with the simulator; time FP32 vs Q/DQ with onnxruntime on this host;
write the Jetson bundle; build the TensorRT engines when `tensorrt` imports here.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import re
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from lraqvit_deploy.artifacts import atomic_dir, versions, write_json
from lraqvit_deploy.errors import DeployError

FORMAT = "lraqvit-deploy/jetson/1"


def add_build_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--trt-opset", type=int, default=16,
                       help="jetson: ONNX opset (13-17; 16 keeps LayerNorm decomposed for TensorRT 8.5)")
    group.add_argument("--trt-min-agreement", type=float, default=0.9, metavar="FRACTION",
                       help="jetson: fail if onnxruntime agrees with the simulator on fewer predictions (default "
                            "0.9: an export bug gives near-chance agreement; see docs/jetson.md for the noise floor)")
    group.add_argument("--trt-no-fp16", action="store_true", help="jetson: skip the FP16 ONNX")
    group.add_argument("--trt-workspace-mb", type=int, default=1024, help="jetson: engine builder workspace (MiB)")
    group.add_argument("--trt-no-engine", action="store_true",
                       help="jetson: do not build engines even if tensorrt imports here")
    group.add_argument("--trt-latency-iters", type=int, default=20,
                       help="jetson: onnxruntime CPU timing iterations on this host (0 to skip)")


def _calibration(model, args) -> torch.Tensor:
    """`--calib-images/--calib-data` when the quant arguments are wired in, else 32 test-bed training images."""
    from lraqvit_deploy.quant.cli_args import calibration_images

    ns = argparse.Namespace(calib_images=getattr(args, "calib_images", None) or 32,
                            calib_data=getattr(args, "calib_data", None))
    return calibration_images(model, ns)


def _mb(path: Path) -> float:
    return round(path.stat().st_size / 1e6, 3)


def build_bundle(model, out_dir: Path, eval_ds, calib_images: torch.Tensor, *, method: str = "naive",
                 opset: int = 16, fp16: bool = True, min_agreement: float = 0.9, latency_iters: int = 20,
                 engine: Optional[bool] = None, workspace_mb: int = 1024, progress: bool = True,
                 log=print) -> Dict[str, Any]:
    """Everything `deploy build --target jetson` writes, into `out_dir` (atomically)."""
    from lraqvit_deploy.evaluate import input_size

    from . import bundle, qdq, verify
    from .onnx_export import export_onnx

    spec = getattr(model, "lraqvit_spec", None)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.name if spec else type(model).__name__)
    shape = tuple(input_size(model))
    from lraqvit_deploy.quant import float_copy

    model = model.eval()
    fmodel = float_copy(model)  # FP32/FP16 baselines: an INT8 artifact's float weights, not its fake-quant
    with atomic_dir(out_dir) as tmp:
        files = {"int8": f"{name}_qdq.onnx", "fp32": f"{name}_fp32.onnx"}
        if fp16:
            files["fp16"] = f"{name}_fp16.onnx"
        log(f"exporting {files['fp32']} (opset {opset})")
        export_onnx(fmodel, tmp / files["fp32"], shape, opset=opset)
        if fp16:
            export_onnx(fmodel, tmp / files["fp16"], shape, opset=opset, fp16=True)

        t0 = time.perf_counter()
        sim = copy.deepcopy(model)
        how = qdq.to_per_tensor_(sim, calib_images, method)
        log(f"per-tensor simulator: {how} ({len(calib_images)} calibration images, {time.perf_counter() - t0:.1f} s)")
        export_onnx(qdq.to_qdq_export(sim), tmp / files["int8"], shape, opset=opset, prepared=False)

        import onnx

        structure = {}
        for prec, f in files.items():
            rep = verify.check_structure(onnx.load(str(tmp / f)), qdq.expected_qdq_matmuls(sim) if prec == "int8" else None,
                                         require_qdq=prec == "int8")
            structure[prec] = {"ok": rep.ok, "problems": rep.problems, "qdq_matmuls": len(rep.qdq_matmuls),
                               "ops": rep.ops}
            if not rep.ok:
                raise DeployError(f"{f} fails the TensorRT 8.5 structure check:\n  " + "\n  ".join(rep.problems))

        log(f"verifying with onnxruntime on {len(eval_ds)} images")
        from .onnx_export import prepare_for_export

        q = verify.compare_predictions(sim, tmp / files["int8"], eval_ds, progress=progress,
                                       twin=prepare_for_export(sim))  # unfused attention: float-order twin
        verify.require_agreement(q, min_agreement, files["int8"])
        f32 = verify.compare_predictions(fmodel, tmp / files["fp32"], eval_ds, progress=progress)
        verify.require_agreement(f32, min_agreement, files["fp32"])
        f16 = verify.compare_predictions(fmodel, tmp / files["fp16"], eval_ds, progress=progress) if fp16 else None

        latency = None
        if latency_iters > 0:
            lat = {p: verify.ort_latency_ms(tmp / f, shape, latency_iters) for p, f in files.items() if p != "fp16"}
            latency = {"provider": "onnxruntime CPUExecutionProvider, 1 thread, batch 1",
                       "fp32_median_ms": lat["fp32"]["median_ms"], "qdq_median_ms": lat["int8"]["median_ms"],
                       "qdq_over_fp32": lat["int8"]["median_ms"] / lat["fp32"]["median_ms"], "detail": lat}

        onnx_files = {p: files[p] for p in ("int8", "fp32", "fp16") if p in files}
        bundle_info = bundle.write_bundle(tmp, name, onnx_files, shape, opset)
        engines = None
        have_trt = importlib.util.find_spec("tensorrt") is not None
        if engine is not False and have_trt:
            import tensorrt

            from lraqvit_deploy.jetson.run import onnx_for

            from . import engine as trt_engine

            major = trt_engine.parse_version(tensorrt.__version__)[0]
            engines = {}
            for prec in ("int8", "fp16"):
                src = onnx_for({"onnx": onnx_files}, prec, major)
                engines[prec] = trt_engine.build_engine(tmp / src, tmp / "engines" / f"{name}_{prec}.engine", prec,
                                                        workspace_mb=workspace_mb,
                                                        timing_cache=str(tmp / "engines" / "timing.cache"))
        manifest: Dict[str, Any] = {
            "format": FORMAT, "target": "jetson", "model": spec.to_dict() if spec else None,
            "agreement": q["agreement"], "simulator_float_order_agreement": q["twin_agreement"],
            "target_agreement": 0.995, "top1": q["top1"], "top1_simulator": q["top1_torch"],
            "top1_fp32": f32["top1"], "fp32_onnx_agreement": f32["agreement"],
            "fp16_onnx_agreement": f16["agreement"] if f16 else None, "top1_fp16": f16["top1"] if f16 else None,
            "n_images": q["n_images"], "opset": opset, "size_mb": _mb(tmp / files["int8"]),
            "size_mb_fp32": _mb(tmp / files["fp32"]), "size_mb_fp16": _mb(tmp / files["fp16"]) if fp16 else None,
            "quantization": {"how": how, "method": method, "calib_images": len(calib_images),
                             "act_scales": qdq.scales_summary(sim)},
            "onnx": onnx_files, "structure": structure, "host_latency": latency,
            "qdq_over_fp32_latency": latency["qdq_over_fp32"] if latency else None,
            "bundle": bundle_info, "engines": engines,
            "run_on_jetson": f"cd {Path(out_dir).name} && {bundle.RUN_COMMAND}",
            "versions": versions(),
        }
        write_json(tmp / "manifest.json", manifest)
    if engines is None:
        why = "--trt-no-engine" if engine is False else "the tensorrt module does not import here"
        log(f"no engine built ({why}). Copy {out_dir} to the Jetson and run there:\n    "
            f"cd {Path(out_dir).name} && {bundle.RUN_COMMAND}")
    return manifest


def build(model, out_dir: Path, args: argparse.Namespace) -> Dict[str, Any]:
    """The `deploy build --target jetson` entry point (see lraqvit_deploy/cli/build.py)."""
    from lraqvit_deploy.cli.args import eval_dataset

    opset = getattr(args, "trt_opset", 16)
    if not 13 <= opset <= 17:
        raise DeployError(f"--trt-opset {opset}: TensorRT 8.5 reads opsets <= 17 and per-channel Q/DQ needs >= 13.")
    method = getattr(args, "quant", None) or "naive"
    if method == "none":
        method = "naive"  # the Jetson INT8 engine needs scales; --quant none still yields the FP32/FP16 rows
    quiet = getattr(args, "quiet", False)
    return build_bundle(model, Path(out_dir), eval_dataset(args, model), _calibration(model, args), method=method,
                        opset=opset, fp16=not getattr(args, "trt_no_fp16", False),
                        min_agreement=getattr(args, "trt_min_agreement", 0.9),
                        latency_iters=getattr(args, "trt_latency_iters", 20),
                        engine=False if getattr(args, "trt_no_engine", False) else None,
                        workspace_mb=getattr(args, "trt_workspace_mb", 1024), progress=not quiet,
                        log=(lambda *a, **k: None) if quiet else print)
