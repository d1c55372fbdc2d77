"""Mixed-rank and joint rank/bit allocation on the test bed, at equal parameter or memory budgets,
against the converged FP32 reference with paired 95 % intervals (issue 13).

Rows: uniform-rank SVD (RB-LRA's allocation, no fine-tune), energy-greedy on plain SVD, energy-greedy
on activation-aware SVD, + error compensation (5%, inside the budget), + partial fine-tune, and the
shipped pipeline (`deploy compress --method rb-lra --rank-alloc energy --param-reduction F`:
energy-greedy activation-aware ranks + block KD); then at 4-bit-class memory budgets: uniform dense
w4 / w3, MLoRQ (any bits, and XNNPACK-runnable {4, 8}), activation-aware low rank + int8 factors.
Weight-only quantization (activations FP32). Every image used for statistics or training comes from
train[0:50000]; rows are scored on the held-out train[50000:51000] and on the test subset.

    python benchmarks/table_mixed_rank.py --profile full [--calib-images 128] [--ft-images 2048] [--quiet]

Writes OUT.{json,md} (default benchmarks/results/mixed_rank), updated after every row.
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import _result_file
from accuracy import TestBed

from lraqvit_deploy.data import calibration_batch, seeded_subset
from lraqvit_deploy.lowrank import DistillConfig, LowRankConfig, collect_stats, compensate_model_, partial_finetune_
from lraqvit_deploy.pipeline import compress
from lraqvit_deploy.recipe import AllocationConfig, Recipe
from lraqvit_deploy.rank_alloc import LayerChoice, allocate, apply_plan_
from lraqvit_deploy.rank_alloc.mlorq import memory_mb, mlorq_candidates
from lraqvit_deploy.vit_layout import encoder_linears

OUT = Path(__file__).parent / "results" / "mixed_rank"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=("quick", "full"), default="full")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--calib-images", type=int, default=128)
    ap.add_argument("--ft-images", type=int, default=2048)
    ap.add_argument("--ft-lr", type=float, default=1e-4)
    ap.add_argument("--reductions", default="0.45,0.6")
    ap.add_argument("--budgets", default="0.125,0.2", help="memory budgets as fractions of the FP32 size")
    ap.add_argument("--skip-ft", action="store_true")
    ap.add_argument("--skip-kd", action="store_true", help="leave out the pipeline (energy ranks + block KD) rows")
    ap.add_argument("--kd-lr", type=float, default=None, help="distillation lr of the KD rows (default: the library's)")
    _result_file.add_out(ap, OUT)
    args = ap.parse_args()
    bed = TestBed(args.profile, progress=not args.quiet)
    model = bed.reference
    train = bed.train
    calib = calibration_batch(train, args.calib_images, seed=1)
    comp_imgs = calibration_batch(train, args.calib_images, seed=2)
    ft_ds = seeded_subset(train, args.ft_images, 3)
    linears = encoder_linears(model)
    n0 = sum(p.numel() for p in model.parameters())
    fp32_mb = n0 * 4 / 1e6

    t = time.time()
    stats = collect_stats(model, calib, linears, progress=False)
    t_stats = time.time() - t
    rows = []
    meta = {**bed.meta(), "calib_images": args.calib_images, "fp32_params": n0, "fp32_mb": fp32_mb,
            "stats_seconds": t_stats,
            "finetune": {"images": args.ft_images, "epochs": 1, "lr": args.ft_lr, "batch": 32,
                         "params": "LayerNorms, biases, head, patch embedding", "loss": "CE + KL(teacher)"},
            "kd": "deploy compress defaults" + ("" if args.kd_lr is None else f" with lr {args.kd_lr:g}") + ": "
                  + str(DistillConfig(**({} if args.kd_lr is None else {"lr": args.kd_lr})).to_dict()),
            "quantization": "weight-only, symmetric per-channel, MSE-clipped scales; activations FP32"}

    def record(name, budget, m, seconds, memory=None, **extra):
        params = sum(p.numel() for p in m.parameters())
        row = bed.score(name, m, budget=budget, param_reduction=round(1 - params / n0, 4),
                        memory_mb=round(memory if memory is not None else params * 4 / 1e6, 3),
                        memory_frac=round((memory if memory is not None else params * 4 / 1e6) / fp32_mb, 4),
                        seconds=round(seconds, 1), **extra)
        rows.append(row)
        print(f"{name} [{budget}]: held-out {row['held_out']['top1']:.2f} test {row['test']['top1']:.2f}", flush=True)
        write(args.out, bed, meta, rows)
        return row

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
        if not args.skip_kd:
            t = time.time()
            m = copy.deepcopy(model)
            compress(m, Recipe(LowRankConfig(param_reduction=red, svd="activation"),
                               allocation=AllocationConfig(method="energy"),
                               distill=DistillConfig(**({} if args.kd_lr is None else {"lr": args.kd_lr}))),
                     train_data=train, alloc_data=train, evaluate=False, progress=not args.quiet)
            record("energy-greedy activation-aware RB-LRA + KD (deploy compress --rank-alloc energy)", tag, m,
                   time.time() - t)

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
    write(args.out, bed, meta, rows)


def write(out: Path, bed: TestBed, meta: dict, rows: list) -> None:
    lines = [f"# Mixed rank / MLoRQ on the test bed (converged reference, {meta['fp32_mb']:.1f} MB FP32)", ""] + \
        bed.header() + ["", f"Statistics: {meta['calib_images']} training images. Partial fine-tune: {meta['finetune']}. "
                        f"KD rows: {meta['kd']}. Quantization: {meta['quantization']}.", "",
                        f"| method | budget | {TestBed.CELL_HEADER} | params (−%) | weights MB (% FP32) | s |",
                        f"|---|---|{TestBed.CELL_RULE}|---|---|---:|"]
    for r in [bed.reference_row, bed.probe_row] + rows:
        budget = r.get("budget", "-")
        red = f"{r['params'] / 1e6:.2f}M ({r.get('param_reduction', 0):.1%})"
        mem = (f"{r['memory_mb']:.2f} ({r['memory_frac']:.1%})" if "memory_mb" in r
               else f"{r['params'] * 4 / 1e6:.2f} (100.0%)")
        lines.append(f"| {r['row']} | {budget} | {TestBed.cells(r)} | {red} | {mem} | {r.get('seconds', '')} |")
    _result_file.write(out, {"meta": meta, "reference": bed.reference_row, "probe": bed.probe_row, "rows": rows},
                       "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
