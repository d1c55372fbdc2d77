"""Time a TensorRT engine with CUDA events (pycuda): warm-up, then one event pair per iteration.

Uses the name-based I/O API common to TensorRT 8.5, 10 and 11 (`num_io_tensors`,
`set_input_shape`, `set_tensor_address`, `execute_async_v3`). Random input, device buffers
only: this measures GPU latency of one inference, like trtexec's --noDataTransfers.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List

try:
    from ..backends.tensorrt import engine as trt_engine
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
