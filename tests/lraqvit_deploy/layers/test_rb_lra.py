"""RBLRALinear: WR/zero/random inits, frozen base, exact merge, artifact round trip."""
import pytest
import torch
import torch.nn as nn

from lraqvit_deploy.layers import LowRankLinear, RBLRALinear, svd_factors


pytestmark = pytest.mark.usefixtures("one_thread")


def _linear(out_f=48, in_f=32, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(in_f, out_f)


def test_wr_init_matches_definition():
    lin, r = _linear(), 6
    m = RBLRALinear.from_linear(lin, r, init="wr")
    u, s, vh = torch.linalg.svd(lin.weight.detach().double(), full_matrices=False)
    torch.testing.assert_close(m.branch_up.double(), u[:, r : 2 * r] * s[r : 2 * r], rtol=1e-5, atol=1e-6)
    assert torch.count_nonzero(m.branch_down) == 0
    up, down = svd_factors(lin.weight, r)
    torch.testing.assert_close(m.up.weight, up)
    torch.testing.assert_close(m.down.weight, down)
    torch.testing.assert_close(m.up.bias, lin.bias)


def test_wr_init_zero_pads_when_spectrum_runs_out():
    lin, r = _linear(out_f=10, in_f=6), 4  # 6 singular values: only 2 are discarded
    m = RBLRALinear.from_linear(lin, r, init="wr")
    s = torch.linalg.svdvals(lin.weight.detach())
    assert torch.count_nonzero(m.branch_up[:, 2:]) == 0
    torch.testing.assert_close(m.branch_up[:, :2].norm(dim=0), s[4:6], rtol=1e-4, atol=1e-6)


def test_zero_init_is_plain_truncated_svd():
    lin, x = _linear(), torch.randn(5, 32)
    torch.testing.assert_close(RBLRALinear.from_linear(lin, 8, init="zero")(x), LowRankLinear.from_linear(lin, 8)(x))


def test_random_init_is_seeded_and_scaled_like_wr():
    lin = _linear()
    a = RBLRALinear.from_linear(lin, 6, init="random", generator=torch.Generator().manual_seed(1))
    b = RBLRALinear.from_linear(lin, 6, init="random", generator=torch.Generator().manual_seed(1))
    wr = RBLRALinear.from_linear(lin, 6, init="wr")
    torch.testing.assert_close(a.branch_up, b.branch_up)
    assert not torch.allclose(a.branch_up, wr.branch_up)
    ratio = a.branch_up.pow(2).mean().sqrt() / wr.branch_up.pow(2).mean().sqrt()
    assert 0.7 < ratio < 1.3
    c = RBLRALinear.from_linear(lin, 6, init="random", std=1.0, generator=torch.Generator().manual_seed(1))
    assert 0.7 < c.branch_up.std() < 1.3


def test_merge_is_exact_after_training_the_branch():
    m = RBLRALinear.from_linear(_linear(), 8, init="wr")
    with torch.no_grad():  # stand-in for training: arbitrary branch values
        m.branch_up.add_(torch.randn_like(m.branch_up) * 0.1)
        m.branch_down.add_(torch.randn_like(m.branch_down) * 0.1)
    x = torch.randn(4, 7, 32)
    merged = m.merge()
    assert isinstance(merged, LowRankLinear) and merged.rank == 8
    torch.testing.assert_close(merged(x), m(x), rtol=1e-5, atol=1e-6)
    dense = (m.up.weight + m.branch_up) @ (m.down.weight + m.branch_down)
    torch.testing.assert_close(merged.to_linear().weight, dense, rtol=1e-5, atol=1e-6)
    assert sum(p.numel() for p in merged.parameters()) == 8 * (48 + 32) + 48


@pytest.mark.parametrize("train_base", [False, True])
def test_base_frozen_or_trainable(train_base):
    m = RBLRALinear.from_linear(_linear(), 4, init="zero", train_base=train_base)
    m(torch.randn(3, 32)).pow(2).sum().backward()
    assert m.branch_up.grad is not None and m.branch_down.grad is not None
    assert (m.up.weight.grad is not None) == train_base
    assert (m.down.weight.grad is not None) == train_base
    assert m.artifact_entry() == {"type": "rb_lra_linear", "rank": 4, "train_base": train_base}


def test_bad_rank_and_init_are_refused():
    with pytest.raises(ValueError, match="rank"):
        RBLRALinear(32, 48, 0)
    with pytest.raises(ValueError, match="init"):
        RBLRALinear.from_linear(_linear(), 4, init="svd")


def test_unmerged_model_survives_an_artifact_round_trip(tmp_path, tiny_vit):
    from lraqvit_deploy.artifacts import load_model_artifact, save_model_artifact
    from lraqvit_deploy.lowrank import LowRankConfig, compress_

    compress_(tiny_vit, LowRankConfig(method="rb-lra", param_reduction=0.3, init="random"))
    save_model_artifact(tmp_path / "a", tiny_vit)
    back = load_model_artifact(tmp_path / "a")
    assert isinstance(back.get_submodule("blocks.0.attn.qkv"), RBLRALinear)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back(x), tiny_vit(x), rtol=0, atol=0)
