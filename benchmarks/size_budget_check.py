"""The size-budget acceptance run (issue 23), as a user runs it, recorded: a budget in MB for Android,
then the built .pte verified on this host and on emulated Arm CPUs, with its 4-bit kernels named.

    deploy compress --model testbed --size-budget-mb 10.8 --target android --out A
    deploy build --target android A --out B

    python benchmarks/size_budget_check.py [--profile quick] [--budget-mb 10.8] [--work DIR]

Writes OUT.{json,md} (default benchmarks/results/size_budget_check): planned and built size, the weight forms, host
agreement / SQNR, and per emulated CPU the agreement and the KleidiAI 4-bit and 8-bit GEMMs that ran.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import _result_file
from lraqvit_deploy import Recipe, build, compress, create_model
from lraqvit_deploy.recipe import AllocationConfig

OUT = Path(__file__).parent / "results" / "size_budget_check"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=("quick", "full"), default="quick")
    ap.add_argument("--budget-mb", type=float, default=10.8)
    ap.add_argument("--work", type=Path, default=Path("/tmp/size_budget_check"))
    _result_file.add_out(ap, OUT)
    ap.add_argument("--render-only", action="store_true", help="rewrite the .md from the stored .json")
    args = ap.parse_args(argv)
    from lraqvit_deploy.measure.host import lscpu

    if args.render_only:
        from lraqvit_deploy.io import read_json

        result = read_json(args.out.with_name(args.out.name + ".json"))
        _result_file.write(args.out, result, render(result))
        return
    model = create_model("testbed", testbed_profile=args.profile)
    t0 = time.time()
    report = compress(model, Recipe(allocation=AllocationConfig(size_budget_mb=args.budget_mb, target="android")),
                      out=args.work / "A")
    compress_s = time.time() - t0
    t0 = time.time()
    res = build(args.work / "A", args.work / "B", "android")
    build_s = time.time() - t0
    m = res.manifest
    cpus = {}
    for cpu, e in (m.get("arm_verification") or {}).get("cpus", {}).items():
        k = e.get("kernels") or {}
        cpus[cpu] = {"status": e.get("status"), "agreement": e.get("agreement"), "sqnr_db": e.get("sqnr_db"),
                     "n_images": (m.get("arm_verification") or {}).get("n_images"),
                     "int8_gemm": k.get("int8_gemm"), "int4_gemm": k.get("int4_gemm"),
                     "int4_families": k.get("int4_families"), "method": k.get("method")}
    v = m["verification"]
    result = {"commands": [f"deploy compress --model testbed --testbed-profile {args.profile} --size-budget-mb "
                           f"{args.budget_mb:g} --target android --out A", "deploy build --target android A --out B"],
              "cpu": lscpu(), "profile": args.profile, "size_budget_mb": args.budget_mb,
              "planned_size_mb": m.get("planned_size_mb"), "built_size_mb": m["size_mb"],
              "weight_forms": m.get("weight_forms"), "compress_top1": report.metrics.get("top1"),
              "baseline_top1": report.metrics.get("baseline_top1"), "top1_diff_ci95": report.metrics.get("top1_diff_ci95"),
              "host": {k: v.get(k) for k in ("agreement", "gated_agreement", "sqnr_db", "min_cosine", "n_images",
                                               "min_agreement", "min_sqnr_db")},
              "arm": cpus, "compress_seconds": round(compress_s, 1), "build_seconds": round(build_s, 1)}
    _result_file.write(args.out, result, render(result))


def render(result) -> str:
    """The Markdown report of a result."""
    from lraqvit_deploy.measure.host import cpu_line

    v, budget = result["host"], result["size_budget_mb"]
    ci = result.get("top1_diff_ci95")
    diff = None if result.get("compress_top1") is None else result["compress_top1"] - result["baseline_top1"]
    lines = [f"# Size budget {budget:g} MB for Android: the test bed ({result['profile']} profile)", "",
             *[f"    {c}" for c in result["commands"]], "",
             f"CPU: {cpu_line(result['cpu'])}; compress {result['compress_seconds']:.0f} s, build "
             f"{result['build_seconds']:.0f} s (with the Arm check; other work shared the 2 cores).", "",
             f"- planned {result['planned_size_mb']:.3f} MB, built **{result['built_size_mb']:.3f} MB** (budget "
             f"{budget:g}; × 1.05 = {budget * 1.05:.2f}); weight matrices per form {result['weight_forms']}",
             f"- simulator top-1 {result['compress_top1']:.2f} vs reference {result['baseline_top1']:.2f}: Δ "
             f"{diff:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}] (paired 95 %, the quick profile's 1,000 test images)"
             if ci else "- not scored",
             f"- host runtime vs simulator: agreement {v['agreement']:.4f} (gated {v['gated_agreement']:.4f}), SQNR "
             f"{v['sqnr_db']} dB, on {v['n_images']} images", "",
             "| qemu CPU | status | agreement | SQNR dB | int8 GEMM that ran | int4 GEMMs that ran |",
             "|---|---|---:|---:|---|---|"]
    for cpu, e in result["arm"].items():
        sq = "exact" if e["sqnr_db"] is None else f"{e['sqnr_db']:.1f}"
        lines.append(f"| {cpu} | {e['status']} | {e['agreement']:.4f} ({e['n_images']} images) | {sq} | "
                     f"{', '.join(e['int8_gemm'] or [])} | {', '.join(e['int4_gemm'] or [])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
