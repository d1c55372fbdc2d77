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
