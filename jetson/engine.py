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

LayerNorm stays FP32 in every engine (`precision_plan`): under weak typing (8.5, 10.x default)
the layers of each decomposed LayerNorm, which the export tags with `LN_TAG` in their ONNX node
names (TensorRT names layers after their nodes), get `layer.precision = FLOAT` and FP32 output
types, enforced with BuilderFlag.OBEY_PRECISION_CONSTRAINTS (8.5: value 10, 10.x: 9, deprecated
from 10.12 with weak typing, gone in 11; `include/NvInfer.h` of each release). Under strong
typing (10.x on request, 11 always) layer precisions cannot be set: the ONNX's dtypes decide, and
the FP16 ONNX computes LayerNorm in FP32 between Casts (`onnx_export.FP32LayerNorm`).
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

try:  # inside lraqvit-deploy the CLI prints a DeployError without a traceback
    from lraqvit_deploy.errors import DeployError as _Base
except ImportError:  # on the Jetson, standalone
    _Base = RuntimeError

PRECISIONS = ("int8", "fp16", "fp32")
MIN_VERSION = (8, 5)
# In the ONNX node name of every decomposed-LayerNorm op (written by onnx_export.mark_layernorms).
LN_TAG = "lraqvit_ln_fp32"
FLOAT_TYPES = ("FLOAT", "HALF")  # DataType names of float outputs (what a precision constraint can apply to)


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
    onnx: str = "int8"  # the bundle ONNX to build from: "int8" (Q/DQ), "fp32" or "fp16"
    layernorm: str = ""  # how LayerNorm stays FP32 in this engine
    fp32_tag: Optional[str] = None  # layers whose name holds this tag get precision + output type FLOAT


def parse_version(text: str) -> Tuple[int, int]:
    parts = text.split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise EngineBuildError(f"cannot read a TensorRT version from {text!r}") from None


def precision_plan(version: str, precision: str = "int8", strongly_typed: Optional[bool] = None,
                   layernorm_fp32: bool = True) -> BuildPlan:
    """Everything a build of `precision` on TensorRT `version` decides, without TensorRT (unit-tested here).

    Network and builder flags, which bundle ONNX to parse, and how LayerNorm stays in FP32.
    `strongly_typed=None` picks the version's default (weak on 8.5/10, strong on 11).

    | version, typing | int8 | fp16 | fp32 |
    |---|---|---|---|
    | 8.5 / 10 weak | Q/DQ ONNX, INT8+FP16, LN layers FP32 + OBEY | FP32 ONNX, FP16, LN FP32 + OBEY | FP32 ONNX |
    | 10 strong, 11 | Q/DQ ONNX (float parts FP32) | FP16 ONNX (LN FP32 between Casts) | FP32 ONNX |
    """
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
    elif v[0] < 10:
        if strongly_typed:
            raise EngineBuildError(f"TensorRT {version} has no strongly typed networks (added in 9/10).")
        plan.network_flags.append("EXPLICIT_BATCH")
    elif strongly_typed:
        plan.strongly_typed = True
        plan.network_flags.append("STRONGLY_TYPED")
        plan.notes.append("strongly typed (10.x): precision comes from the ONNX, no builder precision flags")
    plan.onnx = {"int8": "int8", "fp32": "fp32", "fp16": "fp16" if plan.strongly_typed else "fp32"}[precision]
    if plan.strongly_typed:
        plan.layernorm = {"int8": "FP32: the Q/DQ ONNX's float layers are FP32",
                          "fp16": "FP32: the FP16 ONNX computes LayerNorm in FP32 between Casts",
                          "fp32": "FP32"}[precision]
        return plan
    if precision == "int8":
        plan.builder_flags += ["INT8", "FP16"]  # Q/DQ layers in INT8, the float rest in FP16
    elif precision == "fp16":
        plan.builder_flags.append("FP16")
    if precision == "fp32":
        plan.layernorm = "FP32 (no FP16 flag)"
    elif layernorm_fp32:
        plan.builder_flags.append("OBEY_PRECISION_CONSTRAINTS")
        plan.fp32_tag = LN_TAG
        plan.layernorm = (f"FP32: layers named with {LN_TAG!r} get precision and output type FLOAT, "
                          "BuilderFlag.OBEY_PRECISION_CONSTRAINTS")
    else:
        plan.layernorm = "left to TensorRT (may run FP16)"
    return plan


def plan_build(version: str, precision: str = "int8", strongly_typed: Optional[bool] = None,
               layernorm_fp32: bool = True) -> BuildPlan:
    """Former name of `precision_plan` (same arguments, same result)."""
    return precision_plan(version, precision, strongly_typed, layernorm_fp32)


def fp32_layers(layers: Iterable[Tuple[str, str, Sequence[str]]], plan: BuildPlan) -> List[str]:
    """Names of the layers `plan` pins to FP32, from `(name, layer type name, output dtype names)`.

    A layer is pinned when its name holds `plan.fp32_tag` and it computes floats: constants and
    layers with non-float outputs (shape arithmetic, INT32) are left alone.
    """
    if not plan.fp32_tag:
        return []
    return [name for name, kind, outs in layers
            if plan.fp32_tag in name and kind != "CONSTANT" and outs and all(o in FLOAT_TYPES for o in outs)]


def _enum_name(x) -> str:
    return getattr(x, "name", str(x).rpartition(".")[2])


def _network_layers(network) -> List[Tuple[str, str, List[str]]]:
    out = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outs = [_enum_name(layer.get_output(j).dtype) for j in range(layer.num_outputs)]
        out.append((layer.name, _enum_name(layer.type), outs))
    return out


def apply_layer_precisions(network, plan: BuildPlan) -> List[str]:
    """Set precision and output types FLOAT on the layers `fp32_layers` selects; returns their names."""
    import tensorrt as trt

    names = set(fp32_layers(_network_layers(network), plan))
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name in names:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
    return sorted(names)


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


def _use_timing_cache(config, cache_path: Optional[Path]) -> Optional[str]:
    """Load `cache_path` (if any) into `config`; returns what happened. `set_timing_cache` returns False on
    a cache from another device or TensorRT version (ignore_mismatch=False): then a fresh cache is used and
    the file is replaced after the build. Raises when even a fresh cache is refused."""
    if cache_path is None:
        return None
    blob = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return f"loaded {cache_path} ({len(blob)} bytes)" if blob else f"new cache, saved to {cache_path}"
    status = None
    if blob:
        status = (f"{cache_path} was rejected (timing cache of another device or TensorRT version); built with a "
                  "fresh cache and replaced the file")
        cache = config.create_timing_cache(b"")
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return status
    raise EngineBuildError(f"TensorRT refused a timing cache ({status or 'even an empty one'}); build without "
                           "--timing-cache or delete the file.")


def build_engine(onnx_path, engine_path, precision: str = "int8", *, workspace_mb: int = 1024,
                 timing_cache: Optional[str] = None, batch: int = 1, strongly_typed: Optional[bool] = None,
                 layernorm_fp32: bool = True, verbose: bool = False) -> Dict[str, Any]:
    """Parse `onnx_path`, build a serialized engine at `engine_path`; returns what was done.

    `onnx_path` must be the ONNX `precision_plan(...).onnx` names (the FP16 ONNX for a strongly
    typed FP16 engine: checked from the network's input dtype).
    """
    import tensorrt as trt

    plan = precision_plan(trt.__version__, precision, strongly_typed, layernorm_fp32)
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
    if plan.strongly_typed and precision == "fp16" and network.num_inputs and network.get_input(0).dtype != trt.float16:
        raise EngineBuildError(f"{onnx_path}: a strongly typed FP16 engine runs the ONNX's dtypes, so it needs the FP16 "
                               f"ONNX (this one's input is {_enum_name(network.get_input(0).dtype)}).")

    pinned = apply_layer_precisions(network, plan)
    flags = list(plan.builder_flags)
    if plan.fp32_tag and not pinned:
        flags.remove("OBEY_PRECISION_CONSTRAINTS")
        plan.notes.append(f"no layer named with {plan.fp32_tag!r} (an ONNX from an older export?): LayerNorm "
                          "precision left to TensorRT")
        plan.layernorm = "left to TensorRT (no tagged LayerNorm layers)"
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    for name in flags:
        flag = getattr(trt.BuilderFlag, name, None)
        if flag is None:
            raise EngineBuildError(f"TensorRT {trt.__version__} has no BuilderFlag.{name} (plan: {plan.notes}).")
        config.set_flag(flag)
    dynamic = [network.get_input(i) for i in range(network.num_inputs)
               if any(int(d) < 0 for d in network.get_input(i).shape)]
    if dynamic:
        profile = builder.create_optimization_profile()
        for t in dynamic:
            profile.set_shape(t.name, *_profile_shapes(t.shape, batch))
        config.add_optimization_profile(profile)

    cache_path = Path(timing_cache) if timing_cache else None
    cache_status = _use_timing_cache(config, cache_path)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - t0
    if serialized is None:
        hint = (" With LayerNorm pinned to FP32 (OBEY_PRECISION_CONSTRAINTS) a kernel may be missing: retry "
                "with layernorm_fp32=False." if pinned else "")
        raise EngineBuildError(f"TensorRT {trt.__version__} failed to build an engine from {onnx_path} "
                               f"({precision}); rerun with --verbose for the builder log.{hint}")
    engine_path = Path(engine_path)
    _atomic_write_bytes(engine_path, serialized)
    if cache_path is not None:
        _atomic_write_bytes(cache_path, config.get_timing_cache().serialize())
    return {"tensorrt": trt.__version__, **asdict(plan), "builder_flags_set": flags, "fp32_layers": len(pinned),
            "batch": batch, "workspace_mb": workspace_mb,
            "timing_cache": str(cache_path) if cache_path else None, "timing_cache_status": cache_status,
            "build_s": round(build_s, 2),
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
