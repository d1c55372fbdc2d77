"""KD settings sweep on the test bed; selection on held-out TRAIN images (train[50000:50400]), never test.

Each argument is one run: a JSON object of DistillConfig fields plus method/init/train_base/F; one JSON
line per run is appended to OUT (see benchmarks/results/kd_settings.md).

    python benchmarks/kd_sweep.py runs/kd.jsonl '{"steps":240,"batch_size":16,"feature_loss":"nmse"}'
"""
import copy, json, sys, time, torch
torch.set_num_threads(1)
from torch.utils.data import Subset
from lraqvit_deploy.models import create_model
from lraqvit_deploy.lowrank import LowRankConfig, DistillConfig, compress_, distill_, merge_
from lraqvit_deploy.evaluate import evaluate
from lraqvit_deploy.data import FashionMNIST
from timm.data import resolve_data_config
base = create_model("testbed", progress=False)
tr = FashionMNIST("train", resolve_data_config(model=base))
train, val = Subset(tr, range(0, 50000)), Subset(tr, range(50000, 50400))
out = sys.argv[1]
for spec in sys.argv[2:]:
    kw = json.loads(spec)
    method, init, tb = kw.pop("method", "rb-lra"), kw.pop("init", "wr"), kw.pop("train_base", False)
    F = kw.pop("F", 0.45)
    m = copy.deepcopy(base)
    compress_(m, LowRankConfig(method=method, param_reduction=F, init=init, train_base=tb))
    t = time.time()
    cfg = DistillConfig(**kw)
    r = distill_(m, base, train, cfg, progress=False)
    kd_s = time.time() - t
    merge_(m)
    v = evaluate(m, val, progress=False).top1
    rec = {"method": method, "init": init, "train_base": tb, "F": F, **kw, "loss0": r.losses[0],
           "loss_end": sum(r.losses[-5:]) / 5, "val_top1": v, "kd_s": round(kd_s), "s_per_step": kd_s / len(r.losses)}
    print(json.dumps(rec), flush=True)
    open(out, "a").write(json.dumps(rec) + "\n")
