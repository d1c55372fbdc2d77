"""Distillation options: lr warm-up, per-block normalised MSE, training LayerNorms and biases."""
import copy
import math

import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from lraqvit_deploy.cli.compress import recipe_from_args
from lraqvit_deploy.cli.main import build_parser
from lraqvit_deploy.lowrank import DistillConfig, LowRankConfig, compress_, distill_
from lraqvit_deploy.lowrank.distill import block_kd_loss, kd_parameters, warmup_cosine
from lraqvit_deploy.errors import DeployError

from conftest import make_tiny


pytestmark = pytest.mark.usefixtures("one_thread")


def test_warmup_then_cosine_to_zero():
    f = warmup_cosine(total=20, warmup=4)
    lrs = [f(s) for s in range(21)]
    assert lrs[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8]) and lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:])) and lrs[20] == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(10, 0)(5) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))  # plain cosine
    assert DistillConfig().warmup(240) == 12 and DistillConfig(warmup_steps=3).warmup(240) == 3
    with pytest.raises(DeployError):
        DistillConfig(warmup_steps=-1)


def test_nmse_divides_each_block_by_its_teacher_mean_square():
    torch.manual_seed(0)
    logits, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    t = [torch.randn(4, 5, 8), 30 * torch.randn(4, 5, 8)]  # a small and a large block
    s = [a + 0.1 * a.std() * torch.randn_like(a) for a in t]  # 10% relative error in each block
    _, _, plain = block_kd_loss(logits, s, t, y, DistillConfig(feature_loss="mse"))
    _, _, norm = block_kd_loss(logits, s, t, y, DistillConfig(feature_loss="nmse"))
    want = sum(((a - b) ** 2).mean() / (b ** 2).mean() for a, b in zip(s, t))
    assert norm.item() == pytest.approx(want.item(), rel=1e-5)
    assert plain.item() > 100 * norm.item()  # the paper's sum is dominated by the large block
    _, _, scaled = block_kd_loss(logits, [10 * a for a in s], [10 * b for b in t], y, DistillConfig(feature_loss="nmse"))
    assert scaled.item() == pytest.approx(norm.item(), rel=1e-5)  # scale-free per block


def test_low_rank_plus_norm_trains_layernorms_and_biases_only():
    teacher = make_tiny("deit")
    student = copy.deepcopy(teacher)
    compress_(student, LowRankConfig(method="rb-lra", param_reduction=0.45))
    names = {n for n, p in student.named_parameters() if id(p) in {id(q) for q in kd_parameters(student, "low_rank+norm")}}
    assert any(n.endswith("norm1.weight") for n in names) and "norm.bias" in names
    assert "blocks.0.mlp.fc1.up.bias" in names and "blocks.0.attn.qkv.branch_up" in names
    assert "head.weight" not in names and "patch_embed.proj.weight" not in names
    assert "blocks.0.attn.qkv.up.weight" not in names  # frozen base stays frozen

    x = torch.randn(32, *teacher.pretrained_cfg["input_size"])
    with torch.no_grad():
        ds = TensorDataset(x, teacher(x).argmax(-1))
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    distill_(student, teacher, ds, DistillConfig(steps=3, batch_size=8, lr=1e-2, warmup_steps=1,
                                                 feature_loss="nmse", trainable="low_rank+norm"), progress=False)
    moved = {n for n, p in student.named_parameters() if not torch.equal(p, before[n])}
    assert "blocks.0.norm1.weight" in moved and "blocks.1.mlp.fc2.up.bias" in moved
    assert moved <= names, moved - names


def test_cli_passes_the_kd_options():
    args = build_parser().parse_args(["compress", "--method", "rb-lra", "--param-reduction", "0.45", "--out", "x",
                                      "--kd-warmup-steps", "7", "--kd-feature-loss", "mse",
                                      "--kd-trainable", "all", "--kd-lr", "2e-4"])
    kd = recipe_from_args(args).distill
    assert (kd.warmup_steps, kd.feature_loss, kd.trainable, kd.lr) == (7, "mse", "all", 2e-4)
    default = recipe_from_args(build_parser().parse_args(["compress", "--method", "rb-lra",
                                                              "--param-reduction", "0.45", "--out", "x"])).distill
    cfg = DistillConfig()
    assert (default.warmup_steps, default.feature_loss, default.trainable, default.lr, default.batch_size) == \
        (cfg.warmup_steps, cfg.feature_loss, cfg.trainable, cfg.lr, cfg.batch_size)  # CLI = API defaults


def _tiny_kd(train_base=False, method="rb-lra"):
    teacher = make_tiny("deit")
    student = copy.deepcopy(teacher)
    compress_(student, LowRankConfig(method=method, param_reduction=0.45, train_base=train_base))
    x = torch.randn(16, *teacher.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ds = TensorDataset(x, teacher(x).argmax(-1))
    return teacher, student, ds


def test_branch_lr_trains_the_branch_apart_from_the_base():
    teacher, student, ds = _tiny_kd(train_base=True)
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    distill_(student, teacher, ds, DistillConfig(steps=3, batch_size=8, lr=1e-9, branch_lr=1e-2, warmup_steps=0,
                                                 weight_decay=0.0), progress=False)
    step = {n: (p - before[n]).abs().max().item() for n, p in student.named_parameters()}
    branch = [v for n, v in step.items() if n.endswith(("branch_up", "branch_down"))]
    base = [v for n, v in step.items() if n.endswith(("up.weight", "down.weight"))]
    assert branch and base and min(branch) > 1e-3  # Adam: ~lr per step
    assert max(base) < 1e-7  # the base moved at its own (tiny) lr, not the branch's

    # with a frozen base only the branch trains: branch_lr is then the same as lr
    runs = []
    for kw in ({"lr": 5e-3}, {"lr": 1.0, "branch_lr": 5e-3}):
        teacher, student, ds = _tiny_kd()
        runs.append(distill_(student, teacher, ds, DistillConfig(steps=3, batch_size=8, warmup_steps=0, **kw),
                             progress=False).losses)
    assert runs[0] == runs[1]


def test_branch_lr_is_checked_and_keeps_old_dicts():
    from lraqvit_deploy.recipe import Recipe

    assert "branch_lr" not in DistillConfig().to_dict()  # manifests and checkpoint fingerprints as before
    assert DistillConfig(branch_lr=1e-4).to_dict()["branch_lr"] == 1e-4
    from lraqvit_deploy.cli.args import flag_error

    for bad in (0.0, -1e-3, float("nan"), True):
        with pytest.raises(DeployError, match="branch_lr = ") as e:
            DistillConfig(branch_lr=bad)
        assert flag_error(e.value).startswith("--kd-branch-lr ")
    with pytest.raises(DeployError, match="distill.branch_lr sets the lr of RB-LRA's branch; low_rank.method lra") as e:
        Recipe(low_rank=LowRankConfig(method="lra", param_reduction=0.45), distill=DistillConfig(branch_lr=1e-4))
    assert flag_error(e.value).startswith("--kd-branch-lr sets the lr of RB-LRA's branch; --method lra")
    teacher, student, ds = _tiny_kd(method="lra")
    with pytest.raises(DeployError, match="no RB-LRA layers"):
        distill_(student, teacher, ds, DistillConfig(steps=1, batch_size=8, branch_lr=1e-4), progress=False)
    args = build_parser().parse_args(["compress", "--method", "rb-lra", "--param-reduction", "0.45", "--out", "x",
                                      "--train-base", "--kd-branch-lr", "3e-4"])
    recipe = recipe_from_args(args)
    assert recipe.distill.branch_lr == 3e-4 and recipe.low_rank.train_base
