"""jetson/run.py's numpy-only pieces: which ONNX each engine is built from, the verdict it prints and writes
(the comparison and gates are lraqvit_deploy.measure.closeness: tests/lraqvit_deploy/measure)."""

import numpy as np
import pytest

from lraqvit_deploy.jetson import run
from lraqvit_deploy.measure import closeness


def test_onnx_for_follows_the_precision_plan():
    b = {"onnx": {"int8": "m_qdq.onnx", "fp32": "m_fp32.onnx", "fp16": "m_fp16.onnx"}}
    assert run.onnx_for(b, "int8", "8.5.2") == run.onnx_for(b, "int8", 11) == "m_qdq.onnx"
    assert run.onnx_for(b, "fp16", "8.5.2") == "m_fp32.onnx"  # weak typing: FP32 ONNX + FP16 flag
    assert run.onnx_for(b, "fp16", "10.3.0") == "m_fp32.onnx"
    assert run.onnx_for(b, "fp16", "10.3.0", strongly_typed=True) == "m_fp16.onnx"  # was the FP32 ONNX
    assert run.onnx_for(b, "fp16", 11) == "m_fp16.onnx"
    with pytest.raises(SystemExit, match="FP16 ONNX"):
        run.onnx_for({"onnx": {"int8": "q", "fp32": "f"}}, "fp16", "11.1")


def test_describe_verification():
    m = closeness.compare_logits(np.eye(3), np.eye(3), np.arange(3))
    ok = {"runner": "x", "reference": "the simulator", **m, "passed": True, "failed": []}
    assert "PASSED" in run.describe_verification(ok) and "top-1 100.00%" in run.describe_verification(ok)
    bad = {**ok, "top1": None, "passed": False, "failed": ["logit SQNR 3.0 dB < 12.0 dB"]}
    assert run.describe_verification(bad).endswith("FAILED: logit SQNR 3.0 dB < 12.0 dB")
    assert run.describe_verification(None) == "no verification data in the bundle"


def test_gate_failure_of_a_result_file():
    assert run.gate_failure({"extra": {"verification": {"passed": True, "failed": []}}}) is None
    assert run.gate_failure({"extra": {}}) is None  # run with --no-verify: nothing to refuse on
    why = run.gate_failure({"extra": {"verification": {"passed": False, "failed": ["a", "b"]}}})
    assert why == "the engine failed its output gates on the device (a; b)"
