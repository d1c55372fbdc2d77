"""Distillation stops on a non-finite loss and on divergence (loss above DIVERGENCE_FACTOR x its running minimum
for DIVERGENCE_STEPS steps), keeps the last good checkpoint, and resumes from it at a lower lr."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch.utils.data import TensorDataset

from conftest import make_tiny
from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.lowrank import DistillConfig, LowRankConfig, compress_, distill_
from lraqvit_deploy.lowrank.distill import loop

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_rule():
    w = loop.DivergenceWatch()
    assert w.update(1.0) is None and w.update(0.5) is None
    for _ in range(loop.DIVERGENCE_STEPS - 1):
        assert w.update(2.01) is None and w.suspect  # above 4 x 0.5, not yet for 10 steps
    assert "stayed above 4x its running minimum 0.5 for 10 steps" in w.update(2.01)
    w = loop.DivergenceWatch([1.0, 0.5])
    for _ in range(100):  # noise just under the limit never trips it
        assert w.update(1.99) is None
    assert w.update(1.0) is None and not w.suspect
    for bad in (math.nan, math.inf):
        assert "not finite" in loop.DivergenceWatch([1.0]).update(bad)
    # a resumed run replays its history: the running minimum and the streak carry over
    w = loop.DivergenceWatch([1.0, 0.5] + [2.5] * (loop.DIVERGENCE_STEPS - 1))
    assert w.best == 0.5 and w.update(2.5) is not None


def test_test_bed_default_loss_trace_stays_far_below_the_limit():
    """The quick test bed's default run (RB-LRA -45 %, 240 steps, lr 1e-3; AMD EPYC): every 20th loss."""
    trace = [5.338, 0.805, 0.476, 0.391, 0.322, 0.317, 0.259, 0.279, 0.246, 0.249, 0.23, 0.261]
    w = loop.DivergenceWatch()
    assert all(w.update(v) is None for v in trace) and w.streak == 0


@pytest.fixture
def setup():
    teacher = make_tiny("deit")
    x = torch.randn(64, *teacher.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ds = TensorDataset(x, teacher(x).argmax(-1))

    def student():
        s = copy.deepcopy(teacher)
        compress_(s, LowRankConfig(method="rb-lra", param_reduction=0.45))
        return s

    return teacher, ds, student


def test_divergence_stops_keeps_the_last_good_checkpoint_and_resumes_at_a_lower_lr(setup, tmp_path):
    teacher, ds, student = setup
    ckpt = tmp_path / "out.kd-checkpoint.pt"
    # the failure on a tiny model: the RB-LRA branch at 100x the base lr (0.1) blows the loss up 1e7x
    cfg = DistillConfig(steps=30, batch_size=8, lr=1e-3, branch_lr=0.1, checkpoint_every=1)
    s = student()
    with pytest.raises(DeployError, match=r"distillation diverged at step \d+/30 \(lr 0.001, branch lr 0.1\): the KD "
                                          r"loss .* has stayed above 4x its running minimum") as e:
        distill_(s, teacher, ds, cfg, checkpoint=ckpt, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "nothing was saved" in msg
    assert f"is kept at {ckpt}: rerun the same command with --resume --kd-lr 0.0001 --kd-branch-lr 0.01" in msg
    good = int(msg.split("The last good checkpoint (step ")[1].split(")")[0])
    state = torch.load(ckpt, weights_only=False)
    assert state["step"] == good and len(state["losses"]) == good
    assert all(math.isfinite(v) for v in state["losses"])
    assert state["losses"][-1] <= loop.DIVERGENCE_FACTOR * min(state["losses"])  # not a suspect state
    assert all(torch.isfinite(p).all() for p in s.parameters())  # the diverging update was never applied

    # a higher lr is still a different run; the lower one continues the checkpoint to the end
    with pytest.raises(DeployError, match="different model, compression or distillation config"):
        distill_(student(), teacher, ds, DistillConfig(**{**cfg.__dict__, "branch_lr": 0.2}), checkpoint=ckpt,
                 resume=True, progress=False)
    lower = DistillConfig(**{**cfg.__dict__, "lr": 1e-4, "branch_lr": 0.01})
    r = distill_(student(), teacher, ds, lower, checkpoint=ckpt, resume=True, progress=False)
    assert r.start_step == good and len(r.losses) == 30 and r.losses[-1] < r.losses[good - 1]
    final = torch.load(ckpt, weights_only=False)
    resumed = json.loads(final["fingerprint"])["config"]
    assert resumed["lr"] == 1e-4 and resumed["branch_lr"] == 0.01  # the checkpoint now records the lower lrs
    assert [g["initial_lr"] for g in final["optimizer"]["param_groups"]] == [0.01]  # and the optimizer ran them
    assert final["scheduler"]["base_lrs"] == [0.01]


def test_a_nan_loss_stops_at_once(setup, tmp_path):
    teacher, ds, student = setup
    x, y = ds.tensors
    x = x.clone()
    x[5, 0, 0, 0] = math.nan  # one bad training image
    s = student()
    with pytest.raises(DeployError, match=r"diverged at step [1-8]/30 .*the KD loss is nan \(not finite\).*No "
                                          r"checkpoint was written before it; rerun with a lower lr, e\.g\. --kd-lr"):
        distill_(s, teacher, TensorDataset(x, y), DistillConfig(steps=30, batch_size=8), progress=False)
    assert all(torch.isfinite(p).all() for p in s.parameters())


def test_lowered_lr_is_the_only_difference_a_resume_accepts():
    a = {"lr": 1e-3, "branch_lr": 1e-2, "steps": 240}
    assert loop.lowered_lr("lr", 1e-3, 1e-4, a, a) and loop.lowered_lr("branch_lr", 1e-2, 1e-3, a, a)
    assert not loop.lowered_lr("lr", 1e-3, 2e-3, a, a)  # higher
    assert not loop.lowered_lr("steps", 240, 120, a, a)
    no_branch = {"lr": 1e-4, "steps": 240}
    assert not loop.lowered_lr("lr", 1e-3, 1e-4, a, no_branch)  # the branch group must stay
