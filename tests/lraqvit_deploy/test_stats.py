"""Paired accuracy differences: the interval and the exact McNemar p every accuracy table reports."""
import math

import pytest
import torch

from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.stats import binomial_interval, mcnemar_exact_p, paired_difference


def test_identical_models_have_a_zero_width_interval():
    a = torch.tensor([1, 0, 1, 1, 0], dtype=torch.bool)
    d = paired_difference(a, a)
    assert d.diff_pt == 0 and d.ci95_pt == (0.0, 0.0) and d.mcnemar_p == 1.0 and not d.significant


def test_interval_matches_the_paired_normal_formula():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2000, generator=g) < 0.80
    b = a.clone()
    flip = torch.rand(2000, generator=g)
    b[~a & (flip < 0.5)] = True  # b fixes half of a's errors
    b[a & (flip > 0.99)] = False  # and makes a few new ones
    d = paired_difference(a, b)
    diff = (b.double() - a.double())
    se = diff.std(unbiased=True).item() / math.sqrt(2000)
    assert d.diff_pt == pytest.approx(100 * diff.mean().item())
    assert d.ci95_pt[0] == pytest.approx(100 * (diff.mean().item() - 1.96 * se), abs=1e-3)
    assert d.only_b_right == int((b & ~a).sum()) and d.only_a_right == int((a & ~b).sum())
    assert d.significant and d.mcnemar_p < 1e-6
    assert d.cell().startswith("+") and "[" in d.cell()


def test_unpaired_lengths_and_empty_inputs_are_refused():
    with pytest.raises(DeployError, match="same images"):
        paired_difference([True, False], [True])
    with pytest.raises(DeployError, match="zero images"):
        paired_difference([], [])
    with pytest.raises(DeployError, match="1-D"):
        paired_difference(torch.ones(2, 2), torch.ones(2, 2))


def test_exact_mcnemar_against_the_binomial():
    # 1 vs 9 discordant: two-sided P = 2 * (C(10,0) + C(10,1)) / 2^10
    assert mcnemar_exact_p(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact_p(5, 5) == 1.0 and mcnemar_exact_p(0, 0) == 1.0
    assert 0 < mcnemar_exact_p(4000, 4200) < 1  # large counts do not overflow


def test_wilson_interval_brackets_the_rate():
    lo, hi = binomial_interval([True] * 90 + [False] * 10)
    assert lo < 90 < hi and 80 < lo and hi < 96
