"""KD settings sweep on the test bed; selection on held-out TRAIN images (train[50000:50400]), never test.

Each RUN is one JSON object of DistillConfig fields plus method / init / train_base / F; one JSON line per
run is appended to OUT (see benchmarks/results/kd_settings.md).

    python benchmarks/kd_sweep.py runs/kd.jsonl '{"steps":240,"batch_size":16,"feature_loss":"nmse"}'
    python benchmarks/kd_sweep.py runs/kd.jsonl '{"steps":120}' '{"steps":120,"lr":3e-4}' --threads 2
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any, Dict, List

RUN_KEYS = {"method": "rb-lra", "init": "wr", "train_base": False, "F": 0.45}  # the sweep's own keys, defaults


def parse_runs(specs: List[str]) -> List[Dict[str, Any]]:
    """Each RUN as a dict, checked before any model is loaded (a bad one is one line naming it)."""
    from lraqvit_deploy.errors import DeployError
    from lraqvit_deploy.lowrank import DistillConfig

    runs = []
    for i, spec in enumerate(specs, 1):
        try:
            kw = json.loads(spec)
        except json.JSONDecodeError as e:
            raise SystemExit(f"kd_sweep: run {i} ({spec!r}) is not JSON: {e.msg}.") from None
        if not isinstance(kw, dict):
            raise SystemExit(f"kd_sweep: run {i} ({spec!r}) must be a JSON object of DistillConfig fields.")
        own = {k: kw.pop(k, v) for k, v in RUN_KEYS.items()}
        try:
            DistillConfig(**kw)
        except (TypeError, ValueError, DeployError) as e:
            raise SystemExit(f"kd_sweep: run {i}: {e}") from None
        runs.append({**own, "distill": kw})
    return runs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="a JSON-lines file; one line per run is appended")
    p.add_argument("runs", nargs="+", metavar="RUN", help="a JSON object of DistillConfig fields (+ method, init, "
                                                          "train_base, F)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    runs = parse_runs(args.runs)

    import torch
    from timm.data import resolve_data_config
    from torch.utils.data import Subset

    from lraqvit_deploy.data import FashionMNIST
    from lraqvit_deploy.evaluate import evaluate
    from lraqvit_deploy.lowrank import DistillConfig, LowRankConfig, compress_, distill_, merge_
    from lraqvit_deploy.models import create_model

    torch.set_num_threads(args.threads)
    base = create_model("testbed", progress=False)
    tr = FashionMNIST("train", resolve_data_config(model=base))
    train, val = Subset(tr, range(0, 50000)), Subset(tr, range(50000, 50400))
    for run in runs:
        m = copy.deepcopy(base)
        compress_(m, LowRankConfig(method=run["method"], param_reduction=run["F"], init=run["init"],
                                   train_base=run["train_base"]))
        t = time.time()
        r = distill_(m, base, train, DistillConfig(**run["distill"]), progress=False)
        kd_s = time.time() - t
        merge_(m)
        rec = {"method": run["method"], "init": run["init"], "train_base": run["train_base"], "F": run["F"],
               **run["distill"], "loss0": r.losses[0], "loss_end": sum(r.losses[-5:]) / 5,
               "val_top1": evaluate(m, val, progress=False).top1, "kd_s": round(kd_s),
               "s_per_step": kd_s / len(r.losses)}
        print(json.dumps(rec), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
