"""Distillation at scale: one DataLoader for the whole run, mixed precision, worker processes."""
import copy
import json
import math

import pytest
import torch
from torch.utils.data import Dataset, DistributedSampler, TensorDataset

from lraqvit_deploy.cli.compress import recipe_from_args
from lraqvit_deploy.cli.main import build_parser
from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.lowrank import DistillConfig, LowRankConfig, compress_, distill_
from lraqvit_deploy.lowrank.distill.loop import _batches, _fingerprint, _RunBatches, resolve_amp, resolve_workers

from conftest import make_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def _old_order(sampler, batch_size, steps_per_epoch, start, total):
    """The batches the loop read before: one DataLoader per epoch over `_batches(...)[offset:]`."""
    out, step = [], start
    while step < total:
        epoch, offset = divmod(step, steps_per_epoch)
        for b in _batches(sampler, epoch, batch_size)[offset:]:
            out.append(b)
            step += 1
            if step >= total:
                break
    return out


@pytest.mark.parametrize("world", [1, 2])
def test_one_run_sampler_yields_the_per_epoch_batches(world):
    ds = list(range(23))
    for rank in range(world):
        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=3, drop_last=True)
        spe = len(sampler) // 4
        for start, total in [(0, 13), (7, 13), (spe, 2 * spe + 1), (5, 5), (0, 1)]:  # mid-epoch, boundary, none
            run = _RunBatches(sampler, 4, spe, start, total)
            got = list(run)
            assert got == _old_order(sampler, 4, spe, start, total), (rank, start, total)
            assert len(run) == len(got) == total - start


class _Recording(Dataset):
    """Records the indices read; raises KeyboardInterrupt after `fail_after` reads (an interrupted run)."""

    def __init__(self, base, fail_after=None):
        self.base, self.left, self.read = base, fail_after, []

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if self.left is not None:
            self.left -= 1
            if self.left < 0:
                raise KeyboardInterrupt
        self.read.append(i)
        return self.base[i]


def _setup(n=24, seed=0):
    teacher = make_tiny("deit")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *teacher.pretrained_cfg["input_size"], generator=g)
    with torch.no_grad():
        ds = TensorDataset(x, teacher(x).argmax(-1))

    def fresh():
        s = copy.deepcopy(teacher)
        compress_(s, LowRankConfig(method="rb-lra", param_reduction=0.3))
        return s

    return teacher, ds, fresh


def test_batch_order_and_a_mid_epoch_resume_match_the_per_epoch_loaders(tmp_path):
    teacher, ds, fresh = _setup(n=24)  # 3 batches of 8 an epoch: 7 steps span 3 epochs
    cfg = DistillConfig(steps=7, batch_size=8, lr=1e-3, checkpoint_every=2, num_workers=0)
    sampler = DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=cfg.seed, drop_last=True)
    want = [i for b in _old_order(sampler, 8, 3, 0, 7) for i in b]

    rec = _Recording(ds)
    straight = distill_(fresh(), teacher, rec, cfg, progress=False)
    assert rec.read == want

    ckpt = tmp_path / "kd.pt"
    with pytest.raises(KeyboardInterrupt):  # dies in step 6: the last checkpoint is step 4 = epoch 1, batch 1
        distill_(fresh(), teacher, _Recording(ds, fail_after=8 * 5), cfg, checkpoint=ckpt, progress=False)
    assert torch.load(ckpt, weights_only=True)["step"] == 4
    rec = _Recording(ds)
    resumed = distill_(fresh(), teacher, rec, cfg, checkpoint=ckpt, resume=True, progress=False)
    assert resumed.start_step == 4 and rec.read == want[4 * 8:]
    assert resumed.losses[:4] == straight.losses[:4]  # restored from the checkpoint
    assert resumed.losses[4:] == pytest.approx(straight.losses[4:], rel=1e-6, abs=1e-7)


def test_bf16_autocast_trains_on_the_cpu(tmp_path):
    teacher, ds, fresh = _setup(n=16)
    student = fresh()
    dtypes = set()
    hook = teacher.get_submodule("blocks.0.mlp.fc1").register_forward_hook(lambda m, i, o: dtypes.add(o.dtype))
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    ckpt = tmp_path / "kd.pt"
    cfg = DistillConfig(steps=3, batch_size=8, lr=1e-2, warmup_steps=0, amp="bf16")
    try:
        res = distill_(student, teacher, ds, cfg, checkpoint=ckpt, progress=False)
    finally:
        hook.remove()
    assert dtypes == {torch.bfloat16}  # the forwards ran under autocast
    assert len(res.losses) == 3 and all(math.isfinite(v) for v in res.losses)
    assert res.amp == "bf16" and res.to_dict()["amp"] == "bf16" and res.num_workers == 0
    assert any(not torch.equal(p, before[n]) for n, p in student.named_parameters())
    assert all(p.dtype == torch.float32 for p in student.parameters())  # master weights stay FP32
    # the resolved mode is part of the checkpoint's fingerprint: bf16 numerics are not FP32's
    with pytest.raises(DeployError, match="different"):
        distill_(fresh(), teacher, ds, DistillConfig(steps=3, batch_size=8, lr=1e-2, warmup_steps=0, amp="off"),
                 checkpoint=ckpt, resume=True, progress=False)
    again = distill_(fresh(), teacher, ds, cfg, checkpoint=ckpt, resume=True, progress=False)
    assert again.start_step == 3 and again.losses == res.losses


def test_auto_on_the_cpu_is_off_and_keeps_the_old_fingerprint():
    if torch.cuda.is_available():
        pytest.skip("auto resolves to a GPU mode here")
    assert resolve_amp("auto", torch.device("cpu")) == ("off", None)
    assert resolve_amp("bf16", torch.device("cpu")) == ("bf16", torch.bfloat16)
    student = make_tiny("deit")
    fp = json.loads(_fingerprint(student, DistillConfig(), None, "off"))
    assert "amp" not in fp["config"]  # as in checkpoints written before --kd-amp existed
    assert _fingerprint(student, DistillConfig(amp="off"), None, "off") == \
        _fingerprint(student, DistillConfig(amp="auto"), None, "off")
    assert json.loads(_fingerprint(student, DistillConfig(amp="bf16"), None, "bf16"))["config"]["amp"] == "bf16"


@pytest.mark.parametrize("kw,field,flag", [({"amp": "fp32"}, "amp = 'fp32': must be one of auto, bf16, fp16, off",
                                             "--kd-amp 'fp32': must be one of auto, bf16, fp16, off"),
                                            ({"amp": "fp16", "device": "cpu"}, "amp = 'fp16' needs a CUDA device",
                                             "--kd-amp 'fp16' needs a CUDA device"),
                                            ({"num_workers": -1}, "num_workers = -1", "--kd-workers -1"),
                                            ({"num_workers": 1.5}, "num_workers = 1.5", "--kd-workers 1.5"),
                                            ({"num_workers": True}, "num_workers = True", "--kd-workers True")])
def test_amp_and_worker_validation(kw, field, flag):
    """The library names the field; the CLI (flag_error) names the flag."""
    from lraqvit_deploy.cli.args import flag_error

    with pytest.raises(DeployError) as e:
        DistillConfig(**kw)
    assert str(e.value).startswith(field) and "\n" not in str(e.value)
    assert flag_error(e.value).startswith(flag)


def test_fp16_on_the_cpu_fails_in_distill_too():
    with pytest.raises(DeployError, match="--kd-amp fp16 needs a CUDA device") as e:
        resolve_amp("fp16", torch.device("cpu"))
    assert "\n" not in str(e.value)
    if torch.cuda.is_available():
        return
    teacher, ds, fresh = _setup(n=8)
    with pytest.raises(DeployError, match="--kd-amp fp16 needs a CUDA device"):  # device "auto" = the CPU here
        distill_(fresh(), teacher, ds, DistillConfig(steps=1, batch_size=8, amp="fp16"), progress=False)


def test_auto_workers(monkeypatch):
    assert DistillConfig().num_workers is None and DistillConfig().amp == "auto"
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_workers(None, cpu) == 0 and resolve_workers(3, cpu) == 3 and resolve_workers(0, gpu) == 0
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert resolve_workers(None, gpu) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun, 4 GPUs on the node: 16 CPUs shared
    assert resolve_workers(None, gpu) == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0}, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert resolve_workers(None, gpu) == 0


def test_cli_kd_amp_and_workers():
    base = ["compress", "--method", "rb-lra", "--param-reduction", "0.45", "--out", "x"]
    kd = recipe_from_args(build_parser().parse_args(base + ["--kd-amp", "bf16", "--kd-workers", "2"])).distill
    assert (kd.amp, kd.num_workers) == ("bf16", 2)
    kd = recipe_from_args(build_parser().parse_args(base)).distill
    assert (kd.amp, kd.num_workers) == ("auto", None)
    with pytest.raises(SystemExit):
        build_parser().parse_args(base + ["--kd-amp", "fp8"])


class _WorkersOnly(Dataset):
    """Fails when read in the main process: proves the DataLoader's workers did the reading."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if torch.utils.data.get_worker_info() is None:
            raise RuntimeError("read outside a DataLoader worker")
        return self.base[i]


def test_worker_processes_give_the_same_losses():
    teacher, ds, fresh = _setup(n=24)  # 4 steps of 8: crosses an epoch
    cfg = DistillConfig(steps=4, batch_size=8, lr=1e-3, num_workers=0)
    single = distill_(fresh(), teacher, ds, cfg, progress=False)
    workers = distill_(fresh(), teacher, _WorkersOnly(ds), DistillConfig(steps=4, batch_size=8, lr=1e-3, num_workers=2),
                       progress=False)
    assert workers.num_workers == 2 and workers.to_dict()["num_workers"] == 2
    assert workers.losses == single.losses


def _cpu_fp16_autocast():
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            return (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float16
    except (RuntimeError, AssertionError):
        return False


@pytest.mark.skipif(not _cpu_fp16_autocast(), reason="this torch has no float16 autocast on the CPU")
def test_fp16_loss_scaling_and_its_checkpoint(tmp_path, monkeypatch):
    # fp16 is a CUDA mode; on the CPU (fp16 autocast + torch.amp.GradScaler("cpu")) the same code path runs
    import lraqvit_deploy.lowrank.distill.loop as loop

    monkeypatch.setattr(loop, "resolve_amp", lambda amp, device: ("fp16", torch.float16))
    teacher, ds, fresh = _setup(n=16)
    cfg = DistillConfig(steps=4, batch_size=8, lr=1e-3, checkpoint_every=1)
    ckpt = tmp_path / "kd.pt"
    with pytest.raises(KeyboardInterrupt):  # dies reading step 4's batch; the checkpoint is step 3
        distill_(fresh(), teacher, _Recording(ds, fail_after=8 * 3), cfg, checkpoint=ckpt, progress=False)
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 3 and state["scaler"]["scale"] == 2.0 ** 16 and state["scaler"]["_growth_tracker"] == 3
    state["scaler"]["scale"] = 1024.0  # resuming must carry the scaler on, not restart it
    torch.save(state, ckpt)
    res = distill_(fresh(), teacher, ds, cfg, checkpoint=ckpt, resume=True, progress=False)
    assert res.amp == "fp16" and res.start_step == 3 and all(math.isfinite(v) for v in res.losses)
    end = torch.load(ckpt, weights_only=True)["scaler"]
    assert end["scale"] == 1024.0 and end["_growth_tracker"] == 4

    del state["scaler"]  # a checkpoint of an older version: no scaler state, still loads
    torch.save(state, ckpt)
    assert distill_(fresh(), teacher, ds, cfg, checkpoint=ckpt, resume=True, progress=False).start_step == 3
