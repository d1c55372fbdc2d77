"""Engine builder: the version table (runs here) and a real build + CUDA-event timing (needs a GPU)."""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from lraqvit_deploy.jetson import engine

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
HAS_PYCUDA = importlib.util.find_spec("pycuda") is not None


OBEY = "OBEY_PRECISION_CONSTRAINTS"


def test_trt85_weak_typing_with_explicit_batch():
    p = engine.plan_build("8.5.2.2", "int8")
    assert p.network_flags == ["EXPLICIT_BATCH"] and p.builder_flags == ["INT8", "FP16", OBEY] and not p.strongly_typed
    assert p.onnx == "int8" and p.fp32_tag == engine.LN_TAG
    f16 = engine.plan_build("8.5.2", "fp16")
    assert f16.builder_flags == ["FP16", OBEY] and f16.onnx == "fp32"  # weak typing: FP32 ONNX + FP16 flag
    assert engine.plan_build("8.5.2", "fp32").builder_flags == [] and engine.plan_build("8.5.2", "fp32").fp32_tag is None
    assert engine.plan_build("8.5.2", "int8", layernorm_fp32=False).builder_flags == ["INT8", "FP16"]
    with pytest.raises(engine.EngineBuildError, match="no strongly typed"):
        engine.plan_build("8.5.2", "int8", strongly_typed=True)


def test_trt10_weak_by_default_strong_on_request():
    p = engine.plan_build("10.3.0", "int8")
    assert p.network_flags == [] and p.builder_flags == ["INT8", "FP16", OBEY]
    s = engine.plan_build("10.3.0", "int8", strongly_typed=True)
    assert s.network_flags == ["STRONGLY_TYPED"] and s.builder_flags == [] and s.strongly_typed and s.fp32_tag is None
    # strongly typed FP16 on 10.x builds from the FP16 ONNX (it used to take the FP32 one)
    assert engine.plan_build("10.3.0", "fp16", strongly_typed=True).onnx == "fp16"
    assert engine.plan_build("10.3.0", "fp16").onnx == "fp32"


def test_trt11_always_strongly_typed_no_precision_flags():
    p = engine.plan_build("11.4.1", "int8")
    assert p.strongly_typed and p.builder_flags == [] and p.network_flags == [] and p.fp32_tag is None
    assert engine.plan_build("11.0", "fp16").onnx == "fp16" and "Casts" in engine.plan_build("11.0", "fp16").layernorm
    with pytest.raises(engine.EngineBuildError, match="no weak typing"):
        engine.plan_build("11.0", "fp16", strongly_typed=False)


def test_fp32_layer_selection():
    """Which network layers the plan pins: tagged, float-computing, not constants (names as the parser gives them)."""
    tag = engine.LN_TAG
    layers = [(f"/blocks/blocks.0/norm1/{tag}/ReduceMean", "REDUCE", ["FLOAT"]),
              (f"/blocks/blocks.0/norm1/{tag}/Pow", "ELEMENTWISE", ["FLOAT"]),
              (f"/blocks/blocks.0/norm1/{tag}/Pow_1", "SHUFFLE", ["FLOAT"]),  # a helper layer: uniquified name
              (f"/blocks/blocks.0/norm1/{tag}/Constant_output_0", "CONSTANT", ["FLOAT"]),
              (f"/blocks/blocks.0/norm1/{tag}/Shape", "SHAPE", ["INT32"]),
              ("/blocks/blocks.0/attn/qkv/MatMul", "MATRIX_MULTIPLY", ["FLOAT"])]
    pinned = engine.fp32_layers(layers, engine.precision_plan("8.5.2", "int8"))
    assert pinned == [layers[0][0], layers[1][0], layers[2][0]]
    assert engine.fp32_layers(layers, engine.precision_plan("10.3", "fp16", strongly_typed=True)) == []
    assert engine.fp32_layers(layers, engine.precision_plan("8.5.2", "fp32")) == []


def test_too_old_or_unknown():
    with pytest.raises(engine.EngineBuildError, match=">= 8.5"):
        engine.plan_build("8.4.1", "int8")
    with pytest.raises(engine.EngineBuildError, match="precision"):
        engine.plan_build("8.5.2", "int4")


def test_engine_module_imports_without_lraqvit_or_torch(tmp_path):
    """The bundle copy must load on a Jetson that has neither torch nor lraqvit-deploy."""
    code = ("import sys; sys.modules['torch'] = None; sys.modules['lraqvit_deploy'] = None; "
            f"sys.path.insert(0, {os.path.dirname(engine.__file__)!r}); import engine; "
            "print(engine.plan_build('8.5.2', 'int8').builder_flags)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['INT8', 'FP16', 'OBEY_PRECISION_CONSTRAINTS']"


@pytest.mark.tensorrt
@pytest.mark.skipif(not (HAS_TRT and HAS_PYCUDA),
                    reason="tensorrt and pycuda are not installable here (no NVIDIA GPU); runs on a Jetson / GPU host")
def test_build_verify_and_time_tiny_engines(tmp_path, tiny_vit):  # pragma: no cover - needs a GPU
    """A real engine from the int8-weight Q/DQ ONNX: LayerNorm layers pinned FP32, outputs close to the simulator."""
    import tensorrt as trt

    from lraqvit_deploy.backends.tensorrt import qdq, verify
    from lraqvit_deploy.backends.tensorrt.onnx_export import export_onnx
    from lraqvit_deploy.jetson import cuda_bench
    from lraqvit_deploy.measure import closeness

    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    sim, _ = qdq.engine_model(tiny_vit, torch.randn(8, 3, 32, 32), "naive")
    onnx_path = export_onnx(qdq.to_qdq_export(sim), tmp_path / "m_qdq.onnx", (3, 32, 32))
    info = engine.build_engine(onnx_path, tmp_path / "m.engine", "int8", timing_cache=str(tmp_path / "t.cache"))
    assert (tmp_path / "m.engine").stat().st_size > 0 and (tmp_path / "t.cache").is_file()
    assert info["tensorrt"] and info["timing_cache_status"].startswith("new cache")
    if not info["strongly_typed"]:
        assert info["fp32_layers"] > 0 and "OBEY_PRECISION_CONSTRAINTS" in info["builder_flags_set"]
    with torch.no_grad():
        ref = sim(x).numpy()
    m = closeness.compare_logits(cuda_bench.run_engine(str(tmp_path / "m.engine"), x.numpy()), ref)
    assert not closeness.gate_problems(m, verify.DEVICE_GATES["int8"], agreement_needs_labels=True), m
    again = engine.build_engine(onnx_path, tmp_path / "m2.engine", "int8", timing_cache=str(tmp_path / "t.cache"))
    assert again["timing_cache_status"].startswith("loaded")
    # FP16: the plan picks the ONNX (FP32 + flag under weak typing, the FP16 ONNX under strong typing)
    plan = engine.precision_plan(trt.__version__, "fp16")
    fp = export_onnx(tiny_vit, tmp_path / "m_fp.onnx", (3, 32, 32), fp16=plan.onnx == "fp16")
    engine.build_engine(fp, tmp_path / "h.engine", "fp16")
    with torch.no_grad():
        fref = tiny_vit(x).numpy()
    m16 = closeness.compare_logits(cuda_bench.run_engine(str(tmp_path / "h.engine"), x.numpy()), fref)
    assert not closeness.gate_problems(m16, verify.DEVICE_GATES["fp16"], agreement_needs_labels=True), m16
    timed = cuda_bench.time_engine(str(tmp_path / "m.engine"), iterations=10, warmup=2)
    assert len(timed["times_ms"]) == 10 and min(timed["times_ms"]) > 0
