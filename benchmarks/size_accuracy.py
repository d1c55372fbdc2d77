"""Size-accuracy table on BUILT Android programs (issue 23): every row is compressed with the library,
built into an XNNPACK .pte, and scored as the .pte in the ExecuTorch runtime on the test images, the
simulator (the PyTorch model) beside it, with paired 95 % intervals against the converged reference.

Rows: FP32; dense INT8 (per-token); RB-LRA -45 % + KD + WADS INT8; dense W4 per channel and blockwise
(g32/64/128), round to nearest; W4 + WADS and W4 + SmoothQuant (per channel and g32; RepQ only
re-parameterises for per-tensor static activations, which XNNPACK does not run); MLoRQ at 19.5 % and
12.5 % of the FP32 .pte size (the MLoRQ poster's two points), without and with block distillation.
The held-out images (train[50000:51000]) score the simulator only; the test images score both.

    python benchmarks/size_accuracy.py --profile full [--rows NAME,NAME] [--quiet]
    python benchmarks/size_accuracy.py --profile full --arm "MLoRQ 12.5,MLoRQ 19.5" [--arm-images 64]
    python benchmarks/size_accuracy.py --profile full --latency-table benchmarks/results/cost_tables/testbed_host_1t.json

    python benchmarks/size_accuracy.py --profile full --equal-latency

`--latency-table` (issue 26) adds one row: MLoRQ + KD planned under a latency budget equal to the uniform
RB-LRA row's predicted latency on that `deploy profile` table; `--equal-latency` then times both rows' .pte
side by side (kept in --work).

Writes benchmarks/results/size_accuracy.{json,md,png} after every row; a re-run skips stored rows
(their per-image results are kept for pairing). Settings and the CPU are in the JSON. `--arm` runs the
built .pte of the named stored rows (kept in --work) on the emulated Arm CPUs (qemu-aarch64: Cortex-A55,
A76, A710, max) against the same .pte on this host's runtime, and records each CPU's agreement, SQNR
and the KleidiAI GEMMs that ran in the row's `arm_verification`.
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from _result_file import add_out
from accuracy import TestBed  # the scripts' shared test bed (benchmarks/ is first on sys.path)

from lraqvit_deploy import Recipe, build, compress
from lraqvit_deploy.backends.executorch.runtime import predict_program
from lraqvit_deploy.data import calibration_batch
from lraqvit_deploy.evaluate import EvalResult
from lraqvit_deploy.io import atomic_write, read_json, write_json
from lraqvit_deploy.lowrank import DistillConfig, LowRankConfig
from lraqvit_deploy.quant import quant_config
from lraqvit_deploy.recipe import AllocationConfig
from lraqvit_deploy.stats import format_difference

OUT = Path(__file__).parent / "results"


def w4(method: str, group=None, **kw):
    return quant_config(method, w_bits=4, w_group_size=group, act_scheme="per_token_dynamic", act_symmetric=False,
                        **kw)


def recipes(fp32_mb: float):
    """(row name, recipe or None for FP32, extra settings) in table order."""
    q8 = quant_config("per-token", act_symmetric=False)
    rows = [("FP32", None, {}), ("dense INT8 (w8, per-token)", Recipe(quant=q8), {}),
            ("RB-LRA -45 % + KD + WADS INT8", Recipe(LowRankConfig("rb-lra", param_reduction=0.45),
                                                     distill=DistillConfig(),
                                                     quant=quant_config("wads", act_symmetric=False)), {})]
    for g in (None, 32, 64, 128):
        rows.append((f"dense W4 {'per channel' if g is None else f'g{g}'} (RTN)", Recipe(quant=w4("per-token", g)), {}))
    for g in (None, 32):
        tag = "per channel" if g is None else f"g{g}"
        rows.append((f"dense W4 {tag} + WADS", Recipe(quant=w4("wads", g)), {}))
        rows.append((f"dense W4 {tag} + SmoothQuant", Recipe(quant=w4("smoothquant", g)), {}))
    for frac in (0.195, 0.125):
        budget = round(fp32_mb * frac, 3)
        alloc = AllocationConfig(size_budget_mb=budget, target="android")
        rows.append((f"MLoRQ {frac:.1%} ({budget:g} MB)", Recipe(allocation=alloc), {"size_budget_mb": budget}))
        rows.append((f"MLoRQ {frac:.1%} ({budget:g} MB) + KD", Recipe(allocation=alloc, distill=DistillConfig()),
                     {"size_budget_mb": budget}))
    return rows


UNIFORM = "RB-LRA -45 % + KD + WADS INT8"


def latency_rows(bed: TestBed, table: str):
    """The latency-budget row (issue 26): MLoRQ + KD planned at the predicted latency of the uniform row (its
    ranks with int8 factors) on `table`, this host's cost table of the test bed's shapes."""
    from lraqvit_deploy.lowrank import compress_
    from lraqvit_deploy.rank_alloc.latency import latency_model
    from lraqvit_deploy.rank_alloc.plan import LayerChoice

    lat = latency_model(bed.reference, table)
    ranks = compress_(copy.deepcopy(bed.reference), LowRankConfig("rb-lra", param_reduction=0.45))
    uniform = lat.predict({n: LayerChoice(rank=r, factor_bits=(8, 8)) for n, r in ranks.items() if r is not None})
    budget = round(uniform["predicted_latency_ms"], 3)
    alloc = AllocationConfig(latency_budget_ms=budget, target="android", cost_table=table)
    return [(f"latency plan at {UNIFORM}'s predicted {budget:g} ms + KD", Recipe(allocation=alloc,
                                                                                distill=DistillConfig()),
             {"latency_budget_ms": budget, "cost_table": table, "uniform_predicted_ms": budget})]


def equal_latency(rows, i: int, work: Path, table: str, rounds: int = 5) -> dict:
    """Row i's .pte and the uniform row's, predicted from `table` and timed side by side (interleaved rounds)."""
    from lraqvit_deploy import HostBenchOptions
    from lraqvit_deploy.table import bench_rounds

    j = next(k for k, r in enumerate(rows) if r["row"] == UNIFORM)
    ptes = {"uniform": row_dir(rows, j, work) / "pte", "latency": row_dir(rows, i, work) / "pte"}
    if not all(p.is_dir() for p in ptes.values()):
        return {"skipped": f"a built program is missing ({', '.join(str(p) for p in ptes.values())})"}
    threads = 1
    res = bench_rounds(ptes, HostBenchOptions(iterations=20, warmup=3, threads=threads, progress=False), rounds)
    return {"threads": threads, "rounds": rounds, "cost_table": table, "summary": res["summary"],
            "baseline": res["baseline"]}


def run_row(bed: TestBed, name: str, recipe, work: Path, calib, progress: bool):
    model = copy.deepcopy(bed.reference)
    t0 = time.time()
    info = {}
    if recipe is not None:
        rep = compress(model, recipe, train_data=bed.train, calib_data=calib, alloc_data=calib, evaluate=False,
                       progress=progress)
        info = {"planned_size_mb": (rep.compression or {}).get("planned_size_mb"),
                "weight_forms": ((rep.compression or {}).get("rank_alloc") or {}).get("forms")
                if isinstance((rep.compression or {}).get("rank_alloc"), dict) else None}
    compress_s = time.time() - t0
    row = bed.score(name, model)  # the simulator: held-out and test
    t0 = time.time()
    from lraqvit_deploy.backends.executorch.backend import AndroidBuildOptions

    res = build(model, work / "pte", AndroidBuildOptions(verify_images=500, arm_verify=False, progress=progress))
    build_s = time.time() - t0
    pte = next((work / "pte").glob("*.pte"))
    preds, labels = predict_program(pte, bed.test, progress=progress)
    r = EvalResult(100.0 * (preds == labels).float().mean().item(), len(labels), 0, 0.0, 0.0,
                   correct=preds == labels)
    row["pte"] = {"top1": r.top1, "n_images": r.n_images, "vs_reference": bed.versus_reference(r).to_dict(),
                  "size_mb": res.manifest["size_mb"],
                  "host_verification": {k: res.manifest["verification"].get(k) for k in
                                        ("agreement", "gated_agreement", "sqnr_db", "min_cosine", "n_images")}}
    row.update(info, weight_forms_built=res.manifest.get("weight_forms"), compress_seconds=round(compress_s, 1),
               build_seconds=round(build_s, 1), correct_pte="".join("1" if c else "0" for c in r.correct.tolist()))
    return row


def row_dir(rows, i: int, work: Path) -> Path:
    """Where row i's .pte was built: FP32 in work/FP32, the others in work/row<i> (the order they ran in)."""
    return work / ("FP32" if rows[i]["row"] == "FP32" else f"row{i}")


def arm_check(bed: TestBed, pte: Path, n_images: int, progress: bool):
    """The .pte under qemu on each default emulated CPU against the same .pte on the host runtime (which was
    verified against the simulator when built): the Arm gates the build applies (agreement >= 0.99 counting
    near-tie flips, SQNR >= the host gate)."""
    from lraqvit_deploy.backends.executorch import arm
    from lraqvit_deploy.backends.executorch.backend import DEFAULT_MIN_SQNR_DB
    from lraqvit_deploy.backends.executorch.runtime import execute, load_forward

    images = torch.stack([bed.test[i][0] for i in range(n_images)])
    labels = torch.tensor([int(bed.test[i][1]) for i in range(n_images)])
    method, _ = load_forward(pte)
    host = torch.cat([execute(method, [images[i: i + 1].contiguous()], pte)[0] for i in range(n_images)])
    res = arm.arm_verification(pte, images, host, labels, min_agreement=0.99,
                               min_sqnr_db=DEFAULT_MIN_SQNR_DB["quant_linear"], progress=progress)
    cpus = {}
    for cpu, e in res["cpus"].items():
        k = e.get("kernels") or {}
        cpus[cpu] = {"status": e.get("status"), "reason": e.get("reason"), "agreement": e.get("agreement"),
                     "gated_agreement": e.get("gated_agreement"), "sqnr_db": e.get("sqnr_db"), "top1": e.get("top1"),
                     "int8_gemm": k.get("int8_gemm"), "int4_gemm": k.get("int4_gemm"),
                     "int4_families": k.get("int4_families"), "seconds": e.get("seconds")}
    return {"reference": "the same .pte on this host's ExecuTorch runtime", "n_images": n_images,
            "min_agreement": 0.99, "min_sqnr_db": DEFAULT_MIN_SQNR_DB["quant_linear"], "skipped": res.get("skipped"),
            "cpus": cpus}


def render(meta, rows, fp32_mb, out: Path) -> None:
    lines = [f"# Size-accuracy on built Android programs ({meta['profile']} profile)", "",
             *meta["header"], "", f"FP32 .pte: {fp32_mb:.2f} MB. Sizes are the built .pte files.", "",
             "| row | .pte MB | % of FP32 | planned MB | .pte test top-1 | Δ .pte test [95 % CI] | simulator test "
             "top-1 | Δ sim held-out [95 % CI] | host SQNR dB |", "|---|---:|---:|---:|---:|---|---:|---|---:|"]
    for r in rows:
        p = r["pte"]
        lines.append(f"| {r['row']} | {p['size_mb']:.2f} | {100 * p['size_mb'] / fp32_mb:.1f} | "
                     f"{r.get('planned_size_mb') or ''} | {p['top1']:.2f} | {format_difference(p['vs_reference'])} | "
                     f"{r['test']['top1']:.2f} | {format_difference(r['held_out']['vs_reference'])} | "
                     f"{p['host_verification'].get('sqnr_db')} |")
    armed = [r for r in rows if r.get("arm_verification")]
    if armed:
        lines += ["", "Emulated Arm CPUs (qemu-aarch64), each .pte against itself on this host's runtime "
                      f"({armed[0]['arm_verification']['n_images']} test images; gates: agreement >= 0.99 counting "
                      "near-tie flips, SQNR >= the host gate):", "",
                  "| row | CPU | status | agreement | SQNR dB | 4-bit GEMMs that ran | 8-bit GEMMs that ran |",
                  "|---|---|---|---:|---:|---|---|"]
        for r in armed:
            for cpu, e in r["arm_verification"]["cpus"].items():
                sq = "exact" if e.get("sqnr_db") is None else f"{e['sqnr_db']:.1f}"
                ag = "" if e.get("agreement") is None else f"{e['agreement']:.3f}"
                lines.append(f"| {r['row']} | {cpu} | {e['status']} | {ag} | {sq} | "
                             f"{', '.join(e.get('int4_gemm') or []) or '-'} | {', '.join(e.get('int8_gemm') or []) or '-'} |")
    with atomic_write(out.with_suffix(".md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in rows:
            p = r["pte"]
            lo, hi = p["vs_reference"]["ci95_pt"]
            ax.errorbar(100 * p["size_mb"] / fp32_mb, p["vs_reference"]["diff_pt"],
                        yerr=[[p["vs_reference"]["diff_pt"] - lo], [hi - p["vs_reference"]["diff_pt"]]], fmt="o",
                        capsize=3, label=r["row"])
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("built .pte size, % of FP32")
        ax.set_ylabel("Δ test top-1 vs reference (pt, 95 % CI)")
        ax.legend(fontsize=6, loc="lower right")
        fig.tight_layout()
        fig.savefig(out.with_suffix(".png"), dpi=120)
    except ImportError:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=("quick", "full"), default="full")
    ap.add_argument("--rows", default=None, help="comma-separated row names (or name prefixes) to run, in that "
                                                 "order (default: all, in table order)")
    ap.add_argument("--calib-images", type=int, default=128)
    ap.add_argument("--quiet", action="store_true")
    add_out(ap, OUT / "size_accuracy")  # also STEM.png
    ap.add_argument("--work", type=Path, default=Path("/tmp/size_accuracy"))
    ap.add_argument("--arm", default=None, help="comma-separated row-name prefixes of stored rows: run their built "
                                                "programs on the emulated Arm CPUs (no new rows)")
    ap.add_argument("--arm-images", type=int, default=64)
    ap.add_argument("--latency-table", default=None, help="a `deploy profile` table of the test bed on this host: "
                                                          "add the latency-budget row")
    ap.add_argument("--equal-latency", action="store_true", help="time the stored latency-budget row's .pte beside the "
                                                                 "uniform row's (no new rows; run alone)")
    args = ap.parse_args()
    progress = not args.quiet
    bed = TestBed(args.profile, progress=progress)
    calib = calibration_batch(bed.train, args.calib_images, seed=1)
    path = args.out.with_suffix(".json")
    stored = read_json(path) if path.exists() else {}
    rows = [r for r in stored.get("rows", []) if stored.get("meta", {}).get("profile") == args.profile]
    for r in rows:
        bed.restore({**r, "correct": r.get("per_image")})
    fp32_mb = stored.get("fp32_pte_mb")
    meta = {**bed.meta(), "header": bed.header()}
    if fp32_mb is None:
        row = run_row(bed, "FP32", None, args.work / "FP32", calib, progress)
        row["per_image"] = bed.per_image("FP32")
        fp32_mb = row["pte"]["size_mb"]
        rows = [row]
    if args.equal_latency:  # time the stored latency row beside the uniform row (run it alone: it times)
        for i, r in enumerate(rows):
            if "latency_budget_ms" in r:
                r["equal_latency"] = equal_latency(rows, i, args.work, r["cost_table"])
                write_json(path, {**stored, "rows": rows})
                render(meta, rows, fp32_mb, args.out)
        return
    if args.arm:
        for w in (w.strip() for w in args.arm.split(",")):
            for i, r in enumerate(rows):
                if r["row"].startswith(w):
                    pte = next((row_dir(rows, i, args.work) / "pte").glob("*.pte"))
                    print(f"== Arm check: {r['row']} ({pte})", flush=True)
                    r["arm_verification"] = arm_check(bed, pte, args.arm_images, progress)
                    write_json(path, {**stored, "rows": rows})
                    render(meta, rows, fp32_mb, args.out)
        return
    done = {r["row"] for r in rows}
    wanted = None if args.rows is None else [w.strip() for w in args.rows.split(",")]
    todo = recipes(fp32_mb) + (latency_rows(bed, args.latency_table) if args.latency_table else [])
    if wanted:  # in the order asked for
        names = {t[0] for t in todo}  # a full row name selects that row alone, a prefix every row it starts
        todo = [t for w in wanted for t in todo if (t[0] == w if w in names else t[0].startswith(w))]
    for name, recipe, extra in todo:
        if name in done:
            continue
        print(f"== {name}", flush=True)
        row = run_row(bed, name, recipe, args.work / f"row{len(rows)}", calib, progress)
        row.update(extra, per_image=bed.per_image(name))
        rows.append(row)
        done.add(name)
        write_json(path, {"meta": meta, "fp32_pte_mb": fp32_mb, "rows": rows,
                          "settings": {"calib_images": args.calib_images, "build": "AndroidBuildOptions("
                                       "verify_images=500, arm_verify=False)", "act": "int8 per-token asymmetric"}})
        render(meta, rows, fp32_mb, args.out)
    write_json(path, {"meta": meta, "fp32_pte_mb": fp32_mb, "rows": rows,
                      "settings": {"calib_images": args.calib_images}})
    render(meta, rows, fp32_mb, args.out)


if __name__ == "__main__":
    main()
