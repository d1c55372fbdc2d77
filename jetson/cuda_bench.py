"""Time a TensorRT engine with CUDA events (pycuda): warm-up, then one event pair per iteration.

Uses the name-based I/O API common to TensorRT 8.5, 10 and 11 (`num_io_tensors`,
`set_input_shape`, `set_tensor_address`, `execute_async_v3`). `time_engine`: random input,
device buffers only: this measures GPU latency of one inference, like trtexec's
--noDataTransfers. `run_engine`: real inputs in, logits out (the on-device output check).
"""
from __future__ import annotations

import time
from typing import Any, Dict, List

try:
    from . import engine as trt_engine
except ImportError:  # standalone on the Jetson
    import engine as trt_engine  # type: ignore[no-redef]


def time_engine(engine_path: str, iterations: int = 200, warmup: int = 20, batch: int = 1) -> Dict[str, Any]:
    """Per-iteration latencies (ms) of `engine_path`, plus load time."""
    import numpy as np
    import pycuda.autoinit  # noqa: F401  creates the CUDA context
    import pycuda.driver as cuda
    import tensorrt as trt

    t0 = time.perf_counter()
    runtime, engine = trt_engine.load_engine(engine_path)
    context = engine.create_execution_context()
    load_ms = 1e3 * (time.perf_counter() - t0)
    stream = cuda.Stream()
    buffers = []
    for t in trt_engine.io_tensors(engine):
        shape = list(t["shape"])
        if t["input"]:
            shape = [batch if d < 0 else d for d in shape]
            context.set_input_shape(t["name"], shape)
    for t in trt_engine.io_tensors(engine):
        shape = tuple(context.get_tensor_shape(t["name"]))
        dtype = np.dtype(trt.nptype(t["dtype"]))
        host = np.random.default_rng(0).standard_normal(shape).astype(dtype) if t["input"] else None
        dev = cuda.mem_alloc(max(1, int(np.prod(shape)) * dtype.itemsize))
        if host is not None:
            cuda.memcpy_htod(dev, host)
        context.set_tensor_address(t["name"], int(dev))
        buffers.append(dev)
    start, end = cuda.Event(), cuda.Event()
    for _ in range(warmup):
        context.execute_async_v3(stream.handle)
    stream.synchronize()
    times: List[float] = []
    for _ in range(iterations):
        start.record(stream)
        context.execute_async_v3(stream.handle)
        end.record(stream)
        end.synchronize()
        times.append(end.time_since(start))
    del context, engine, runtime, buffers
    return {"times_ms": times, "load_ms": load_ms, "batch": batch}


def run_engine(engine_path: str, images, batch: int = 1):
    """Logits of `engine_path` for `images` (N, C, H, W), `batch` images per execution; float32 (N, classes).

    The engine's input dtype decides the host dtype (FP32, or FP16 for an FP16-input strongly
    typed engine). The engine must have one input and one output (the bundle's ONNX do).
    """
    import numpy as np
    import pycuda.autoinit  # noqa: F401  creates the CUDA context
    import pycuda.driver as cuda
    import tensorrt as trt

    runtime, engine = trt_engine.load_engine(engine_path)
    context = engine.create_execution_context()
    io = trt_engine.io_tensors(engine)
    inputs, outputs = [t for t in io if t["input"]], [t for t in io if not t["input"]]
    if len(inputs) != 1 or len(outputs) != 1:
        raise RuntimeError(f"{engine_path}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
    inp, out = inputs[0], outputs[0]
    in_dtype = np.dtype(trt.nptype(inp["dtype"]))
    out_dtype = np.dtype(trt.nptype(out["dtype"]))
    stream = cuda.Stream()
    results = []
    images = np.asarray(images)
    for i in range(0, len(images), batch):
        x = np.ascontiguousarray(images[i:i + batch].astype(in_dtype))
        context.set_input_shape(inp["name"], tuple(x.shape))
        y = np.empty(tuple(context.get_tensor_shape(out["name"])), dtype=out_dtype)
        d_in, d_out = cuda.mem_alloc(x.nbytes), cuda.mem_alloc(max(1, y.nbytes))
        context.set_tensor_address(inp["name"], int(d_in))
        context.set_tensor_address(out["name"], int(d_out))
        cuda.memcpy_htod(d_in, x)  # synchronous copies: pageable host arrays, correctness over speed here
        if not context.execute_async_v3(stream.handle):
            raise RuntimeError(f"{engine_path}: execute_async_v3 failed on images {i}..{i + len(x) - 1}")
        stream.synchronize()
        cuda.memcpy_dtoh(y, d_out)
        results.append(y.astype(np.float32).reshape(len(x), -1))
        d_in.free()
        d_out.free()
    del context, engine, runtime
    return np.concatenate(results)
