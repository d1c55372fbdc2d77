"""compress_ / plan_ranks / distill_ / merge_ on tiny timm models (ViT, DeiT, Swin, DINOv2)."""
import copy

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from lraqvit_deploy.artifacts import load_model_artifact, save_model_artifact
from lraqvit_deploy.lowrank import (DistillConfig, LowRankConfig, compress_, distill_, find_targets, kd_loss,
                                     low_rank_ranks, merge_, plan_ranks, rank_summary)
from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.evaluate import count_params
from lraqvit_deploy.layers import LowRankLinear, RBLRALinear

from conftest import make_tiny
from lraqvit_deploy.model_info import model_info


pytestmark = pytest.mark.usefixtures("one_thread")


def _x(model, n=4):
    return torch.randn(n, *model.pretrained_cfg["input_size"])


@pytest.mark.parametrize("method", ["lra", "rb-lra"])
def test_every_family_compresses_and_runs(tiny_any, method):
    dense = copy.deepcopy(tiny_any)
    targets = find_targets(dense)
    n_blocks = len({n.rsplit(".", 2)[0] for n in targets})
    assert len(targets) == 4 * n_blocks  # qkv, proj, fc1, fc2 in every block
    ranks = compress_(tiny_any, LowRankConfig(method=method, param_reduction=0.3))
    kind = LowRankLinear if method == "lra" else RBLRALinear
    assert {n for n, m in tiny_any.named_modules() if isinstance(m, kind)} == set(targets) == set(ranks)
    merge_(tiny_any)
    assert low_rank_ranks(tiny_any) == ranks
    assert count_params(tiny_any) == rank_summary(dense, ranks)["params_after"]
    with torch.no_grad():
        assert torch.isfinite(tiny_any(_x(dense))).all()


@pytest.mark.parametrize("reduction", [0.2, 0.3, 0.45])
def test_uniform_ranks_hit_the_whole_model_target(tiny_vit, reduction):
    total = count_params(tiny_vit)
    ranks = plan_ranks(tiny_vit, LowRankConfig(param_reduction=reduction))
    saved = rank_summary(tiny_vit, ranks)["params_saved"]
    assert reduction <= saved / total < reduction + 0.03
    # accounting by hand: a rank-r pair of an (out, in) layer keeps r (out + in) weights
    shapes = {n: tiny_vit.get_submodule(n).weight.shape for n in ranks}
    assert saved == sum(o * i - r * (o + i) for n, r in ranks.items() for o, i in [shapes[n]])
    # uniform: every layer keeps about the same fraction of its weights
    kept = [ranks[n] * (o + i) / (o * i) for n, (o, i) in shapes.items()]
    assert max(kept) - min(kept) < 0.1


def test_rank_multiple_rounds_every_rank(tiny_vit):
    ranks = plan_ranks(tiny_vit, LowRankConfig(param_reduction=0.45, rank_multiple=8))
    assert all(r % 8 == 0 for r in ranks.values())
    assert rank_summary(tiny_vit, ranks)["params_saved"] >= 0.45 * count_params(tiny_vit)


def test_ranks_that_save_nothing_are_refused(tiny_vit):
    # proj is 64 x 64: break-even rank 32
    with pytest.raises(DeployError, match="saves nothing"):
        compress_(tiny_vit, LowRankConfig(ranks={"blocks.0.attn.proj": 32}))
    with pytest.raises(DeployError, match="rounds up to break-even"):
        plan_ranks(tiny_vit, LowRankConfig(param_reduction=0.02, rank_multiple=16))
    with pytest.raises(DeployError, match="out of reach"):
        plan_ranks(tiny_vit, LowRankConfig(param_reduction=0.95))
    with pytest.raises(DeployError, match="not compressible targets"):
        plan_ranks(tiny_vit, LowRankConfig(ranks={"head": 4}))
    with pytest.raises(DeployError, match="exactly one"):
        LowRankConfig(param_reduction=0.3, ranks={"blocks.0.attn.proj": 8})
    with pytest.raises(DeployError, match="param_reduction = 45.0: must be < 1"):
        LowRankConfig(param_reduction=45)


def test_per_layer_rank_dict_replaces_only_those_layers(tiny_vit):
    ranks = {"blocks.0.attn.qkv": 8, "blocks.1.mlp.fc2": 16}
    assert compress_(tiny_vit, LowRankConfig(method="lra", ranks=ranks)) == ranks
    assert low_rank_ranks(tiny_vit) == ranks
    assert type(tiny_vit.get_submodule("blocks.0.attn.proj")) is torch.nn.Linear


def test_lra_is_the_truncated_svd(tiny_vit):
    dense = copy.deepcopy(tiny_vit)
    compress_(tiny_vit, LowRankConfig(method="lra", ranks={"blocks.0.mlp.fc1": 10}))
    w = dense.get_submodule("blocks.0.mlp.fc1").weight.detach()
    s = torch.linalg.svdvals(w)
    err = (tiny_vit.get_submodule("blocks.0.mlp.fc1").to_linear().weight - w).norm()
    torch.testing.assert_close(err, s[10:].pow(2).sum().sqrt(), rtol=1e-4, atol=1e-5)  # Eckart-Young


@pytest.mark.parametrize("method", ["lra", "rb-lra"])
def test_compress_save_reload_gives_identical_outputs(tmp_path, tiny_any, method):
    compress_(tiny_any, LowRankConfig(method=method, param_reduction=0.3, rank_multiple=4))
    merge_(tiny_any)
    save_model_artifact(tmp_path / "m", tiny_any, {"compression": {"ranks": low_rank_ranks(tiny_any)}})
    back = load_model_artifact(tmp_path / "m")
    x = _x(tiny_any)
    with torch.no_grad():
        torch.testing.assert_close(back(x), tiny_any(x), rtol=0, atol=0)
    assert model_info(back).manifest["compression"]["ranks"] == low_rank_ranks(tiny_any)


def _teacher_labelled(model, n=64, seed=0):
    """Images with the teacher's own predictions as labels, so the student can match both terms."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *model.pretrained_cfg["input_size"], generator=g)
    with torch.no_grad():
        y = model(x).argmax(-1)
    return TensorDataset(x, y)


@pytest.mark.parametrize("method,family", [("rb-lra", "deit"), ("lra", "swin")])
def test_block_kd_lowers_the_kd_loss(method, family):
    teacher = make_tiny(family)
    student = copy.deepcopy(teacher)
    compress_(student, LowRankConfig(method=method, param_reduction=0.45))
    ds = _teacher_labelled(teacher)
    x, y = ds.tensors
    before = kd_loss(student, teacher, x, y)
    flags = [p.requires_grad for p in student.parameters()]
    frozen = {n: p.detach().clone() for n, p in student.named_parameters() if "branch" not in n and "up" not in n
              and "down" not in n}
    result = distill_(student, teacher, ds, DistillConfig(steps=30, batch_size=16, lr=3e-3), progress=False)
    after = kd_loss(student, teacher, x, y)
    assert result.steps == 30 and len(result.losses) == 30
    assert after["loss"] < 0.7 * before["loss"], (before, after)
    for n, p in student.named_parameters():  # only the low-rank factors moved
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert [p.requires_grad for p in student.parameters()] == flags  # restored


class _Flaky(Dataset):
    """Raises after `fail_after` item reads: an interrupted run."""

    def __init__(self, base, fail_after):
        self.base, self.left = base, fail_after

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.left -= 1
        if self.left < 0:
            raise KeyboardInterrupt
        return self.base[i]


def test_interrupted_distillation_resumes_to_the_same_weights(tmp_path):
    teacher = make_tiny("vit")
    ds = _teacher_labelled(teacher, n=32)
    cfg = DistillConfig(steps=6, batch_size=8, lr=1e-3, checkpoint_every=2)

    def fresh():
        s = copy.deepcopy(teacher)
        compress_(s, LowRankConfig(method="rb-lra", param_reduction=0.3))
        return s

    straight = fresh()
    distill_(straight, teacher, ds, cfg, progress=False)

    ckpt = tmp_path / "kd.pt"
    broken = fresh()
    with pytest.raises(KeyboardInterrupt):
        distill_(broken, teacher, _Flaky(ds, fail_after=8 * 5), cfg, checkpoint=ckpt, progress=False)
    assert torch.load(ckpt, weights_only=True)["step"] == 4
    resumed = fresh()
    result = distill_(resumed, teacher, ds, cfg, checkpoint=ckpt, resume=True, progress=False)
    assert result.start_step == 4 and len(result.losses) == 6
    for (n, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=n)

    with pytest.raises(DeployError, match="different"):
        distill_(fresh(), teacher, ds, DistillConfig(steps=7, batch_size=8), checkpoint=ckpt, resume=True,
                 progress=False)


@pytest.mark.parametrize("fields, words, flag", [
    ({"rank_multiple": 0}, "rank_multiple = 0: must be >= 1", "--rank-multiple 0"),
    ({"rank_multiple": 10 ** 9}, "rank_multiple = 1000000000: must be <= 65536", "--rank-multiple"),
    ({"seed": -1}, "seed = -1: must be >= 0", "--seed -1"), ({"seed": 2 ** 31}, "seed = 2147483648", "--seed"),
    ({"init_std": float("nan")}, "init_std = nan: expected a finite number", "init_std"),
    ({"init_std": 0.0}, "init_std = 0.0: must be > 0", "init_std"),
    ({"param_reduction": 1.0}, "param_reduction = 1.0: must be < 1", "--param-reduction 1.0"),
])
def test_low_rank_config_rejects_out_of_range_numbers(fields, words, flag):
    """One line naming the field in Python, the flag on the command line (init_std has none)."""
    from lraqvit_deploy.cli.args import flag_error
    from lraqvit_deploy.errors import DeployError
    from lraqvit_deploy.lowrank import LowRankConfig

    with pytest.raises(DeployError, match=None) as e:
        LowRankConfig("rb-lra", **{"param_reduction": 0.45, **fields})
    assert str(e.value).startswith(words) and "\n" not in str(e.value)
    assert flag_error(e.value).startswith(flag)
    with pytest.raises(DeployError, match="a rank must be >= 1"):
        LowRankConfig("lra", ranks={"blocks.0.attn.qkv": 0})
