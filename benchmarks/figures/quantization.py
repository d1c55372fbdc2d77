"""docs/quantization.md: Table 2, INT8 methods on the dense and the low-rank model."""
from __future__ import annotations

from .format import Source, code, cpu_label, interval, lr, table

T2_COLUMNS = ("naive", "per-token-static", "per-token", "wads", "wads-static", "wads-fc2")
T2_VARIANTS = ("wads-scaled", "wads-norm", "wads-scaled-norm", "wads-fc2")


def table2(src: Source) -> str:
    d = src.data
    meta, setup, models = d["meta"], d["setup"], d["models"]
    first = next(iter(models.values()))["rows"]
    labels = {r["id"]: r["label"] for r in first}
    wads = next(r for r in first if r["id"] == "wads")["config"]
    lines = [f"`python benchmarks/table2_quant.py --profile {meta['profile']}` ({code(src.path)}; "
             f"{cpu_label(meta['cpu'])}, {meta['threads']} threads): {setup['calib_images']} calibration images of "
             f"{meta['train_pool']}; WADS searches {wads['wads_iters']} steps per layer (lr {lr(wads['wads_lr'])}, "
             f"{wads['wads_max_rows']} {wads['wads_sampling']} rows); every row scored on the held-out "
             f"{meta['held_out']} and on {meta['test_images']:,} test images with paired 95 % intervals. The converged "
             f"reference scores test {meta['reference_top1']['test']:.2f}; the low-rank model is the "
             f"{setup['lowrank_source']} (test {models['lowrank']['fp32']['test']['top1']:.2f}, "
             f"{interval(models['lowrank']['fp32']['test']['vs_reference'])} vs the reference).", ""]
    body = []
    for key, m in models.items():
        rows = {r["id"]: r for r in m["rows"]}
        body.append([{"dense": "dense", "lowrank": "low-rank"}.get(key, key),
                     *(interval(rows[c]["test"]["vs"]) if c in rows else "—" for c in T2_COLUMNS)])
    lines += table(["INT8 on (Δ vs its own FP32, test)", *(labels[c] for c in T2_COLUMNS)], body)
    all_rows = [(key, r) for key, m in models.items() for r in m["rows"]]
    worst = max(abs(r["test"]["vs"]["diff_pt"]) for _, r in all_rows)
    excl = [f"{'low-rank' if k == 'lowrank' else k} {r['label']} ({interval(r['test']['vs'])})" for k, r in all_rows
            if r["test"]["vs"]["ci95_pt"][1] < 0 or r["test"]["vs"]["ci95_pt"][0] > 0]
    lr_rows = {r["id"]: r for r in models["lowrank"]["rows"]}
    variants = " / ".join(f"{lr_rows[v]['held_out']['top1']:.1f}" for v in T2_VARIANTS if v in lr_rows)
    names = "; ".join(labels[v] for v in T2_VARIANTS if v in lr_rows)
    widest = max((r["held_out"]["vs_reference"]["ci95_pt"][1] - r["held_out"]["vs_reference"]["ci95_pt"][0]) / 2
                 for r in lr_rows.values())
    int8 = lr_rows["wads"]["test"]["vs_reference"]
    lines += ["", f"Every Δ vs its own FP32 (all {len(all_rows)} rows of both tables) is within ±{worst:.2f} pt; intervals "
                  f"that exclude 0: {'; '.join(excl) if excl else 'none'}. The WADS variants ({names}) score "
                  f"{variants} on the low-rank model's held-out images vs {lr_rows['wads']['held_out']['top1']:.1f} for "
                  f"{labels['wads']} (held-out intervals up to ±{widest:.1f} pt). Against the converged reference the "
                  f"INT8 low-rank model ({labels['wads']}) is {interval(int8)} on test."]
    return "\n".join(lines)

