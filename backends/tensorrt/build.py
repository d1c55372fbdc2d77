"""The Jetson bundle: Q/DQ + FP32/FP16 ONNX, host verification, on-device files, engines.

Steps: export the FP32/FP16 ONNX of the model's float weights; obtain the per-tensor INT8 model
the engine will run (`qdq.engine_model`: for a per-token/WADS artifact, its method re-run under
TensorRT's per-tensor static quantizer); export its Q/DQ ONNX (int8 weights); check structure;
run every ONNX in onnxruntime against its torch reference and enforce the gates (agreement on
labelled images, logit SQNR and cosine on every model); time FP32 vs Q/DQ with onnxruntime on
this host; write the Jetson bundle with verification images and reference logits; build the
TensorRT engines when `tensorrt` imports here.
"""
from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from lraqvit_deploy.artifacts import atomic_dir, versions, write_json
from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.measure.closeness import compare_logits
from lraqvit_deploy.measure.latency import prediction_entries
from lraqvit_deploy.measure.stages import stage
from lraqvit_deploy.model_info import model_info

FORMAT = "lraqvit-deploy/jetson/1"


def _mb(path: Path) -> float:
    return round(path.stat().st_size / 1e6, 3)


def _int8_initializer_mb(proto) -> float:
    return round(sum(len(i.raw_data) for i in proto.graph.initializer if i.data_type == 3) / 1e6, 3)  # INT8


def _closeness(r: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    keys = ("n_images", "agreement", "sqnr_db", "cosine_mean", "cosine_min", "max_abs_diff", "top1", "top1_torch",
            "labelled", "gates", "passed")
    return None if r is None else {k: r.get(k) for k in keys}


def _precision_plans(strongly_typed: Optional[bool], layernorm_fp32: bool) -> Dict[str, Any]:
    """`engine.precision_plan` for TensorRT 8.5 / 10 / 11 and int8 / fp16 (what the device will do)."""
    from dataclasses import asdict

    from lraqvit_deploy.jetson.engine import precision_plan

    out: Dict[str, Any] = {}
    for version in ("8.5", "10.0", "11.0"):
        typed = None if version == "11.0" else strongly_typed
        if version == "8.5" and strongly_typed:
            typed = None  # 8.5 has no strong typing: the device run uses weak typing
        out[version] = {p: asdict(precision_plan(version, p, typed, layernorm_fp32)) for p in ("int8", "fp16")}
    return out


def build_bundle(model, out_dir: Path, eval_ds, calib_images: Optional[torch.Tensor], options, *,
                 method: Optional[str] = None, quant_overrides: Optional[Dict[str, Any]] = None,
                 gates: Optional[Dict[str, Dict[str, Optional[float]]]] = None, log=print,
                 calibration_note: Optional[str] = None) -> Dict[str, Any]:
    """Everything `deploy build --target jetson` writes, into `out_dir` (atomically); returns the manifest.

    `options`: the build's `JetsonBuildOptions` (backend.py; not imported here, which imports this): opset, fp16, gates (min_agreement,
    min_sqnr_db, min_cosine), latency_iters, engine, workspace_mb, int8_mode, device_images,
    layernorm_fp32, strongly_typed, progress; its `ptq_method` is the INT8 method of an FP32 model.

    Args:
        eval_ds: (image, label) dataset the ONNX are verified on; labels < 0 mean synthetic images
            (no top-1, no agreement gate: closeness gates only).
        calib_images: (N, 3, H, W) calibration images, or None (an INT8 artifact then keeps its own or
            recorded per-tensor scales, see `int8_mode`).
        method: an INT8 artifact's own method (default: `options.ptq_method`).
        options.int8_mode: how the engine's INT8 model is obtained (`qdq.engine_model`): 'auto' (default),
            'requantize' (the method re-run with per-tensor static activations), 'keep',
            'recalibrate' (artifact weights + recalibrated per-tensor scales), 'recorded'.
        quant_overrides: config fields for a re-run quantization (e.g. `{"wads_iters": 100}`).
        options.min_agreement: INT8 Q/DQ vs simulator top-1 agreement gate (labelled images only); the
            manifest's `target_agreement` states this enforced value.
        options.min_sqnr_db / options.min_cosine: INT8 logit closeness gates (default `verify.HOST_GATES["int8"]`).
        gates: per-precision gate overrides, e.g. `{"fp16": {"min_sqnr_db": 25}}`.
        options.device_images: how many eval images (with the host's reference logits) the bundle carries for
            the on-device output check (`python3 jetson/run.py`); 0 for none.
        options.layernorm_fp32 / options.strongly_typed: passed to the engine builds (`engine.precision_plan`).
        calibration_note: a warning about the calibration images (e.g. synthetic ones), written into
            the manifest on disk as `calibration_note`.
    """
    import numpy as np
    import onnx

    from lraqvit_deploy.data import input_size

    o = options
    method = method or o.ptq_method
    opset, fp16, min_agreement, latency_iters = o.opset, o.fp16, o.min_agreement, o.latency_iters
    engine, workspace_mb, progress, int8_mode = (None if o.engine else False), o.workspace_mb, o.progress, o.int8_mode
    min_sqnr_db, min_cosine, device_images = o.min_sqnr_db, o.min_cosine, o.device_images
    layernorm_fp32, strongly_typed = o.layernorm_fp32, o.strongly_typed
    from lraqvit_deploy.quant import float_copy

    from . import bundle, qdq, verify
    from lraqvit_deploy.jetson.engine import LN_TAG
    from .onnx_export import export_onnx, prepare_for_export

    spec = model_info(model).spec
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.name if spec else type(model).__name__)
    shape = tuple(input_size(model))
    table = {p: verify.gates_for(p, table=None) for p in verify.HOST_GATES}
    table["int8"] = verify.gates_for("int8", min_agreement, min_sqnr_db, min_cosine)
    from lraqvit_deploy.models import has_random_weights

    random_weights = has_random_weights(model)  # near-tied logits: agreement is reported, only closeness gated
    if random_weights:
        for p in table:
            table[p]["min_agreement"] = None
    for p, g in (gates or {}).items():
        if p not in table:
            raise DeployError(f"gates: unknown precision {p!r} (int8, fp32, fp16).")
        table[p].update(g)

    model = model.eval()
    fmodel = float_copy(model)  # FP32/FP16 baselines: an INT8 artifact's float weights, not its fake-quant
    with atomic_dir(out_dir) as tmp:
        files = {"int8": f"{name}_qdq.onnx", "fp32": f"{name}_fp32.onnx"}
        if fp16:
            files["fp16"] = f"{name}_fp16.onnx"
        log(f"exporting {files['fp32']} (opset {opset})")
        with stage("onnx_export"):
            export_onnx(fmodel, tmp / files["fp32"], shape, opset=opset)
            if fp16:
                export_onnx(fmodel, tmp / files["fp16"], shape, opset=opset, fp16=True)

        t0 = time.perf_counter()
        with stage("engine_model"):
            sim, qinfo = qdq.engine_model(model, calib_images, method, int8_mode, quant_overrides)
        log(f"engine INT8 model: {qinfo['how']} ({time.perf_counter() - t0:.1f} s)")
        with stage("onnx_export"):
            export_onnx(qdq.to_qdq_export(sim), tmp / files["int8"], shape, opset=opset, prepared=False)

        structure, int8_mb, ln_nodes = {}, None, {}
        with stage("verify"):  # the structure check is part of verification
            for prec, f in files.items():
                proto = onnx.load(str(tmp / f))
                ln_nodes[prec] = [n.name for n in proto.graph.node if LN_TAG in n.name]
                rep = verify.check_structure(proto, qdq.expected_qdq_matmuls(sim) if prec == "int8" else None,
                                             require_qdq=prec == "int8", int8_weights=True if prec == "int8" else None)
                structure[prec] = {"ok": rep.ok, "problems": rep.problems, "qdq_matmuls": len(rep.qdq_matmuls),
                                   "int8_weights": rep.int8_weights, "float_weights": rep.float_weights,
                                   "layernorms": rep.layernorms, "layernorm_tagged": rep.layernorm_tagged, "ops": rep.ops}
                if prec == "int8":
                    int8_mb = _int8_initializer_mb(proto)
                if not rep.ok:
                    raise DeployError(f"{f} fails the TensorRT 8.5 structure check:\n  " + "\n  ".join(rep.problems))

        log(f"verifying with onnxruntime on {len(eval_ds)} images")
        with stage("verify"):
            q = verify.compare_predictions(sim, tmp / files["int8"], eval_ds, progress=progress,
                                           twin=prepare_for_export(sim))  # unfused attention: float-order twin
            f32 = verify.compare_predictions(fmodel, tmp / files["fp32"], eval_ds, progress=progress)
            f16 = verify.compare_predictions(fmodel, tmp / files["fp16"], eval_ds, progress=progress) if fp16 else None
        for prec, r in (("int8", q), ("fp32", f32), ("fp16", f16)):
            if r is not None:
                r["gates"] = table[prec]
                verify.require_gates(r, table[prec], files[prec])
                r["passed"] = True

        latency = None
        if latency_iters > 0:
            lat = {p: verify.ort_latency_ms(tmp / f, shape, latency_iters) for p, f in files.items() if p != "fp16"}
            latency = {"provider": "onnxruntime CPUExecutionProvider, 1 thread, batch 1",
                       "fp32_median_ms": lat["fp32"]["median_ms"], "qdq_median_ms": lat["int8"]["median_ms"],
                       "qdq_over_fp32": lat["int8"]["median_ms"] / lat["fp32"]["median_ms"], "detail": lat}

        device = None
        if device_images > 0:
            n = min(device_images, len(eval_ds))
            xs = torch.stack([torch.as_tensor(eval_ds[i][0]) for i in range(n)]).float()
            ys = np.asarray([int(eval_ds[i][1]) for i in range(n)])
            with torch.no_grad():
                ref_q = sim(xs).float().numpy()
                ref_f = fmodel(xs).float().numpy()
            refs = {"int8": ref_q, "fp32": ref_f, **({"fp16": ref_f} if fp16 else {})}
            host = {p: compare_logits(verify.ort_logits(verify.ort_session(tmp / files[p]), xs.numpy()),
                                      refs[p], ys) for p in refs}
            dgates = {p: {**verify.DEVICE_GATES[p], **({"min_agreement": None} if random_weights else {})}
                      for p in refs}
            dgates["int8"]["min_agreement"] = table["int8"]["min_agreement"]
            device = bundle.write_verification(tmp, xs.numpy(), refs, ys if (ys >= 0).all() else None, dgates,
                                               host)

        onnx_files = {p: files[p] for p in ("int8", "fp32", "fp16") if p in files}
        bundle_info = bundle.write_bundle(tmp, name, onnx_files, shape, opset, verify=device,
                                          layernorm_nodes=ln_nodes)
        engines = None
        have_trt = importlib.util.find_spec("tensorrt") is not None
        if engine is not False and have_trt:
            import tensorrt

            from lraqvit_deploy.jetson.run import onnx_for

            from lraqvit_deploy.jetson import engine as trt_engine

            engines = {}
            fp16_src = trt_engine.precision_plan(tensorrt.__version__, "fp16", strongly_typed, layernorm_fp32).onnx
            for prec in ("int8", "fp16") if fp16_src in onnx_files else ("int8",):
                src = onnx_for({"onnx": onnx_files}, prec, tensorrt.__version__, strongly_typed)
                engines[prec] = trt_engine.build_engine(tmp / src, tmp / "engines" / f"{name}_{prec}.engine", prec,
                                                        workspace_mb=workspace_mb, strongly_typed=strongly_typed,
                                                        layernorm_fp32=layernorm_fp32,
                                                        timing_cache=str(tmp / "engines" / "timing.cache"))
        plans = _precision_plans(strongly_typed, layernorm_fp32)
        labelled = bool(q["labelled"])
        manifest: Dict[str, Any] = {
            "format": FORMAT, "target": "jetson", "model": spec.to_dict() if spec else None,
            "agreement": q["agreement"], "simulator_float_order_agreement": q["twin_agreement"],
            "target_agreement": table["int8"]["min_agreement"], "gates": table,
            "agreement_gated": labelled and table["int8"]["min_agreement"] is not None,
            "agreement_gate_note": ("random weights: top-1 agreement is reported, not gated (near-tied logits); "
                                    "the closeness gates apply" if random_weights else None),
            "top1": q["top1"], "top1_simulator": q["top1_torch"],
            "top1_source": ("onnxruntime on the Q/DQ ONNX (the engine's model) over the labelled eval images"
                            if labelled else None),
            "top1_fp32": f32["top1"], "fp32_onnx_agreement": f32["agreement"],
            "fp16_onnx_agreement": f16["agreement"] if f16 else None, "top1_fp16": f16["top1"] if f16 else None,
            "closeness": {"int8": _closeness(q), "fp32": _closeness(f32), "fp16": _closeness(f16)},
            "n_images": q["n_images"], "opset": opset, "size_mb": _mb(tmp / files["int8"]),
            "size_mb_fp32": _mb(tmp / files["fp32"]), "size_mb_fp16": _mb(tmp / files["fp16"]) if fp16 else None,
            "int8_weights_mb": int8_mb, "qdq_over_fp32_size": round(_mb(tmp / files["int8"]) / _mb(tmp / files["fp32"]), 4),
            "engine_quantizer": qinfo,
            "quantization": {"how": qinfo["how"], "method": qinfo["method"], "mode": qinfo["mode"],
                             "calib_images": qinfo["calib_images"], "act_scales": qdq.scales_summary(sim)},
            "onnx": onnx_files, "structure": structure, "host_latency": latency,
            "qdq_over_fp32_latency": latency["qdq_over_fp32"] if latency else None,
            "precision_plans": plans, "bundle": bundle_info, "device_verification": device, "engines": engines,
            "run_on_jetson": f"cd {Path(out_dir).name} && {bundle.RUN_COMMAND}",
            "versions": versions(),
        }
        if calibration_note:
            manifest["calibration_note"] = calibration_note
        manifest.update(prediction_entries(model))  # a latency-budget plan: `deploy bench --target jetson` shows both
        write_json(tmp / "manifest.json", manifest)
    if engines is None:
        why = "--trt-no-engine" if engine is False else "the tensorrt module does not import here"
        log(f"no engine built ({why}). Copy {out_dir} to the Jetson and run there:\n    "
            f"cd {Path(out_dir).name} && {bundle.RUN_COMMAND}")
    return manifest
