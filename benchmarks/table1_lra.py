"""LRA-QViT Table 1 (LRA vs RB-LRA, with and without block KD) and Table 7 (branch init) on the test bed.

Every fine-tuned row uses the same data order, steps, batch and lr. Writes OUT/table1.md and
OUT/table1.json, refreshed after every row so a long run can be watched (and survives a kill).

    python benchmarks/table1_lra.py --out runs/table1 --steps 40 --threads 1
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

from lraqvit_deploy.artifacts import versions
from lraqvit_deploy.lowrank import DistillConfig, LowRankConfig, compress_, distill_, merge_
from lraqvit_deploy.lowrank.configs import DEFAULT_KD_BATCH, DEFAULT_KD_LR, DEFAULT_KD_STEPS
from lraqvit_deploy.data import FashionMNIST, seeded_subset
from lraqvit_deploy.evaluate import evaluate
from lraqvit_deploy.io import atomic_write, write_json
from lraqvit_deploy.layers import RBLRALinear
from lraqvit_deploy.models import create_model
from lraqvit_deploy.models import testbed as tb


def init_error(dense: torch.nn.Module, model: torch.nn.Module) -> float:
    """Mean relative Frobenius error ||W_r - W|| / ||W|| of the compressed layers before training."""
    errs = []
    for name, m in model.named_modules():
        if hasattr(m, "rank") and hasattr(m, "up"):
            up, down = m.merged_factors() if isinstance(m, RBLRALinear) else (m.up.weight, m.down.weight)
            w = dense.get_submodule(name).weight
            errs.append(((up @ down - w).norm() / w.norm()).item())
    return sum(errs) / len(errs)


def run_row(label: str, table: str, base, eval_ds, train_ds, reduction: float, method: str, kd: DistillConfig | None,
            init: str = "wr", train_base: bool = False, progress: bool = True) -> Dict[str, Any]:
    model = copy.deepcopy(base)
    t0 = time.perf_counter()
    compress_(model, LowRankConfig(method=method, param_reduction=reduction, init=init, train_base=train_base))
    err = init_error(base, model)
    kd_info: Dict[str, Any] = {}
    if kd is not None:
        res = distill_(model, base, train_ds, kd, progress=progress)
        kd_info = {"kd_first_loss": res.first_loss, "kd_final_loss": res.to_dict()["final_loss"], "kd_steps": res.steps}
    merge_(model)
    r = evaluate(model, eval_ds, progress=progress)
    return {"table": table, "row": label, "method": method, "init": init if method == "rb-lra" else None,
            "kd": kd is not None, "target_reduction": reduction, "top1": r.top1, "params": r.params,
            "gflops": r.gflops, "size_mb": r.size_mb, "init_rel_error": err, **kd_info,
            "seconds": time.perf_counter() - t0}


def kd_warmup(meta: Dict[str, Any]) -> int:
    w = meta["kd_config"].get("warmup_steps", 0)
    return DistillConfig(warmup_steps=w).warmup(meta["steps"])


def markdown(rows: List[Dict[str, Any]], fp32: Dict[str, Any], meta: Dict[str, Any]) -> str:
    out = ["# LRA-QViT Table 1 / Table 7 on the test bed", "",
           f"DINOv2 ViT-S/14 at 56 px + Fashion-MNIST probe; top-1 on {meta['eval_images']} test images. "
           f"Fine-tuned rows: {meta['steps']} steps x batch {meta['batch_size']} (= {meta['steps'] * meta['batch_size']} "
           f"train images), AdamW lr {meta['lr']:g}, {kd_warmup(meta)} warm-up steps + cosine, "
           f"block KD (CE + sum of per-block {meta['kd_config']['feature_loss'].upper()}), "
           f"trains {meta['kd_config']['trainable']}. "
           f"`init err` = mean relative Frobenius error of the compressed layers before fine-tuning.", ""]
    for table, title in (("1", "Table 1: methods"), ("7", "Table 7: RB-LRA branch init (with KD)")):
        out += [f"## {title}", "", "| method | params (M) | reduction | GFLOPs | top-1 | diff | init err | KD loss first -> last |",
                "|---|---|---|---|---|---|---|---|"]
        for r in [fp32] + [r for r in rows if r["table"] == table]:
            red = 1 - r["params"] / fp32["params"]
            kd = (f"{r['kd_first_loss']:.3f} -> {r['kd_final_loss']:.3f}" if r.get("kd_first_loss") is not None else "")
            err = f"{r['init_rel_error']:.3f}" if r.get("init_rel_error") is not None else ""
            out.append(f"| {r['row']} | {r['params'] / 1e6:.2f} | {-100 * red:.1f}% | {r['gflops']:.3f} | "
                       f"{r['top1']:.1f} | {r['top1'] - fp32['top1']:+.1f} | {err} | {kd} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/table1"))
    p.add_argument("--reductions", default="0.30,0.45")
    p.add_argument("--steps", type=int, default=DEFAULT_KD_STEPS)
    p.add_argument("--batch-size", type=int, default=DEFAULT_KD_BATCH)
    p.add_argument("--lr", type=float, default=DEFAULT_KD_LR)
    p.add_argument("--warmup-steps", type=int, default=DistillConfig.warmup_steps)
    p.add_argument("--feature-loss", default=DistillConfig.feature_loss, choices=("mse", "nmse"))
    p.add_argument("--trainable", default=DistillConfig.trainable, choices=("low_rank", "low_rank+norm", "all"))
    p.add_argument("--eval-images", type=int, default=1000)
    p.add_argument("--inits", default="wr,zero,random", help="Table 7 rows, at the largest reduction")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    progress = not args.quiet

    base = create_model("testbed", progress=progress)
    cfg = tb.get_profile("quick")
    eval_ds = seeded_subset(FashionMNIST("test", tb.data_config(cfg)), args.eval_images, cfg.seed)
    train_ds = FashionMNIST("train", tb.data_config(cfg))
    kd = DistillConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                       feature_loss=args.feature_loss, trainable=args.trainable)
    reductions = [float(x) for x in args.reductions.split(",")]
    meta = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "eval_images": len(eval_ds),
            "threads": args.threads, "kd_config": kd.to_dict(), "versions": versions()}

    r = evaluate(base, eval_ds, progress=progress)
    fp32 = {"table": "0", "row": "FP32", "top1": r.top1, "params": r.params, "gflops": r.gflops, "size_mb": r.size_mb}
    rows: List[Dict[str, Any]] = []
    plan = []
    top = max(reductions)
    for f in sorted(reductions, reverse=True):  # largest budget (the headline) first
        pct = f"-{round(100 * f)}%"
        plan += [("1", f"LRA {pct}", f, "lra", None, "wr"), ("1", f"RB-LRA (WR, no KD) {pct}", f, "rb-lra", None, "wr"),
                 ("1", f"LRA + KD (factors trainable) {pct}", f, "lra", kd, "wr"),
                 ("1", f"RB-LRA + KD (WR) {pct}", f, "rb-lra", kd, "wr")]
        if f == top:
            plan += [("7", f"RB-LRA + KD, {i} init {pct}", f, "rb-lra", kd, i) for i in args.inits.split(",")]

    args.out.mkdir(parents=True, exist_ok=True)
    done: Dict[tuple, Dict[str, Any]] = {}
    for table, label, f, method, k, init in plan:
        key = (f, method, k is not None, init)
        if key in done:  # Table 7's WR row is Table 1's RB-LRA + KD row: same run, not re-trained
            row = {**done[key], "table": table, "row": label}
        else:
            print(f"== {label}", flush=True)
            row = run_row(label, table, base, eval_ds, train_ds, f, method, k, init, progress=progress)
            done[key] = row
        rows.append(row)
        print(f"   top-1 {row['top1']:.1f}  params {row['params'] / 1e6:.2f}M  init err {row['init_rel_error']:.3f}", flush=True)
        write_json(args.out / "table1.json", {"meta": meta, "fp32": fp32, "rows": rows})
        with atomic_write(args.out / "table1.md", "w") as fh:
            fh.write(markdown(rows, fp32, meta))
    print((args.out / "table1.md").read_text())


if __name__ == "__main__":
    main()
