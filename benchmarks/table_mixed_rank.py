"""Mixed-rank and joint rank/bit allocation on the test bed, at equal parameter or memory budgets.

Rows: uniform-rank SVD (RB-LRA's allocation, no fine-tune), energy-greedy on plain SVD, energy-greedy
on activation-aware SVD, + error compensation (5%, inside the budget), + partial fine-tune; then at
4-bit-class memory budgets: uniform dense w4 / w3, MLoRQ (any bits, and XNNPACK-runnable {4, 8}),
activation-aware low rank + int8 factors. Weight-only quantization (activations FP32).

    python benchmarks/table_mixed_rank.py [--eval-images 1000] [--calib-images 128] [--ft-images 2048]

Writes benchmarks/results/mixed_rank.{json,md}, updated after every row. 1 CPU thread.
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from lraqvit_deploy.lowrank import collect_stats, compensate_model_, partial_finetune_
from lraqvit_deploy.data import FashionMNIST, calibration_batch, seeded_subset
from lraqvit_deploy.evaluate import predict
from lraqvit_deploy.io import atomic_write, write_json
from lraqvit_deploy.models import create_model
from lraqvit_deploy.models import testbed as tb
from lraqvit_deploy.rank_alloc import LayerChoice, allocate, apply_plan_
from lraqvit_deploy.rank_alloc.mlorq import memory_mb, mlorq_candidates
from lraqvit_deploy.vit_layout import encoder_linears

OUT = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval-images", type=int, default=1000)
    ap.add_argument("--calib-images", type=int, default=128)
    ap.add_argument("--ft-images", type=int, default=2048)
    ap.add_argument("--ft-lr", type=float, default=1e-4)
    ap.add_argument("--reductions", default="0.45,0.6")
    ap.add_argument("--budgets", default="0.125,0.2", help="memory budgets as fractions of the FP32 size")
    ap.add_argument("--skip-ft", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(1)

    model = create_model("testbed", progress=False)
    cfg = tb.get_profile("quick")
    dcfg = tb.data_config(cfg)
    test = seeded_subset(FashionMNIST("test", dcfg), args.eval_images, cfg.seed)
    train = FashionMNIST("train", dcfg)
    calib = calibration_batch(train, args.calib_images, seed=1)
    comp_imgs = calibration_batch(train, args.calib_images, seed=2)
    ft_ds = seeded_subset(train, args.ft_images, 3)
    linears = encoder_linears(model)
    n0 = sum(p.numel() for p in model.parameters())
    fp32_mb = n0 * 4 / 1e6

    t = time.time()
    ref_pred, labels = predict(model, test, progress=False)
    fp32_top1 = 100 * (ref_pred == labels).float().mean().item()
    t_eval = time.time() - t
    t = time.time()
    stats = collect_stats(model, calib, linears, progress=False)
    t_stats = time.time() - t
    rows = []
    meta = {"model": "testbed (DINOv2 ViT-S/14 @56px, Fashion-MNIST probe)", "eval_images": len(test),
            "calib_images": args.calib_images, "fp32_top1": fp32_top1, "fp32_params": n0, "fp32_mb": fp32_mb,
            "stats_seconds": t_stats, "eval_seconds": t_eval, "threads": 1,
            "finetune": {"images": args.ft_images, "epochs": 1, "lr": args.ft_lr, "batch": 32,
                         "params": "LayerNorms, biases, head, patch embedding", "loss": "CE + KL(teacher)"},
            "quantization": "weight-only, symmetric per-channel, MSE-clipped scales; activations FP32"}

    def record(name, budget, m, seconds, memory=None, **extra):
        pred, _ = predict(m, test, progress=False)
        top1 = 100 * (pred == labels).float().mean().item()
        params = sum(p.numel() for p in m.parameters())
        row = {"method": name, "budget": budget, "top1": round(top1, 2), "delta": round(top1 - fp32_top1, 2),
               "agreement": round((pred == ref_pred).float().mean().item(), 4), "params": params,
               "param_reduction": round(1 - params / n0, 4),
               "memory_mb": round(memory if memory is not None else params * 4 / 1e6, 3),
               "memory_frac": round((memory if memory is not None else params * 4 / 1e6) / fp32_mb, 4),
               "seconds": round(seconds, 1), **extra}
        rows.append(row)
        print(row, flush=True)
        write(args.out, meta, rows)
        return top1

    for red in [float(r) for r in args.reductions.split(",")]:
        tag = f"-{red:.0%} params"
        t = time.time()
        al = allocate(model, "uniform", red, progress=False)
        uni = apply_plan_(copy.deepcopy(model), al.plan)
        record("uniform rank, plain SVD", tag, uni, time.time() - t)
        t = time.time()
        al = allocate(model, "energy", red, activation_aware=False, progress=False)
        record("energy-greedy, plain SVD", tag, apply_plan_(copy.deepcopy(model), al.plan), time.time() - t)
        t = time.time()
        al = allocate(model, "energy", red, stats=stats, progress=False)
        aa = apply_plan_(copy.deepcopy(model), al.plan, stats)
        record("energy-greedy, activation-aware SVD", tag, aa, time.time() - t,
               ranks={n: r for n, r in al.ranks.items()})
        t = time.time()
        al = allocate(model, "energy", red, stats=stats, compensation_fraction=0.05, progress=False)
        comp = apply_plan_(copy.deepcopy(model), al.plan, stats)
        reports = compensate_model_(comp, model, comp_imgs, progress=False)
        record("activation-aware + compensation (5%)", tag, comp, time.time() - t,
               comp_error_before=sum(r.error_before for r in reports.values()) / len(reports),
               comp_error_after=sum(r.error_after for r in reports.values()) / len(reports))
        if not args.skip_ft:
            for label, m in (("activation-aware + compensation + partial FT", comp),
                             ("uniform rank + partial FT", uni)):
                t = time.time()
                partial_finetune_(m, model, ft_ds, epochs=1, lr=args.ft_lr, progress=False)
                record(label, tag, m, time.time() - t)

    fp32_rest = n0 - sum(m.weight.numel() for m in linears.values())
    for bits in (4, 3):
        plan = {n: LayerChoice(w_bits=bits) for n in linears}
        t = time.time()
        m = apply_plan_(copy.deepcopy(model), plan)
        record(f"uniform dense w{bits}", f"{bits}-bit dense", m, time.time() - t, memory_mb(model, plan, linears))
    w4_mb = memory_mb(model, {n: LayerChoice(w_bits=4) for n in linears}, linears)
    budgets = [(f"{f:.1%} of FP32", f * fp32_mb) for f in (float(b) for b in args.budgets.split(","))]
    budgets.insert(1, ("= uniform w4", w4_mb))
    t = time.time()
    cands = mlorq_candidates(linears, stats, progress=False)
    meta["mlorq_candidate_seconds"] = round(time.time() - t, 1)
    meta["mlorq_candidates_per_layer"] = round(sum(map(len, cands.values())) / len(cands), 1)
    for tag, mb in budgets:
        t = time.time()
        al = allocate(model, "mlorq", memory_budget_mb=mb, stats=stats, progress=False, candidates=cands)
        kinds = {}
        for c in al.plan.values():
            k = f"w{c.w_bits}" if c.rank is None and c.w_bits else ("fp32" if c.rank is None else f"r/{c.factor_bits}")
            kinds[k] = kinds.get(k, 0) + 1
        record("MLoRQ (bits 2-8)", tag, apply_plan_(copy.deepcopy(model), al.plan, stats), time.time() - t,
               al.summary["memory_mb"], choices=kinds)
    t = time.time()
    al = allocate(model, "mlorq", memory_budget_mb=w4_mb, stats=stats, progress=False, dense_bits=(4, 8),
                  factor_bits=(4, 8), candidates=cands)
    record("MLoRQ (XNNPACK-runnable: 4, 8 bits)", "= uniform w4", apply_plan_(copy.deepcopy(model), al.plan, stats),
           time.time() - t, al.summary["memory_mb"])
    # low rank + int8 factors at a 4-bit-class size: -60% params at 8 bits ~ 10% + fixed parts
    t = time.time()
    al = allocate(model, "energy", 0.6, stats=stats, progress=False)
    plan = {n: LayerChoice(rank=c.rank, factor_bits=(8, 8)) if c.rank else LayerChoice(w_bits=8)
            for n, c in al.plan.items()}
    record("activation-aware -60% + int8 factors", "int8 low rank", apply_plan_(copy.deepcopy(model), plan, stats),
           time.time() - t, memory_mb(model, plan, linears))
    meta["fp32_rest_params"] = fp32_rest
    write(args.out, meta, rows)


def write(out: Path, meta: dict, rows: list) -> None:
    write_json(out / "mixed_rank.json", {"meta": meta, "rows": rows})
    lines = [f"# Mixed rank / MLoRQ on the test bed (FP32 top-1 {meta['fp32_top1']:.2f}%, "
             f"{meta['eval_images']} test images, {meta['fp32_mb']:.1f} MB FP32)", "",
             f"Calibration: {meta['calib_images']} train images. Fine-tune: {meta['finetune']}. "
             f"Quantization: {meta['quantization']}.", "",
             "| method | budget | top-1 | Δ vs FP32 | agreement | params (−%) | weights MB (% FP32) | s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['budget']} | {r['top1']:.2f} | {r['delta']:+.2f} | {r['agreement']:.3f} | "
                     f"{r['params'] / 1e6:.2f}M ({r['param_reduction']:.1%}) | {r['memory_mb']:.2f} "
                     f"({r['memory_frac']:.1%}) | {r['seconds']:.0f} |")
    with atomic_write(out / "mixed_rank.md", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
