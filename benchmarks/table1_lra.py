"""LRA-QViT Table 1 (LRA vs RB-LRA, with and without block KD) and Table 7 (branch init) on the test bed,
against the converged FP32 reference, with paired 95 % intervals (issue 13).

Every row goes through the library pipeline (`lraqvit_deploy.pipeline.compress` with a `Recipe`) at
the shipped defaults (activation-aware SVD, 240 x 16 block KD, nmse, factors trainable), trained on
train[0:50000]; the teacher and the baseline are the converged reference. Rows are scored on the
held-out train[50000:51000] (where variants are compared) and on the test subset (reported).

Rows: the reference; the probe-only model; the dense model given the same distillation budget (every
parameter trains: the control that says how much of a row's figure is the extra fine-tuning); LRA
and RB-LRA untrained; LRA + KD; RB-LRA + KD (WR, the default); RB-LRA with a CE-only fine-tune (the
paper's "without KD" row, trained); and the RB-LRA variants: zero / random init, base + branch trained
(one lr, and a separate branch lr: base 10x slower, or branch 10x faster).

    python benchmarks/table1_lra.py --profile full --out benchmarks/results/table1_lra --quiet

Writes OUT.{md,json} (default benchmarks/results/table1_lra), rewritten after every row; `--save-default DIR` keeps the
RB-LRA + KD model as an artifact (the low-rank model of Table 2).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from pathlib import Path
from typing import Any, Dict, List

import _result_file
from accuracy import TestBed

from lraqvit_deploy.artifacts import versions
from lraqvit_deploy.lowrank import DistillConfig, LowRankConfig, distill_
from lraqvit_deploy.pipeline import compress
from lraqvit_deploy.recipe import Recipe


CE_ONLY_LR = 1e-5  # the best held-out lr of the CE-weighted rows in kd_objective.md


def plan(reductions: List[float], kd: DistillConfig) -> List[Dict[str, Any]]:
    rows = []
    for f in sorted(reductions, reverse=True):
        p = f"-{round(100 * f)}%"
        lr = dict(param_reduction=f)
        rows += [
            {"table": "1", "row": f"LRA (no fine-tune) {p}", "low_rank": LowRankConfig(method="lra", **lr), "kd": None},
            {"table": "1", "row": f"RB-LRA (WR, no fine-tune) {p}", "low_rank": LowRankConfig(method="rb-lra", **lr),
             "kd": None},
            {"table": "1", "row": f"RB-LRA + CE-only fine-tune (WR, no KD, lr {CE_ONLY_LR:g}) {p}",
             "low_rank": LowRankConfig(method="rb-lra", **lr),
             "kd": dataclasses.replace(kd, alpha=1.0, beta=0.0, lr=CE_ONLY_LR)},
            {"table": "1", "row": f"LRA + KD {p}", "low_rank": LowRankConfig(method="lra", **lr), "kd": kd},
            {"table": "1", "row": f"RB-LRA + KD (WR, default) {p}", "low_rank": LowRankConfig(method="rb-lra", **lr),
             "kd": kd, "default": True},
        ]
        if f == max(reductions):
            rows += [
                {"table": "7", "row": f"RB-LRA + KD, zero init {p}", "low_rank": LowRankConfig(init="zero", **lr), "kd": kd},
                {"table": "7", "row": f"RB-LRA + KD, random init {p}", "low_rank": LowRankConfig(init="random", **lr),
                 "kd": kd},
                {"table": "7", "row": f"RB-LRA + KD, WR, base + branch trained {p}",
                 "low_rank": LowRankConfig(train_base=True, **lr), "kd": kd},
                # a separate branch lr (issue 13): the base trains 10x slower than the branch
                {"table": "7", "row": f"RB-LRA + KD, WR, base + branch, base lr {kd.lr / 10:g}, branch lr {kd.lr:g} {p}",
                 "low_rank": LowRankConfig(train_base=True, **lr),
                 "kd": dataclasses.replace(kd, lr=kd.lr / 10, branch_lr=kd.lr)},
                {"table": "7", "row": f"RB-LRA + KD, WR, base + branch, base lr {kd.lr:g}, branch lr {kd.lr * 10:g} {p}",
                 "low_rank": LowRankConfig(train_base=True, **lr),
                 "kd": dataclasses.replace(kd, branch_lr=kd.lr * 10)},
            ]
    return rows


def markdown(bed: TestBed, control: Dict[str, Any], rows: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    kd = meta["kd_config"]
    out = ["# LRA-QViT Table 1 / Table 7 on the test bed (converged reference)", ""] + bed.header() + [
        "", f"Fine-tuned rows: {kd['steps'] or 'default'} steps x batch {kd['batch_size']}, AdamW lr {kd['lr']:g}, "
        f"warm-up + cosine, {kd['alpha']:g}·CE + {kd['beta']:g}·Σ per-block {kd['feature_loss'].upper()} (teacher = the "
        f"reference; the CE-only row: 1·CE, lr {CE_ONLY_LR:g}), trains "
        f"{kd['trainable']}; SVD: {meta['svd']}.", ""]
    for table, title in (("1", "Table 1: methods"), ("7", "Table 7 / RB-LRA variants (KD, largest reduction)")):
        out += [f"## {title}", "", f"| method | params (M) | GFLOPs | {TestBed.CELL_HEADER} | KD loss first -> last | s |",
                f"|---|---:|---:|{TestBed.CELL_RULE}|---|---:|"]
        base_rows = [bed.reference_row, bed.probe_row, control] if table == "1" else [bed.reference_row]
        for r in base_rows + [r for r in rows if r.get("table") == table]:
            if r is None:
                continue
            kdl = f"{r['kd_first_loss']:.3f} -> {r['kd_final_loss']:.3f}" if r.get("kd_first_loss") is not None else ""
            secs = f"{r['seconds']:.0f}" if r.get("seconds") is not None else ""
            out.append(f"| {r['row']} | {r['params'] / 1e6:.2f} | {r['gflops']:.3f} | {TestBed.cells(r)} | "
                       f"{kdl} | {secs} |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=("quick", "full"), default="full")
    _result_file.add_out(p, Path("benchmarks/results/table1_lra"))
    p.add_argument("--reductions", default="0.45", help="comma-separated parameter reductions (largest: Table 7)")
    p.add_argument("--kd-steps", type=int, default=None, help="distillation steps (default: the library's)")
    p.add_argument("--kd-lr", type=float, default=None, help="distillation lr (default: the library's)")
    p.add_argument("--no-control", action="store_true", help="skip the dense + KD control row")
    p.add_argument("--rows", default=None, help="only rows whose name contains one of these comma-separated words")
    p.add_argument("--save-default", type=Path, default=None, help="save the default RB-LRA + KD model here")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    progress = not args.quiet
    bed = TestBed(args.profile, progress=progress)
    kd = DistillConfig(steps=args.kd_steps, **({} if args.kd_lr is None else {"lr": args.kd_lr}))
    meta = {**bed.meta(), "kd_config": kd.to_dict(), "svd": "activation-aware (whitened; the default)",
            "versions": versions()}
    rows: List[Dict[str, Any]] = []

    def save(control):
        _result_file.write(args.out, {"meta": meta, "reference": bed.reference_row, "probe": bed.probe_row,
                                      "dense_kd_control": control, "rows": rows}, markdown(bed, control, rows, meta))

    # the control: the dense model given the same distillation budget (every parameter trains)
    control = None
    if not args.no_control:
        t0 = time.perf_counter()
        dense = copy.deepcopy(bed.reference)
        res = distill_(dense, bed.reference, bed.train, dataclasses.replace(kd, trainable="all"), progress=progress)
        control = bed.score("dense FP32 + the same KD budget (control; all parameters train)", dense,
                            kd_first_loss=res.first_loss, kd_final_loss=res.to_dict()["final_loss"],
                            seconds=time.perf_counter() - t0)
        del dense
    save(control)
    wanted = None if args.rows is None else [w.strip() for w in args.rows.split(",")]
    for spec in plan([float(x) for x in args.reductions.split(",")], kd):
        if wanted and not any(w in spec["row"] for w in wanted):
            continue
        print(f"== {spec['row']}", flush=True)
        model = copy.deepcopy(bed.reference)
        t0 = time.perf_counter()
        recipe = Recipe(low_rank=dataclasses.replace(spec["low_rank"], svd="activation"), distill=spec["kd"])
        out = args.save_default if spec.get("default") and args.save_default else None
        report = compress(model, recipe, train_data=bed.train, alloc_data=bed.train, evaluate=False, out=out,
                          progress=progress)
        dist = (report.compression or {}).get("distill") or {}
        row = bed.score(spec["row"], model, table=spec["table"], method=spec["low_rank"].method,
                        init=spec["low_rank"].init, train_base=spec["low_rank"].train_base,
                        kd=spec["kd"] is not None, kd_beta=None if spec["kd"] is None else spec["kd"].beta,
                        kd_lr=None if spec["kd"] is None else spec["kd"].lr,
                        kd_branch_lr=None if spec["kd"] is None else spec["kd"].branch_lr,
                        kd_first_loss=dist.get("first_loss"), kd_final_loss=dist.get("final_loss"),
                        seconds=time.perf_counter() - t0)
        rows.append(row)
        print(f"   held-out {row['held_out']['top1']:.2f}  test {row['test']['top1']:.2f}", flush=True)
        save(control)
    print(args.out.with_name(args.out.name + ".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
