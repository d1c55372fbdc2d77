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

