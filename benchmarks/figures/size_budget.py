"""docs/size_budget.md: the issue-23 size goals from the full-profile table of built programs."""
from __future__ import annotations

from .format import Source, code, table


def size_goals(src: Source) -> str:
    """size_budget.md: the issue-23 goals from the full-profile size-accuracy table of built .pte files: the MLoRQ
    rows planned for each goal's size (fixed before any test figure was seen), their test figures reported."""
    from lraqvit_deploy.stats import format_difference, paired_difference

    d = src.data
    fp32 = d["fp32_pte_mb"]
    rows = {r["row"]: r for r in d["rows"]}

    def arm(r):
        cpus = (r.get("arm_verification") or {}).get("cpus") or {}
        if not cpus:
            return "not run"
        ok = [c for c, e in cpus.items() if e["status"] == "ok"]
        fams = sorted({f for e in cpus.values() for f in (e.get("int4_gemm") or [])})
        return (f"{len(ok)}/{len(cpus)} ok ({', '.join(ok)}; {r['arm_verification']['n_images']} images each"
                + (f"; 4-bit GEMMs {', '.join(code(f) for f in fams)}" if fams else "") + ")")

    lines = table(["goal", "row", ".pte MB (% of FP32)", "Δ .pte test top-1 [95 % CI]", "host SQNR", "emulated Arm CPUs"],
                  [[goal, r["row"], f"{r['pte']['size_mb']:.2f} ({100 * r['pte']['size_mb'] / fp32:.1f} %)",
                    format_difference(r["pte"]["vs_reference"]), f"{r['pte']['host_verification']['sqnr_db']:.1f} dB",
                    arm(r)]
                   for goal, frac in (("≤ 12.5 %, within 1.5 pt", 0.125), ("≤ 19.5 %, within 0.7 pt", 0.195))
                   for r in d["rows"] if r["row"].startswith(f"MLoRQ {frac:.1%}")], "lllrrl")
    pairs = []
    for tag in ("per channel", "g32"):
        base = rows.get(f"dense W4 {tag} (RTN)")
        for m in ("WADS", "SmoothQuant"):
            r = rows.get(f"dense W4 {tag} + {m}")
            if base and r:
                diff = paired_difference([c == "1" for c in base["correct_pte"]], [c == "1" for c in r["correct_pte"]])
                pairs.append([f"W4 {tag}", m, f"{r['pte']['top1']:.2f}", f"{base['pte']['top1']:.2f}",
                              format_difference(diff.to_dict())])
    if pairs:
        lines += ["", *table(["weights", "method", ".pte test top-1", "RTN .pte test top-1",
                              "method − RTN [95 % CI, paired]"], pairs, "llrrl")]
    lines += ["", f"Test bed `{d['meta']['profile']}` profile, {d['rows'][0]['pte']['n_images']:,} test images, "
                  f"every row the built .pte in the ExecuTorch runtime ({code(src.path)})."]
    return "\n".join(lines)



def four_bit_scale(src: Source) -> str:
    """size_budget.md: DeiT-S/B 224 px 4-bit forms from pipeline_scale (--programs ... w4 ... mlorq-12.5): the
    MLoRQ plan's time (cold candidate search, then warm), each program's .pte size and host latency vs dense FP32
    and vs stock PT2E INT8, at every thread count (one interleaved run)."""
    from lraqvit_deploy.measure.rounds import summarize_rounds

    from .format import cpu_label

    d = src.data
    host, s = d["host"], d["settings"]
    labels = {"fp32": "dense FP32", "pt2e-int8": "stock PT2E INT8", "w4": "W4 per channel (RTN)",
              "w4-g32": "W4 g32 (RTN)", "mlorq-19.5": "MLoRQ 19.5 %", "mlorq-12.5": "MLoRQ 12.5 %",
              "rb-fp32": "RB-LRA FP32", "rb-wads-int8": "RB-LRA + WADS INT8"}
    build = {"fp32": "android-fp32", "pt2e-int8": "android-pt2e-int8", "w4": "android-w4", "w4-g32": "android-w4-g32",
             "mlorq-19.5": "android-mlorq-19.5", "mlorq-12.5": "android-mlorq-12.5",
             "rb-fp32": "android-rb-fp32", "rb-wads-int8": "android-rb-wads"}
    plans, rows = [], []
    threads = sorted({t for m in d["models"].values() for t in (m.get("bench") or {}).get("threads", {})}, key=int)
    for name, m in d["models"].items():
        steps = m["steps"]
        info = lambda k: (steps.get(k) or {}).get("info") or {}  # noqa: E731
        cold, warm = info("mlorq-19.5"), info("mlorq-12.5")
        if cold.get("plan_seconds") is not None:
            plans.append([name, str(sum((cold.get("forms") or {}).values())),
                          f"{cold['plan_seconds']:.0f} s", f"{warm['plan_seconds']:.0f} s" if warm.get("plan_seconds") else "—",
                          f"{steps['mlorq-19.5']['seconds']:.0f} s"])
        fp32_mb = info("android-fp32").get("size_mb")
        bench = (m.get("bench") or {}).get("threads", {})
        for p in (m.get("bench") or {}).get("programs", []):
            mb = info(build[p]).get("size_mb")
            cells = []
            for t in threads:
                tb = bench.get(t) or {}
                row = (tb.get("summary") or {}).get(p)
                if not row:
                    cells += ["—", "—", "—"]
                    continue
                # against stock INT8 of the same round, like the × FP32 column
                vs_i8 = summarize_rounds(tb["rounds"], "pt2e-int8")[p]["ratio_median"] \
                    if any("pt2e-int8" in r for r in tb.get("rounds", ())) else None
                cells += [f"{row['median_ms']:.1f}", f"{row['ratio_median']:.3f}",
                          "—" if vs_i8 is None else f"{vs_i8:.3f}"]
            rows.append([name, labels.get(p, p), "—" if mb is None else
                         f"{mb:.1f} ({100 * mb / fp32_mb:.1f} %)" if fp32_mb else f"{mb:.1f}", *cells])
    head = ["model", "program", ".pte MB (% of FP32)"]
    for t in threads:
        head += [f"{t} thr: median ms", "× dense FP32", "× stock INT8"]
    lines = []
    if plans:
        lines += table(["model", "planned Linears", "MLoRQ plan, empty candidate cache (19.5 %)",
                        "plan reading the cache (12.5 %)", "19.5 % compress in all (plan, then quantize)"],
                       plans, "lrrrr") + [""]
    lines += table(head, rows, "llr" + "rrr" * len(threads))
    lines += ["", f"`benchmarks/pipeline_scale.py` (random weights, {s['img_size']} px, {s['calib_images']} calibration "
                  f"images for the plan's activation statistics; {s['rounds']} interleaved rounds of "
                  f"{s['iterations']} timed runs after {s['warmup']} warm-up; × columns: medians over rounds of "
                  f"the per-round ratio to dense FP32 or to stock PT2E INT8 of the same round) on "
                  f"{cpu_label(host['cpu'])}, load average {host.get('loadavg_start', 0):.1f} at the start, "
                  f"{d['date'][:10]} ({code(src.path)})."]
    return "\n".join(lines)
