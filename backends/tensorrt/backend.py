"""The `jetson` target: Q/DQ + FP32/FP16 ONNX verified with onnxruntime, an on-device bundle, engines.

`JetsonBackend.build` brings the model to the per-tensor INT8 form TensorRT runs and writes the
bundle (`build.build_bundle`); `JetsonBackend.bench` times an engine where TensorRT imports, or
collects the result file `python3 jetson/run.py` wrote on the device (`lraqvit_deploy.jetson`).

Data: verification uses the model's labelled images (the test bed's test split, or the user's)
and otherwise seeded synthetic images; calibration images are needed only for a model that is
not yet INT8 (an INT8 artifact brings its own per-tensor scales) and come from the test bed's
training split or the user's `calib_data`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.model_info import model_info
from lraqvit_deploy.options import option

from ..base import Backend, BuildData, BuildOptions, BuildResult

PTQ_METHODS = ("naive", "smoothquant", "qads", "repq", "per-token", "wads")


@dataclass(frozen=True)
class JetsonBuildOptions(BuildOptions):
    """How `build(..., target="jetson")` exports, checks and (where TensorRT imports) builds engines."""

    target: ClassVar[str] = "jetson"
    opset: int = option(16, "ONNX opset (13-17; 16 keeps LayerNorm decomposed for TensorRT 8.5)", min=13, max=17,
                        flag="--trt-opset")
    min_agreement: float = option(0.9, "fail if onnxruntime agrees with the simulator on fewer predictions (an "
                                       "export bug gives near-chance agreement; see docs/jetson.md for the noise "
                                       "floor)", min=0, max=1, flag="--trt-min-agreement", metavar="F")
    fp16: bool = option(True, "write the FP16 ONNX (and its engine) too", flag="--trt-no-fp16")
    workspace_mb: int = option(1024, "engine builder workspace (MiB)", min=1, max=1 << 20, flag="--trt-workspace-mb")
    engine: bool = option(True, "build engines when tensorrt imports here", flag="--trt-no-engine")
    latency_iters: int = option(20, "onnxruntime CPU timing iterations on this host (0 to skip)", min=0,
                                max=100_000, flag="--trt-latency-iters")
    ptq_method: str = option("naive", "INT8 method for a model that is not quantized yet (an INT8 artifact keeps "
                                      "its own weights and scales)", choices=PTQ_METHODS, flag="--trt-ptq")
    int8_mode: str = option("auto", "how the INT8 engine's model is made: auto (keep a per-tensor INT8 model; re-run "
                                    "a per-token method such as WADS per tensor on the calibration images, so the "
                                    "engine runs the model whose accuracy is reported; without images, the scales "
                                    "recorded at quantization), requantize, keep, recalibrate, recorded",
                            choices=("auto", "requantize", "keep", "recalibrate", "recorded"), flag="--trt-int8")
    calib_images: int = option(32, "calibration images for a model that is not quantized yet", min=1,
                               max=1_000_000, flag="--trt-calib-images", metavar="N")
    verify_images: Optional[int] = option(None, "images for onnxruntime verification (default: the whole eval set; "
                                                "64 seeded synthetic images for models without data)", min=1,
                                          max=1_000_000, flag="--trt-verify-images", metavar="N")
    min_sqnr_db: Optional[float] = option(None, "INT8 Q/DQ logit SQNR gate in onnxruntime (default 15 dB, "
                                                "verify.HOST_GATES)", min=0, max=1000, flag="--trt-min-sqnr-db",
                                          metavar="DB")
    min_cosine: Optional[float] = option(None, "INT8 Q/DQ mean logit cosine gate (default 0.98)", min=0, max=1,
                                         flag="--trt-min-cosine", metavar="C")
    device_images: int = option(32, "images (with the host's reference logits) the bundle carries for the on-device "
                                    "output check (python3 jetson/run.py); 0 for none", min=0, max=100_000,
                                flag="--trt-device-images", metavar="N")
    layernorm_fp32: bool = option(True, "keep LayerNorm in FP32 in the engines (engine.precision_plan)", cli=False)
    strongly_typed: Optional[bool] = option(None, "build strongly typed engines (default: by TensorRT version)",
                                            cli=False)


class JetsonBackend(Backend):
    name = "jetson"
    description = "explicit-Q/DQ ONNX + on-device bundle for TensorRT 8.5/10/11 (Jetson AGX Xavier)"
    build_options = JetsonBuildOptions
    build_requires = ("onnx", "onnxruntime", "onnx_graphsurgeon")
    install_hint = "onnx, onnxruntime and onnx-graphsurgeon (pip install -e . installs them)"

    @property
    def bench_options(self):
        from lraqvit_deploy.jetson.bench import JetsonBenchOptions

        return JetsonBenchOptions

    def build(self, model, out: Path, options: JetsonBuildOptions, data: BuildData) -> BuildResult:
        from torch.utils.data import TensorDataset

        from lraqvit_deploy.layers import QuantLinear

        from .build import build_bundle

        import torch

        log = print if options.progress else (lambda *a, **k: None)
        quantized = any(isinstance(m, QuantLinear) for m in model.modules())
        if quantized:  # a form TensorRT on Xavier cannot run (4-bit, blockwise) is refused before any work
            from lraqvit_deploy.quant.forms import model_form_problems, refuse_problems

            refuse_problems(model_form_problems(model, "jetson"), "Jetson (TensorRT)",
                            "Plan for the Jetson instead: `deploy compress --size-budget-mb MB --target jetson` "
                            "(int8 forms).")
        calib, calib_note = None, None
        try:  # per-tensor (re)calibration on training images when there are any
            calib = data.calibration(options.calib_images, why="the Jetson INT8 engine's calibration")
        except DeployError:
            if not quantized:  # an FP32 model without images: still build (a smoke test), and say what it means
                from lraqvit_deploy.data import synthetic_images

                calib = synthetic_images(model, options.calib_images, seed=1)
                calib_note = (f"calibrated on {len(calib)} seeded synthetic images (no training images given): "
                              "the INT8 scales are not representative; pass --calib-data for a deployable engine")
                log(f"warning: {calib_note}")
        v = data.verification(options.verify_images)

        labels = v.labels if v.labels is not None else torch.full((len(v.images),), -1, dtype=torch.long)
        if v.synthetic:
            log(f"verifying on {v.description}: agreement only, no top-1")
        method = ((model_info(model).quant or {}).get("config") or {}).get("method") if quantized else None
        manifest = build_bundle(model, Path(out), TensorDataset(v.images, labels), calib, options, method=method,
                                log=log, calibration_note=calib_note)
        return BuildResult(self.name, Path(out), manifest)

    def bench(self, program: Path, options):
        from lraqvit_deploy.jetson.bench import bench

        return bench(program, options)
