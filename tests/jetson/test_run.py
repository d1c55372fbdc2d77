"""jetson/run.py's numpy-only pieces: logit comparison, gates, which ONNX each engine is built from."""
import math

import numpy as np
import pytest

from lraqvit_deploy.jetson import run


def test_compare_logits_numbers():
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    same = run.compare_logits(ref, ref, np.array([0, 1]))
    assert same["sqnr_db"] == run.SQNR_CAP_DB and same["agreement"] == 1.0 and same["cosine_min"] == pytest.approx(1.0)
    assert same["top1"] == same["top1_reference"] == 100.0
    noisy = run.compare_logits(ref * 1.1, ref)  # error = 0.1 x signal -> 20 dB, cosine 1
    assert noisy["sqnr_db"] == pytest.approx(20.0) and noisy["cosine_mean"] == pytest.approx(1.0)
    assert noisy["top1"] is None  # no labels
    flipped = run.compare_logits(ref[:, ::-1], ref, np.array([-1, -1]))  # synthetic labels: no top-1
    assert flipped["agreement"] == 0.5 and flipped["top1"] is None
    assert math.isclose(flipped["cosine_min"], 0.0, abs_tol=1e-12)
    with pytest.raises(ValueError):
        run.compare_logits(ref[:1], ref)


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
    m = run.compare_logits(np.eye(3), np.eye(3), np.arange(3))
    ok = {"runner": "x", "reference": "the simulator", **m, "passed": True, "failed": []}
    assert "PASSED" in run.describe_verification(ok) and "top-1 100.00%" in run.describe_verification(ok)
    bad = {**ok, "top1": None, "passed": False, "failed": ["logit SQNR 3.0 dB < 12.0 dB"]}
    assert run.describe_verification(bad).endswith("FAILED: logit SQNR 3.0 dB < 12.0 dB")
    assert run.describe_verification(None) == "no verification data in the bundle"


def test_near_tie_flips_are_counted_apart_in_the_agreement_gate():
    """A flip within twice the TYPICAL (median) row error is a near tie; a flip that needs an atypically
    large error on its image is not (a per-row rule would excuse every flip: gap < 2 x own error)."""
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(20, 5)) * 3
    ref[:, 0] += 10  # class 0 wins by a wide margin on every row...
    ref[0, :2] = [5.0, 4.99]  # ...except row 0: a near tie
    got = ref + rng.normal(scale=0.05, size=ref.shape)  # typical error ~0.1
    got[0, :2] = [4.98, 5.01]  # the near tie flips: gap 0.01 << 2 x 0.1
    got[1, 1] = ref[1, 0] + 1.0  # row 1 flips with a real margin: its own error is large, the typical one is not
    m = run.compare_logits(got, ref, np.zeros(20, dtype=int))
    assert m["agreement"] == pytest.approx(0.9) and m["near_tie_flips"] == 1 and m["gated_agreement"] == pytest.approx(0.95)
    assert run.near_tie_flips(ref, ref) == 0
    gates = {"min_agreement": 0.99, "min_sqnr_db": None, "min_cosine": None}
    assert "near-tie flips counted as agreeing: 1" in run.check_gates(m, gates)[0]
    assert run.check_gates(m, {**gates, "min_agreement": 0.95}) == []


def test_nan_and_inf_fail_every_gate():
    """NaN compares false with everything: a `<` gate passed it, min(200, nan) read as 200 dB, a NaN norm as cosine 1."""
    ref = np.eye(4) * 3 + 0.1
    gates = {"min_agreement": 0.9, "min_sqnr_db": 12.0, "min_cosine": 0.97}
    assert run.check_gates(run.compare_logits(ref, ref, np.arange(4)), gates) == []  # the control
    for bad_value in (math.nan, math.inf, -math.inf):
        got = ref.copy()
        got[2, 1] = bad_value
        m = run.compare_logits(got, ref, np.arange(4))
        assert m["nonfinite"] == 1 and math.isnan(m["sqnr_db"]) and math.isnan(m["cosine_min"])
        failed = run.check_gates(m, gates)
        assert failed[0] == "NaN/inf logits on 1 of 4 images" and any("SQNR nan dB" in f for f in failed)
        # no gate configured at all: still a failure
        assert run.check_gates(m, {"min_agreement": None, "min_sqnr_db": None, "min_cosine": None})
    m = run.compare_logits(ref, np.where(np.eye(4) > 0, np.nan, ref))  # the reference itself is broken
    assert "the reference logits hold NaN/inf on 4 of 4 images" in run.check_gates(m, gates)
    # a metric that is NaN without a counted row (e.g. from an older result) fails its gate too
    nan = {"agreement": 1.0, "sqnr_db": math.nan, "cosine_mean": math.nan, "top1": None}
    assert len(run.check_gates(nan, gates)) == 2


def test_gate_failure_of_a_result_file():
    assert run.gate_failure({"extra": {"verification": {"passed": True, "failed": []}}}) is None
    assert run.gate_failure({"extra": {}}) is None  # run with --no-verify: nothing to refuse on
    why = run.gate_failure({"extra": {"verification": {"passed": False, "failed": ["a", "b"]}}})
    assert why == "the engine failed its output gates on the device (a; b)"
