"""lraqvit-deploy: compress timm Vision Transformers (low rank + INT8, LRA-QViT) and ship them to
Android (ExecuTorch/XNNPACK) and Jetson (TensorRT), with accuracy and latency measured.

The whole SDK from the package root (names are imported on first use, so `import lraqvit_deploy`
stays cheap):

    from lraqvit_deploy import (create_model, compress, build, bench, Recipe, LowRankConfig,
                                DistillConfig, quant_config)

    model = create_model("deit_small_patch16_224", weights="random")
    report = compress(model, Recipe(low_rank=LowRankConfig("rb-lra", param_reduction=0.45),
                                    quant=quant_config("wads")), calib_data=images, out="out/deit-s")
    build("out/deit-s", "out/android", "android")
    print(bench("out/android", "host").median_ms)
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # models and artifacts
    "create_model": "lraqvit_deploy.models",
    "load_artifact": ("lraqvit_deploy.artifacts", "load_model_artifact"),
    "save_artifact": ("lraqvit_deploy.artifacts", "save_model_artifact"),
    "ModelInfo": "lraqvit_deploy.model_info",
    "model_info": "lraqvit_deploy.model_info",
    # the pipeline
    "compress": "lraqvit_deploy.pipeline",
    "quantize": "lraqvit_deploy.pipeline",
    "CompressionReport": "lraqvit_deploy.pipeline",
    "Recipe": "lraqvit_deploy.recipe",
    "AllocationConfig": "lraqvit_deploy.recipe",
    "LowRankConfig": "lraqvit_deploy.lowrank",
    "DistillConfig": "lraqvit_deploy.lowrank",
    "quant_config": "lraqvit_deploy.quant",
    "QuantConfig": "lraqvit_deploy.quant",
    # targets
    "build": "lraqvit_deploy.targets",
    "bench": "lraqvit_deploy.targets",
    "BuildResult": "lraqvit_deploy.backends.base",
    "BenchResult": "lraqvit_deploy.benchmark",
    "AndroidBuildOptions": "lraqvit_deploy.backends.executorch.backend",
    "HostBenchOptions": "lraqvit_deploy.backends.executorch.backend",
    "JetsonBuildOptions": "lraqvit_deploy.backends.tensorrt.backend",
    "AndroidBenchOptions": "lraqvit_deploy.android_runner.bench",
    "JetsonBenchOptions": "lraqvit_deploy.jetson.bench",
    # cost tables (deploy profile)
    "profile_costs": "lraqvit_deploy.backends.executorch.cost_profile",
    "write_profile_bundle": "lraqvit_deploy.backends.tensorrt.cost_bundle",  # a Jetson's cells, timed there
    "CostTable": "lraqvit_deploy.measure.costs",
    "cached_table": "lraqvit_deploy.measure.costs",
    # errors
    "DeployError": "lraqvit_deploy.errors",
    "BackendNotInstalled": "lraqvit_deploy.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module 'lraqvit_deploy' has no attribute {name!r}")
    module, attr = (where, name) if isinstance(where, str) else where
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
