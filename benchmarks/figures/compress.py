"""docs/compress.md: SVD before fine-tuning, the KD default, Table 1 / 7 and what one compression costs."""
from __future__ import annotations

import ast
from typing import Any, Dict

from .format import MINUS, Source, reduction, strip_reduction, code, cpu_label, interval, lr, minutes, table


def svd_why(mixed: Source, table1: Source) -> str:
    """compress.md: plain vs activation-aware SVD before any fine-tuning, and energy-greedy ranks with KD."""
    m, t1 = mixed.data, table1.data
    ref = m["reference"]
    rows = []
    untrained = [r for r in m["rows"] if r.get("budget", "").endswith("params") and "FT" not in r["row"]
                 and "KD" not in r["row"] and "compensation" not in r["row"]]
    lra = next(r for r in t1["rows"] if r["method"] == "lra" and not r["kd"])
    budgets = []
    for r in untrained:
        if r["budget"] not in budgets:
            budgets.append(r["budget"])
    for budget in budgets:
        for r in [x for x in untrained if x["budget"] == budget]:
            rows.append([r["row"], budget.replace("-", MINUS), f"{r['params'] / 1e6:.2f} M", f"{r['test']['top1']:.2f}",
                         interval(r["test"]["vs_reference"])])
        if budget.startswith(f"-{round(100 * (1 - lra['params'] / t1['reference']['params']))}%"):
            rows.append(["uniform rank, activation-aware SVD (`--method lra`; Table 1's LRA row)", budget.replace("-", MINUS),
                         f"{lra['params'] / 1e6:.2f} M", f"{lra['test']['top1']:.2f}", interval(lra["test"]["vs_reference"])])
    kd = [r for r in m["rows"] if "KD" in r["row"]]
    lines = table(["no fine-tuning", "budget", "params", "test top-1", f"Δ vs reference ({ref['test']['top1']:.2f})"],
                  rows, "lllrl")
    lines += ["", f"Test bed `{m['meta']['profile']}` profile, {ref['test']['n_images']:,} test images, "
                  f"{cpu_label(m['meta']['cpu'])}; {code(mixed.path)}, {code(table1.path)}."]
    if kd:
        lines += ["", f"With block distillation on top ({_kd_settings(m['meta'].get('kd'))}; `--rank-alloc energy`): " + "; ".join(
            f"{r['budget'].replace('-', MINUS)} {r['params'] / 1e6:.2f} M params, test {r['test']['top1']:.2f} "
            f"({interval(r['test']['vs_reference'])})" for r in kd) + "."]
    return "\n".join(lines)


def _kd_settings(kd: Any) -> str:
    """`KD lr 1e-3, α = 0, batch 16, nmse` from a recorded DistillConfig (a dict, or its repr after a colon)."""
    if isinstance(kd, str):
        kd = ast.literal_eval(kd[kd.index("{"):])
    if not kd:
        return "KD settings not recorded"
    steps = f"{kd['steps']} steps" if kd.get("steps") else "default steps"
    return (f"KD {steps} × batch {kd['batch_size']}, lr {lr(kd['lr'])}, α = {kd['alpha']:g}, β = {kd['beta']:g}, "
            f"{kd['feature_loss']}")


def _kd_label(r: Dict[str, Any]) -> str:
    return f"α = {r['kd_alpha']:g}, lr {lr(r['kd_lr'])}, {r['kd_steps']} steps"


def kd_objective(src: Source) -> str:
    """compress.md: how the KD default (CE weight and lr) was chosen, on held-out training images."""
    d = src.data
    meta = d["meta"]
    rows = [r for r in d["rows"] if r.get("kd_lr") is not None]
    base_steps = meta.get("steps")
    at_base = [r for r in rows if r["kd_steps"] == base_steps]
    chosen = max(at_base, key=lambda r: r["held_out"]["top1"])
    former_name = next(r["held_out"]["vs"]["row"] for r in rows if r["held_out"].get("vs"))
    former = next(r for r in rows if r["row"] == former_name)
    ref = d["reference"]
    out = []
    for r in rows:
        label = _kd_label(r) + (" (chosen)" if r is chosen else " (the former default: the paper's α)" if r is former else "")
        vs = r["held_out"].get("vs")
        out.append([label, f"{r['held_out']['top1']:.2f}", interval(r["held_out"]["vs_reference"]),
                    interval(vs) if vs else "", f"{r['test']['top1']:.2f}", interval(r["test"]["vs_reference"])])
    held = f"{meta['held_out']} ({ref['held_out']['n_images']:,} images)"
    lines = [f"RB-LRA (WR) + block KD at {reduction(chosen['params'], ref['params'])} params, loss = per-block feature "
             f"loss + α · CE; held-out = {held}, where the choice is made; test = {ref['test']['n_images']:,} test images, "
             f"reported only. Reference: held-out {ref['held_out']['top1']:.2f}, test {ref['test']['top1']:.2f}. "
             f"{cpu_label(meta['cpu'])}, {meta['threads']} threads ({code(src.path)}).", ""]
    lines += table(["KD setting", "held-out", "Δ held-out", "vs former default, held-out", "test", "Δ test"], out,
                   "lrllrl")
    longer = [r for r in rows if r["kd_steps"] != base_steps]
    lines += ["", f"Chosen: the best held-out at {base_steps} steps, {_kd_label(chosen)}: "
                  f"{interval(chosen['held_out']['vs'])} held-out and {interval(chosen['test']['vs'])} test over "
                  f"{_kd_label(former)}."]
    for r in longer:
        better = r["test"]["vs_reference"]["diff_pt"] > chosen["test"]["vs_reference"]["diff_pt"]
        lines[-1] += (f" {r['kd_steps']} steps ({r['kd_steps'] / base_steps:g}×, lr {lr(r['kd_lr'])}) reach "
                      f"{interval(r['test']['vs_reference'])} on test vs the reference"
                      + (": more distillation helps, the CPU default budget is small." if better else "."))
    return "\n".join(lines)


def table1(src: Source) -> str:
    """compress.md: Table 1 / 7 against the converged reference."""
    d = src.data
    meta, ref, probe = d["meta"], d["reference"], d["probe"]
    kd = meta["kd_config"]
    steps = f"{kd['steps']} steps" if kd.get("steps") else "DistillConfig's default steps"
    ce = f"{kd['alpha']:g}·CE + {kd['beta']:g}·Σ per-block {kd['feature_loss']}"
    lines = [f"`python benchmarks/table1_lra.py --profile {meta['profile']}` ({code(src.path)}; "
             f"{cpu_label(meta['cpu'])}, {meta['threads']} threads): every row through `compress()`, SVD "
             f"{meta['svd']}, block KD {steps} × batch {kd['batch_size']}, AdamW lr {lr(kd['lr'])}, loss {ce}, "
             f"trains {kd['trainable']}; trained on {meta['train_pool']}; teacher and baseline = the converged FP32 "
             f"reference (test {ref['test']['top1']:.2f}, held-out {ref['held_out']['top1']:.2f}; probe only "
             f"{probe['test']['top1']:.2f} / {probe['held_out']['top1']:.2f}). Δ = paired difference to the reference "
             f"over the same images with its 95 % interval; held-out = {meta['held_out']} "
             f"({ref['held_out']['n_images']:,} images), test = {ref['test']['n_images']:,} images.", ""]
    rows = [d["dense_kd_control"], *d["rows"]]
    body = []
    for r in rows:
        label = strip_reduction(r["row"])
        body.append([label, f"{r['held_out']['top1']:.2f}", interval(r["held_out"]["vs_reference"]),
                     f"{r['test']['top1']:.2f}", interval(r["test"]["vs_reference"])])
    compressed = d["rows"][0]
    head = f"row ({reduction(compressed['params'], ref['params'])}, {compressed['params'] / 1e6:.2f} M params)"
    lines += table([head, "held-out", "Δ held-out", f"test ({ref['test']['n_images']:,})", "Δ test"], body, "lrlrl")

    by = {(r["method"], r["init"], r["kd"], r["train_base"], r.get("kd_beta"), r.get("kd_branch_lr")): r for r in d["rows"]}
    lra, wr = by.get(("lra", "wr", False, False, None, None)), by.get(("rb-lra", "wr", False, False, None, None))
    lra_kd, rb_kd = by.get(("lra", "wr", True, False, 1.0, None)), by.get(("rb-lra", "wr", True, False, 1.0, None))
    zero = by.get(("rb-lra", "zero", True, False, 1.0, None))
    notes = []
    if lra and wr and lra_kd and zero:
        notes.append(f"- **Eckart–Young in practice:** untrained, WR scores {wr['test']['top1']:.2f} and LRA "
                     f"{lra['test']['top1']:.2f} on test; zero-init RB-LRA + KD ends at {zero['test']['top1']:.2f} vs "
                     f"LRA + KD {lra_kd['test']['top1']:.2f} (final KD loss {zero['kd_final_loss']:.3f} vs "
                     f"{lra_kd['kd_final_loss']:.3f}): with a frozen base the branch only reparameterises the factors.")
    if rb_kd:
        t = rb_kd["test"]["vs_reference"]
        lo = t["ci95_pt"][0]
        verdict = ("met" if lo >= -0.7 else "missed" if t["diff_pt"] < -0.7 else
                   "met by the point estimate, not by the whole interval")
        notes.append(f"- **Against the goal** (RB-LRA + KD within 0.7 pt of the reference at "
                     f"{reduction(rb_kd['params'], ref['params'])}): {verdict}, {interval(t)} on test.")
    control = d["dense_kd_control"]["test"]["vs_reference"]
    notes.append(f"- **The KD budget itself:** the dense model distilled with the same budget (all parameters "
                 f"train) ends at {interval(control)} on test: the cost of the recipe without any compression.")
    branch = [r for r in d["rows"] if r.get("kd_branch_lr")]
    if branch:
        notes.append("- **A separate branch lr** (`--kd-branch-lr`, base trained too): " + "; ".join(
            f"base lr {lr(r['kd_lr'])}, branch lr {lr(r['kd_branch_lr'])}: test {r['test']['top1']:.2f} "
            f"(final KD loss {r['kd_final_loss']:.3f})" for r in branch) + ".")
    return "\n".join(lines + [""] + notes)


def kd_cost(src: Source) -> str:
    """compress.md: what one default compression costs, from Table 1's timed default row."""
    d = src.data
    r = next(r for r in d["rows"] if r["method"] == "rb-lra" and r["init"] == "wr" and r["kd"]
             and not r["train_base"] and r.get("kd_beta") == 1.0 and not r.get("kd_branch_lr"))
    return (f"On the test bed, RB-LRA + KD at {reduction(r['params'], d['reference']['params'])} (distillation and "
            f"the model's evaluation) took {minutes(r['seconds'])} of wall time on {d['meta']['threads']} threads of an "
            f"{cpu_label(d['meta']['cpu'])} ({code(src.path)}, its default row).")

