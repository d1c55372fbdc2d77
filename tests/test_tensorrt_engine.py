"""Engine builder: the version table (runs here) and a real build + CUDA-event timing (needs a GPU)."""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from lraqvit_deploy.backends.tensorrt import engine

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
HAS_PYCUDA = importlib.util.find_spec("pycuda") is not None


def test_trt85_weak_typing_with_explicit_batch():
    p = engine.plan_build("8.5.2.2", "int8")
    assert p.network_flags == ["EXPLICIT_BATCH"] and p.builder_flags == ["INT8", "FP16"] and not p.strongly_typed
    assert engine.plan_build("8.5.2", "fp16").builder_flags == ["FP16"]
    assert engine.plan_build("8.5.2", "fp32").builder_flags == []
    with pytest.raises(engine.EngineBuildError, match="no strongly typed"):
        engine.plan_build("8.5.2", "int8", strongly_typed=True)


def test_trt10_weak_by_default_strong_on_request():
    p = engine.plan_build("10.3.0", "int8")
    assert p.network_flags == [] and p.builder_flags == ["INT8", "FP16"]
    s = engine.plan_build("10.3.0", "int8", strongly_typed=True)
    assert s.network_flags == ["STRONGLY_TYPED"] and s.builder_flags == [] and s.strongly_typed


def test_trt11_always_strongly_typed_no_precision_flags():
    p = engine.plan_build("11.4.1", "int8")
    assert p.strongly_typed and p.builder_flags == [] and p.network_flags == []
    with pytest.raises(engine.EngineBuildError, match="no weak typing"):
        engine.plan_build("11.0", "fp16", strongly_typed=False)


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
    assert out.stdout.strip() == "['INT8', 'FP16']"


@pytest.mark.skipif(not (HAS_TRT and HAS_PYCUDA),
                    reason="tensorrt and pycuda are not installable here (no NVIDIA GPU); runs on a Jetson / GPU host")
def test_build_and_time_tiny_qdq_engine(tmp_path, tiny_vit):  # pragma: no cover - needs a GPU
    from lraqvit_deploy.backends.tensorrt import qdq
    from lraqvit_deploy.backends.tensorrt.onnx_export import export_onnx
    from lraqvit_deploy.jetson import cuda_bench

    qdq.to_per_tensor_(tiny_vit, torch.randn(8, 3, 32, 32))
    onnx_path = export_onnx(qdq.to_qdq_export(tiny_vit), tmp_path / "m_qdq.onnx", (3, 32, 32))
    info = engine.build_engine(onnx_path, tmp_path / "m.engine", "int8", timing_cache=str(tmp_path / "t.cache"))
    assert (tmp_path / "m.engine").stat().st_size > 0 and (tmp_path / "t.cache").is_file()
    assert info["tensorrt"]
    timed = cuda_bench.time_engine(str(tmp_path / "m.engine"), iterations=10, warmup=2)
    assert len(timed["times_ms"]) == 10 and min(timed["times_ms"]) > 0
