"""lraqvit_deploy.measure.closeness: the one logit comparison and gate set every verifier uses (Android host,
emulated Arm CPUs, onnxruntime, the Jetson's run.py)."""
import math

import numpy as np
import pytest
import torch

from lraqvit_deploy.measure import closeness


def test_compare_logits_numbers():
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    same = closeness.compare_logits(ref, ref, np.array([0, 1]))
    assert same["sqnr_db"] is None and same["bit_exact"] and same["agreement"] == 1.0 and same["cosine_min"] == pytest.approx(1.0)
    assert same["top1"] == same["top1_reference"] == 100.0
    noisy = closeness.compare_logits(ref * 1.1, ref)  # error = 0.1 x signal -> 20 dB, cosine 1
    assert noisy["sqnr_db"] == pytest.approx(20.0) and noisy["cosine_mean"] == pytest.approx(1.0)
    assert noisy["top1"] is None  # no labels
    flipped = closeness.compare_logits(ref[:, ::-1], ref, np.array([-1, -1]))  # synthetic labels: no top-1
    assert flipped["agreement"] == 0.5 and flipped["top1"] is None
    assert math.isclose(flipped["cosine_min"], 0.0, abs_tol=1e-12)
    with pytest.raises(ValueError):
        closeness.compare_logits(ref[:1], ref)


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
    m = closeness.compare_logits(got, ref, np.zeros(20, dtype=int))
    assert m["agreement"] == pytest.approx(0.9) and m["near_tie_flips"] == 1 and m["gated_agreement"] == pytest.approx(0.95)
    assert closeness.near_tie_flips(ref, ref) == 0
    gates = {"min_agreement": 0.99, "min_sqnr_db": None, "min_cosine": None}
    assert "near-tie flips counted as agreeing: 1" in closeness.gate_problems(m, gates, agreement_needs_labels=True)[0]
    assert closeness.gate_problems(m, {**gates, "min_agreement": 0.95}) == []


def test_nan_and_inf_fail_every_gate():
    """NaN compares false with everything: a `<` gate passed it, min(200, nan) read as 200 dB, a NaN norm as cosine 1."""
    ref = np.eye(4) * 3 + 0.1
    gates = {"min_agreement": 0.9, "min_sqnr_db": 12.0, "min_cosine": 0.97}
    assert closeness.gate_problems(closeness.compare_logits(ref, ref, np.arange(4)), gates) == []  # the control
    for bad_value in (math.nan, math.inf, -math.inf):
        got = ref.copy()
        got[2, 1] = bad_value
        m = closeness.compare_logits(got, ref, np.arange(4))
        assert m["nonfinite"] == 1 and math.isnan(m["sqnr_db"]) and math.isnan(m["cosine_min"])
        failed = closeness.gate_problems(m, gates, agreement_needs_labels=True)
        assert failed == ["NaN/inf logits on 1 of 4 images"]  # alone: every other measure of it is NaN
        # no gate configured at all: still a failure
        assert closeness.gate_problems(m, {"min_agreement": None, "min_sqnr_db": None, "min_cosine": None})
    m = closeness.compare_logits(ref, np.where(np.eye(4) > 0, np.nan, ref))  # the reference itself is broken
    assert "the reference logits hold NaN/inf on 4 of 4 images" in closeness.gate_problems(m, gates, agreement_needs_labels=True)
    # a metric that is NaN without a counted row (e.g. from an older result) fails its gate too
    nan = {"agreement": 1.0, "sqnr_db": math.nan, "cosine_mean": math.nan, "top1": None}
    assert len(closeness.gate_problems(nan, gates)) == 2


def test_torch_and_numpy_inputs_agree_and_bit_exact_is_not_a_gate_failure():
    ref = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    a = closeness.compare_logits(ref + 0.01, ref, torch.arange(6))
    b = closeness.compare_logits((ref + 0.01).numpy(), ref.numpy(), np.arange(6))
    assert a == b and a["top1"] is not None and not a["bit_exact"]
    exact = closeness.compare_logits(ref, ref.clone())
    assert exact["sqnr_db"] is None and exact["bit_exact"]
    assert closeness.gate_problems(exact, {"min_sqnr_db": 60.0, "min_cosine": 0.999, "min_agreement": 0.99}) == []
    # a None SQNR that is not bit-exact (a result missing its value) fails, it is not read as infinite
    assert closeness.gate_problems({**exact, "bit_exact": False}, {"min_sqnr_db": 60.0})


def test_raw_agreement_when_asked_and_labels_rule():
    ref = np.array([[2.0, 1.99], [0.0, 3.0], [3.0, 0.0], [1.0, 0.0]])
    got = ref + np.array([[0.03, -0.03]])  # typical error 0.03
    got[0] = [1.98, 2.0]  # a near tie flips: gap 0.01 <= 2 x 0.03
    m = closeness.compare_logits(got, ref, np.array([0, 1, 0, 0]))
    assert m["near_tie_flips"] == 1 and m["gated_agreement"] == 1.0 and m["agreement"] == 0.75
    assert closeness.gate_problems(m, {"min_agreement": 0.9}) == []
    assert closeness.gate_problems(m, {"min_agreement": 0.9}, gated=False) == ["top-1 agreement 75.00% < 90.0%"]
    unlabelled = closeness.compare_logits(got, ref)
    assert closeness.gate_problems(unlabelled, {"min_agreement": 0.9}, gated=False, agreement_needs_labels=True) == []


def test_the_jetson_bundle_ships_the_module_it_imports():
    """run.py imports `closeness` as a sibling file on the Jetson: the bundle must carry it."""
    from lraqvit_deploy.backends.tensorrt.bundle import FILES, _source

    assert FILES["lraqvit_deploy/measure/closeness.py"] == "closeness.py"
    text = _source("lraqvit_deploy/measure/closeness.py").read_text()
    assert "\nimport torch" not in text and "from lraqvit_deploy" not in text  # numpy + stdlib only


def test_torch_logits_exact_and_noisy():
    ref = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 1.0]])
    exact = closeness.compare_logits(ref.clone(), ref)
    assert exact["bit_exact"] and exact["sqnr_db"] is None and exact["agreement"] == 1.0
    noisy = closeness.compare_logits(ref + 0.01, ref, labels=torch.tensor([1, 2]))
    assert 40 < noisy["sqnr_db"] < 60 and noisy["top1"] == 50.0 and noisy["max_abs_diff"] == pytest.approx(0.01)
