"""Version-adaptive TensorRT engine builder for a (Q/DQ) ONNX file: TensorRT 8.5, 10 and 11.

Self-contained (standard library at import time, `tensorrt` inside functions) because the
on-device bundle copies this file next to the Jetson scripts, where only python3 + tensorrt +
pycuda + numpy exist.

What differs between versions (TensorRT Python API docs, 8.5 / 10.x / 11.x migration guide):
  * 8.5: networks must be created with EXPLICIT_BATCH; Q/DQ layers need BuilderFlag.INT8,
    float layers run FP16 only with BuilderFlag.FP16 (weak typing).
  * 10.x: EXPLICIT_BATCH is deprecated and ignored; weak typing (INT8/FP16 flags) still works,
    STRONGLY_TYPED is opt-in (then precision flags must not be set).
  * 11.x: BuilderFlag.INT8/FP16 are removed and every network is strongly typed: layers run in
    their ONNX dtype, so an FP16 engine needs an FP16 ONNX and the Q/DQ engine runs its
    non-quantized layers in the ONNX's float type.
Common to all three: build_serialized_network, set_memory_pool_limit(WORKSPACE), timing cache.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

try:  # inside lraqvit-deploy the CLI prints a DeployError without a traceback
    from lraqvit_deploy.errors import DeployError as _Base
except ImportError:  # on the Jetson, standalone
    _Base = RuntimeError

PRECISIONS = ("int8", "fp16", "fp32")
MIN_VERSION = (8, 5)


class EngineBuildError(_Base):
    """The ONNX could not be parsed or the engine not built; the message carries TensorRT's errors."""


@dataclass
class BuildPlan:
    """The TensorRT calls a build makes, decided from the version alone (testable without a GPU)."""

    version: Tuple[int, int]
    precision: str
    network_flags: List[str] = field(default_factory=list)  # NetworkDefinitionCreationFlag members
    builder_flags: List[str] = field(default_factory=list)  # BuilderFlag members
    strongly_typed: bool = False
    notes: List[str] = field(default_factory=list)


def parse_version(text: str) -> Tuple[int, int]:
    parts = text.split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise EngineBuildError(f"cannot read a TensorRT version from {text!r}") from None


def plan_build(version: str, precision: str = "int8", strongly_typed: Optional[bool] = None) -> BuildPlan:
    """Flags for `precision` on TensorRT `version`; `strongly_typed=None` picks the version's default."""
    if precision not in PRECISIONS:
        raise EngineBuildError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    v = parse_version(version)
    if v < MIN_VERSION:
        raise EngineBuildError(f"TensorRT {version} is too old: explicit Q/DQ ONNX needs >= 8.5 (JetPack 5).")
    plan = BuildPlan(v, precision)
    if v[0] >= 11:
        if strongly_typed is False:
            raise EngineBuildError("TensorRT 11 has no weak typing (BuilderFlag.INT8/FP16 were removed); "
                                   "drop --weak-typing.")
        plan.strongly_typed = True  # always on; the creation flag is deprecated and ignored
        plan.notes.append("strongly typed (11.x): layers run in the ONNX's dtypes; use the FP16 ONNX for FP16")
        return plan
    if v[0] < 10:
        if strongly_typed:
            raise EngineBuildError(f"TensorRT {version} has no strongly typed networks (added in 9/10).")
        plan.network_flags.append("EXPLICIT_BATCH")
    elif strongly_typed:
        plan.strongly_typed = True
        plan.network_flags.append("STRONGLY_TYPED")
        plan.notes.append("strongly typed (10.x): precision comes from the ONNX, no builder precision flags")
        return plan
    if precision == "int8":
        plan.builder_flags += ["INT8", "FP16"]  # Q/DQ layers in INT8, the float rest in FP16
    elif precision == "fp16":
        plan.builder_flags.append("FP16")
    return plan


def _atomic_write_bytes(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(memoryview(data))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _profile_shapes(dims, batch: int) -> Tuple[tuple, tuple, tuple]:
    """min/opt/max for an input whose only dynamic axis is the batch."""
    fixed = [int(d) for d in dims]
    if any(d < 0 for d in fixed[1:]):
        raise EngineBuildError(f"input shape {fixed}: only the batch axis may be dynamic.")
    shape = (batch, *fixed[1:])
    return shape, shape, shape


def build_engine(onnx_path, engine_path, precision: str = "int8", *, workspace_mb: int = 1024,
                 timing_cache: Optional[str] = None, batch: int = 1, strongly_typed: Optional[bool] = None,
                 verbose: bool = False) -> Dict[str, Any]:
    """Parse `onnx_path`, build a serialized engine at `engine_path`; returns what was done."""
    import tensorrt as trt

    plan = plan_build(trt.__version__, precision, strongly_typed)
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    onnx_path = Path(onnx_path)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT {trt.__version__} could not parse {onnx_path}:\n  " + "\n  ".join(errors))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    dynamic = [network.get_input(i) for i in range(network.num_inputs)
               if any(int(d) < 0 for d in network.get_input(i).shape)]
    if dynamic:
        profile = builder.create_optimization_profile()
        for t in dynamic:
            profile.set_shape(t.name, *_profile_shapes(t.shape, batch))
        config.add_optimization_profile(profile)

    cache_path = Path(timing_cache) if timing_cache else None
    if cache_path is not None:
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - t0
    if serialized is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} failed to build an engine from {onnx_path} "
                               f"({precision}); rerun with --verbose for the builder log.")
    engine_path = Path(engine_path)
    _atomic_write_bytes(engine_path, serialized)
    if cache_path is not None:
        _atomic_write_bytes(cache_path, config.get_timing_cache().serialize())
    return {"tensorrt": trt.__version__, **asdict(plan), "batch": batch, "workspace_mb": workspace_mb,
            "timing_cache": str(cache_path) if cache_path else None, "build_s": round(build_s, 2),
            "engine": str(engine_path), "engine_mb": engine_path.stat().st_size / 1e6}


def load_engine(engine_path):
    """Deserialize an engine file (built on this device with this TensorRT version)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise EngineBuildError(f"{engine_path}: TensorRT {trt.__version__} could not deserialize it; engines "
                               "only load on the device and TensorRT version that built them. Rebuild it here.")
    return runtime, engine


def io_tensors(engine) -> List[Dict[str, Any]]:
    """Name, mode, shape and dtype of each I/O tensor (the name-based API of 8.5+)."""
    import tensorrt as trt

    out = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        out.append({"name": name, "input": engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                    "shape": tuple(engine.get_tensor_shape(name)), "dtype": engine.get_tensor_dtype(name)})
    return out
