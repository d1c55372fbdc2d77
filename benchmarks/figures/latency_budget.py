"""docs/latency_budget.md: the latency model against measured programs (benchmarks/latency_budget.py)."""
from __future__ import annotations

from .format import Source, code, cpu_label, num, signed, table

SHORT = {"deit_tiny_patch16_224": "DeiT-T", "deit_small_patch16_224": "DeiT-S", "deit_base_patch16_224": "DeiT-B"}


def _model(m) -> str:
    return f"{SHORT.get(m['model'], m['model'])} {m['img_size']}"


def latency_check(src: Source) -> str:
    """latency_budget.md: per model and program, predicted vs measured whole-program latency at each thread count
    (error = predicted / measured - 1), its ratio to stock PT2E INT8 measured in the same rounds, and the planner's
    error; then how far the predictions stray, and the measured break-even ranks of the largest model."""
    d = src.data
    threads = [str(t) for t in d["threads"]]
    head = ["model", "program", "forms", ".pte MB", "planner error"]
    for t in threads:
        head += [f"{t}t predicted ms", f"{t}t measured ms", f"{t}t error", f"{t}t × stock INT8"]
    rows, errors = [], []
    for m in d["models"]:
        for pid, r in m["programs"].items():
            row = [_model(m), f"{pid}: {r['label']}", ", ".join(r["forms"]), num(r["size_mb"], 1),
                   num(r["planner_error"], 4)]
            for t in threads:
                meas, err = r["measured"][t], r["error"][t]
                errors.append((abs(err), err, _model(m), pid, t))
                row += [num(r["predicted"][t]), num(meas["median_ms"]), f"{signed(100 * err, 1)} %",
                        num(meas["ratio_median"], 3)]
            rows.append(row)
    lines = table(head, rows, "lllrr" + "rrrr" * len(threads))
    within = sum(1 for e in errors if e[0] <= 0.10)
    worst = max(errors)
    lines += ["", f"{within} of {len(errors)} predictions within 10 % of the measured median; the largest error "
                  f"{signed(100 * worst[1], 1)} % ({worst[2]}, {worst[3]}, {worst[4]} thread(s)). "
                  f"{cpu_label(d['cpu'])}, {d['rounds']} interleaved rounds × {d['iterations']} runs per thread "
                  f"count ({code(src.path)})."]
    lines += [""] if d.get("earlier_runs") else []
    for e in d.get("earlier_runs") or ():
        lines.append(f"- Earlier protocol, {e['protocol']} ({e['date']}): {e['within_10_percent']} within 10 %.")
    lines.append("")
    for m in d["models"]:
        p, t = m["programs"], threads[0]
        if not all(k in p for k in ("rb-int8", "lat-eq", "lat-2x")):
            continue

        def faster(pid):
            ratio = p[pid]["measured"][t]["ratio_median"]
            return f"{num(ratio, 3)} of stock INT8's latency ({num(1 / ratio)}× faster), planner error {num(p[pid]['planner_error'], 4)}"
        lines += [f"- {_model(m)}, {t} thread: uniform RB-LRA + INT8 {faster('rb-int8')}; latency plan at its "
                  f"latency {faster('lat-eq')}; latency plan at half of stock INT8 {faster('lat-2x')}."]
    notes = [f"{_model(m)} {pid}: " + (r["note"] or f"budget {r['budget_ms']} ms")
             for m in d["models"] for pid, r in m["programs"].items() if "budget_ms" in r]
    lines += ["", *(f"- {n}" for n in notes)]
    big = d["models"][-1]
    be = [[b["shape"], b["form"], num(b["param_r"], 1), " ".join(map(str, b["grid"])),
           *("none" if b["measured"][t] is None else str(b["measured"][t]) for t in threads)] for b in big["break_even"]]
    lines += ["", f"Measured break-even rank of {_model(big)} (the smallest grid rank at which the pair is slower than "
                  "the dense Linear in the same form; none: faster at every grid rank):", "",
              *table(["shape (in×out@tokens)", "form", "parameter break-even", "grid", *(f"{t}t" for t in threads)],
                     be, "llrl" + "r" * len(threads))]
    return "\n".join(lines)


def testbed_latency(src: Source) -> str:
    """latency_budget.md: on the test bed (full profile), the latency-budget row against the uniform RB-LRA row at
    the same predicted latency: predicted and measured host ms, built .pte test top-1, and the paired difference."""
    from lraqvit_deploy.stats import format_difference, paired_difference

    d = src.data
    rows = {r["row"]: r for r in d["rows"]}
    lat = next((r for r in d["rows"] if "latency_budget_ms" in r), None)
    if lat is None:
        return "(no latency-budget row in this result file yet)"
    uni = rows["RB-LRA -45 % + KD + WADS INT8"]
    eq = lat.get("equal_latency") or {}
    summ = eq.get("summary") or {}

    def ms(key):
        s = summ.get(key)
        return "not timed" if not s else f"{num(s['median_ms'])} [{num(s['min_ms'])}–{num(s['max_ms'])}]"
    diff = paired_difference([c == "1" for c in uni["correct_pte"]], [c == "1" for c in lat["correct_pte"]])
    out = table(["row", "weight forms", ".pte MB", "predicted ms", f"measured ms ({eq.get('threads', 1)} thread)",
                 ".pte test top-1", "Δ vs reference [95 % CI]"],
                [[uni["row"], "uniform ranks, int8 factors", num(uni["pte"]["size_mb"]), num(lat["uniform_predicted_ms"]),
                  ms("uniform"), num(uni["pte"]["top1"]), format_difference(uni["pte"]["vs_reference"])],
                 [lat["row"], ", ".join(f"{k} ×{v}" for k, v in (lat.get("weight_forms") or {}).items()),
                  num(lat["pte"]["size_mb"]), num(lat["latency_budget_ms"]) + " (budget)", ms("latency"),
                  num(lat["pte"]["top1"]), format_difference(lat["pte"]["vs_reference"])]], "llrrrrl")
    ratio = (summ.get("latency") or {}).get("ratio_median")
    return "\n".join(out + ["", f"Latency plan − uniform, .pte test top-1, paired over the same "
                                f"{diff.n_images:,} images: {format_difference(diff.to_dict())}"
                            + (f"; measured latency ratio (latency plan / uniform, median of {eq['rounds']} "
                               f"interleaved rounds) {num(ratio, 3)}" if ratio else "")
                            + f" ({code(src.path)}, cost table {code(lat['cost_table'])})."])
