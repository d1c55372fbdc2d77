"""Lowering to deployment runtimes, one typed backend per target (installed as `lraqvit_deploy.backends`).

`base.py` holds the interface (`Backend`, `BuildOptions`, `BenchOptions`, `BuildData`), `_registry.py`
the targets (`get_backend("android" | "host" | "jetson")`); `executorch/` lowers to XNNPACK .pte
files, `tensorrt/` to explicit-Q/DQ ONNX and TensorRT engines. Heavy runtimes are imported inside
functions only, so importing this package is cheap.
"""
from ._registry import backend_names, get_backend, options_type, register_backend

__all__ = ["backend_names", "get_backend", "options_type", "register_backend"]
