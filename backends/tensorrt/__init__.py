"""TensorRT (Jetson) backend: explicit-Q/DQ ONNX for TensorRT 8.5/10/11, host checks, engine builder.

Modules: `onnx_export` (opset <= 17, decomposed LayerNorm, graph clean-up), `qdq` (per-tensor
simulator configuration and the Q/DQ export form), `verify` (structure + onnxruntime
agreement), `engine` (version-adaptive builder; `tensorrt` imported inside functions),
`bundle` (on-device files), `cli` (`deploy build --target jetson`). Nothing heavy is imported here.
"""
