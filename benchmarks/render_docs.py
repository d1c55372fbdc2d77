"""Every measured number in README.md and docs/*.md, rendered from a committed result file.

A document holds its figures in marked regions; the text between the markers is generated from the
named result files (JSON written by the benchmark scripts) by the named renderer below, never typed:

    <!-- figures: table1 benchmarks/results/table1_lra.json -->

    ...generated Markdown...

    <!-- /figures -->

    python benchmarks/render_docs.py            # rewrite every region of README.md and docs/*.md
    python benchmarks/render_docs.py --check    # change nothing; exit 1 naming each region that differs
    python benchmarks/render_docs.py --check docs/compress.md    # only these documents

Paths in a marker are relative to the repository root. A renderer is a function of the loaded files
only: labels (settings, CPU, image counts) come from what the run recorded, so re-running a
benchmark and then this script updates the documents, and `tests/test_docs_figures.py` fails while a
document and its result file disagree. Standard library only (no torch): the check takes a second.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
OPEN = re.compile(r"<!-- figures: (?P<name>[\w-]+)(?P<files>(?: [^\s>]+)+) -->")
CLOSE = "<!-- /figures -->"
MINUS = "\u2212"


class FiguresError(Exception):
    """A document whose regions cannot be rendered (bad marker, unknown renderer, missing file)."""


@dataclass(frozen=True)
class Source:
    path: str  # as written in the marker (relative to the repository root)
    data: Any


def default_documents(root: Path = ROOT) -> List[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


# =============================================================================================
# formatting
# =============================================================================================
def num(x: float, nd: int = 2) -> str:
    return f"{x:.{nd}f}".replace("-", MINUS)


def signed(x: float, nd: int = 2) -> str:
    return f"{x:+.{nd}f}".replace("-", MINUS)


def interval(cmp: Dict[str, Any], nd: int = 2) -> str:
    """`−0.88 [−1.18, −0.58]`: a paired difference (points) with its 95 % interval."""
    lo, hi = cmp["ci95_pt"]
    return f"{signed(cmp['diff_pt'], nd)} [{signed(lo, nd)}, {signed(hi, nd)}]"


def lr(x: float) -> str:
    """1e-3, 3e-5, 0.0015 -> 1.5e-3."""
    m, e = f"{x:.1e}".split("e")
    m = m.rstrip("0").rstrip(".")
    return f"{m}e{int(e)}"


def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def code(path: str) -> str:
    return f"`{path}`"


def cpu_label(cpu: Dict[str, Any]) -> str:
    """`AMD EPYC (Zen 4, AVX-512)` from the lscpu fields a benchmark recorded."""
    name = cpu.get("model_name") or "unknown CPU"
    try:
        family, model = int(cpu.get("family")), int(cpu.get("model"))
    except (TypeError, ValueError):
        family = model = -1
    arch = None
    if "AMD" in name:
        if family == 23:
            arch = "Zen 2" if model >= 0x30 else "Zen"
        elif family == 25:
            arch = "Zen 4" if (0x10 <= model <= 0x1F or 0x60 <= model <= 0x7F or 0xA0 <= model <= 0xAF) else "Zen 3"
        elif family == 26:
            arch = "Zen 5"
    flags = cpu.get("flags") or {}
    isa = "AVX-512" if flags.get("avx512f") else ("AVX2" if flags.get("avx2") else None)
    detail = ", ".join(x for x in (arch, isa) if x)
    return f"{name} ({detail})" if detail else name


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Optional[str] = None) -> List[str]:
    align = align or "l" * len(header)
    sep = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|", *("| " + " | ".join(r) + " |" for r in rows)]


def _strip_reduction(label: str) -> str:
    return re.sub(r"\s*-\d+%$", "", label)


def _reduction(params: float, ref_params: float) -> str:
    return f"{MINUS}{100 * (1 - params / ref_params):.1f} %"


# =============================================================================================
# renderers: README.md
# =============================================================================================
def _default_row(doc: Dict[str, Any]) -> Dict[str, Any]:
    rows = [r for r in doc["rows"] if r.get("is_default")]
    if len(rows) != 1:
        raise FiguresError(f"expected one row with is_default in a testbed_reference result, found {len(rows)}")
    return rows[0]


def _probe_row(doc: Dict[str, Any]) -> Dict[str, Any]:
    return next(r for r in doc["rows"] if r["name"].startswith("probe"))


def testbed_profiles(quick: Source, full: Source) -> str:
    """README: the two test-bed profiles, their probe and converged top-1 and what building them cost."""
    labels = {"quick": "`quick` (default, CI)", "full": "`full` (`--testbed-profile full`)"}
    rows, cost = [], []
    for src in (quick, full):
        d = src.data
        tb, ref = d["testbed"], d["testbed"]["reference"]
        chosen = _default_row(d)
        rows.append([labels.get(d["profile"], f"`{d['profile']}`"), f"{tb['img_size']} px",
                     f"{tb['n_train']:,} train images ({ref['epochs']:g} epochs, lr {lr(ref['lr'])})",
                     f"{tb['n_test']:,} test images", f"{_probe_row(d)['test_top1']:.1f} %", f"{chosen['test_top1']:.1f} %"])
        cost.append((d["profile"], minutes(chosen["seconds"]), f"{d['threads']} threads of an {cpu_label(d['cpu'])}"))
    lines = table(["profile", "image size", "fitted on", "evaluated on", "probe top-1", "converged top-1"], rows)
    if len({c[2] for c in cost}) == 1:
        took = ", ".join(f"{p} {t}" for p, t, _ in cost) + f" ({cost[0][2]}"
    else:
        took = ", ".join(f"{p} {t} on {w}" for p, t, w in cost) + " ("
    lines += ["", f"Recorded fine-tune time: {took}; {code(quick.path)}, {code(full.path)})."]
    return "\n".join(lines)


def testbed_cpus(*sources: Source) -> str:
    """README: the same quick reference recipe trained on different CPUs scores differently."""
    parts, recipe = [], None
    for src in sources:
        row = _default_row(src.data)
        cfg = {k: v for k, v in (row.get("config") or src.data["testbed"]["reference"]).items() if v is not None}
        if recipe is not None and cfg != recipe:
            raise FiguresError(f"{src.path}: its default reference recipe {cfg} differs from {recipe}; "
                               "the CPU comparison needs the same recipe")
        recipe = cfg
        parts.append(f"{row['test_top1']:.1f} % on an {cpu_label(src.data['cpu'])}")
    files = ", ".join(code(s.path) for s in sources)
    return (f"The {sources[0].data['profile']} profile's converged top-1 (the same recipe, seed and images) was "
            f"{' and '.join(parts)} ({files}).")


# =============================================================================================
# renderers: docs/compress.md
# =============================================================================================
def _rows_by_label(doc: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {r["row"]: r for r in doc["rows"]}


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
    lines = [f"RB-LRA (WR) + block KD at {_reduction(chosen['params'], ref['params'])} params, loss = per-block feature "
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
        label = _strip_reduction(r["row"])
        body.append([label, f"{r['held_out']['top1']:.2f}", interval(r["held_out"]["vs_reference"]),
                     f"{r['test']['top1']:.2f}", interval(r["test"]["vs_reference"])])
    compressed = d["rows"][0]
    head = f"row ({_reduction(compressed['params'], ref['params'])}, {compressed['params'] / 1e6:.2f} M params)"
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
                     f"{_reduction(rb_kd['params'], ref['params'])}): {verdict}, {interval(t)} on test.")
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
    return (f"On the test bed, RB-LRA + KD at {_reduction(r['params'], d['reference']['params'])} (distillation and "
            f"the model's evaluation) took {minutes(r['seconds'])} of wall time on {d['meta']['threads']} threads of an "
            f"{cpu_label(d['meta']['cpu'])} ({code(src.path)}, its default row).")


# =============================================================================================
# renderers: docs/quantization.md
# =============================================================================================
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


# =============================================================================================
# renderers: docs/android.md, docs/jetson.md, docs/table.md
# =============================================================================================
def arm_testbed(src: Source) -> str:
    d = src.data
    hv, av = d["host_verification"], d["arm_verification"]
    cmds = " then ".join(f"`{c}`" for c in d["command"])
    lines = [f"{cmds} on an {d['host_cpu']} ({code(src.path)}; {d.get('note', '')}).", "",
             f"Host ExecuTorch runtime vs the quantization simulator on {hv['n_images']:,} images: agreement "
             f"{hv['agreement']:.3f} ({hv['near_tie_flips']} near-tie flips; gated agreement {hv['gated_agreement']:.3f} "
             f"against the floor {hv['min_agreement']:.3f}, i.e. the simulator's self-agreement "
             f"{hv['reference_self_agreement']:.3f} − 0.01), SQNR {hv['sqnr_db']:.1f} dB, min cosine "
             f"{hv['min_cosine']:.4f}, top-1 {hv['top1']:.1f} (simulator {hv['reference_top1']:.1f}).", "",
             f"qemu-aarch64 {av['toolchain']['qemu_version']}, {av['n_images']} images each, reference: {av['reference']}:",
             ""]
    rows = []
    for name, c in av["cpus"].items():
        k = c.get("kernels") or {}
        rows.append([name, c["status"], f"{c['agreement']:.3f}", f"{c['min_cosine']:.4f}", f"{c['sqnr_db']:.1f}",
                     ", ".join(f"`{g}`" for g in k.get("int8_gemm") or []) or "—", k.get("method", "—"),
                     f"{c['seconds']:.0f}"])
    lines += table(["qemu `-cpu`", "status", "agreement", "min cosine", "SQNR (dB)", "INT8 GEMM kernel", "how known",
                    "emulated s"], rows, "llrrrllr")
    match = [c for c in av["cpus"].values() if (c.get("kernels") or {}).get("matches_expected")]
    lines += ["", f"{len(match)} of {len(av['cpus'])} CPU models ran the kernel family their ISA predicts "
                  "(`kernels.matches_expected`)."]
    return "\n".join(lines)


def jetson_sizes(src: Source) -> str:
    d = src.data
    rows = []
    for name, m in d["models"].items():
        st = m["steps"]
        size = lambda step: (st.get(step, {}).get("info") or {}).get("size_mb")  # noqa: E731
        q, i8, f32 = size("jetson-rb-wads"), size("android-rb-wads"), size("android-rb-fp32")
        if q is None:
            continue
        rows.append([name, f"{q:.1f}", f"{i8:.1f}" if i8 else "—", f"{f32:.1f}" if f32 else "—",
                     f"{q / f32:.2f}" if f32 else "—"])
    s = d["settings"]
    lines = table(["model (RB-LRA + WADS artifact)", "Q/DQ ONNX (MB)", "Android INT8 .pte (MB)", "FP32 .pte (MB)",
                   "Q/DQ / FP32"], rows, "lrrrr")
    lines += ["", f"`benchmarks/pipeline_scale.py` at {s['img_size']} px, {_pct(s['param_reduction'])} parameters "
                  f"({code(src.path)}, {d['date'][:10]})."]
    return "\n".join(lines)


def _pct(frac: float) -> str:
    return f"{MINUS}{100 * frac:.0f} %"


def table4_testbed(src: Source) -> str:
    d = src.data
    run, s = d["run"], d["settings"]
    cols = d["columns"]
    rows = []
    for r in d["rows"]:
        cells = []
        for c in cols:
            lat = r["latency"].get(c["id"]) or {}
            cells.append(f"{lat['median_ms']:.2f}" if "median_ms" in lat else
                         f"FAILED ({lat['failed']})" if "failed" in lat else "not measured")
        rows.append([r["model_label"], r["method_label"], r["prec"], f"{r['size_mb']:.1f}", *cells])
    lines = table(["Model", "Method", "Prec.", "Size (MB)", *(c["label"] for c in cols)], rows, "lllr" + "r" * len(cols))
    sp = []
    for x in d["speedups"]:
        host = (x["latency"] or {}).get("host")
        sp.append(f"{x['method_label']} {x['size']:.2f}× smaller" + (f", {host:.2f}× faster on the host" if host else ""))
    devices = sorted({(r["latency"].get("host") or {}).get("device") for r in d["rows"]} - {None})
    lines += ["", f"Versus {next(r['method_label'] for r in d['rows'] if r['method'] == d['baseline'])}, same run: "
                  + "; ".join(sp) + ".",
              "", f"Host column: median of {s['iterations']} timed runs after {s['warmup']} warm-up, {s['threads']} "
                  f"thread(s), batch 1, on {', '.join(devices)}; Size: the shipped .pte. Run {run['run_id']}, "
                  f"{run['started'][:10]}, host `{run['host']}`, load average {run['loadavg'][0]:.1f} at the end; "
                  f"config `{run['config']}` (sha256 {run['config_sha256'][:12]}…) ({code(src.path)})."]
    return "\n".join(lines)


def model_coverage(src: Source) -> str:
    """models.md: the done-when runs of benchmarks/model_coverage.py."""
    d = src.data

    def mmss(sec):
        return "—" if sec is None else f"{int(sec) // 60}:{int(sec) % 60:02d}"

    def gates(j):
        ps = [p for p in ("int8", "fp32", "fp16") if p in j]
        return (" / ".join(f"{j[p]['sqnr_db']:.1f}" for p in ps) + " dB (≥ "
                + " / ".join(f"{j[p]['min_sqnr_db']:g}" for p in ps) + ")"
                + ("" if all(j[p]["passed"] for p in ps) else " FAILED"))

    rows = []
    for r in d["rows"]:
        a, sec = r["android"], r["seconds"]
        arm = a["arm"].values()
        sq = sorted(round(x["sqnr_db"], 1) for x in arm if x.get("sqnr_db") is not None)
        ok = sum(x["status"] == "ok" for x in arm)
        rng = "" if not sq else (f"{sq[0]:.1f}" if sq[0] == sq[-1] else f"{sq[0]:.1f}–{sq[-1]:.1f}") + " dB, "
        n = sorted({x.get("n_images") for x in arm})
        rows.append([code(r["model"]), f"{r['baseline_params'] / 1e6:.1f} M → {r['params'] / 1e6:.1f} M "
                     f"({100 * r['param_reduction']:.1f} %)", mmss(sec.get("compress")), mmss(sec.get("android")),
                     f"{a['pte_mb']:.1f} MB", f"{100 * a['delegated_fraction']:.1f} %",
                     f"{a['sqnr_db']:.1f} dB (≥ {a['min_sqnr_db']:g})",
                     f"{ok}/{len(a['arm'])} ok ({rng}{'/'.join(map(str, n))} images each)",
                     mmss(sec.get("jetson")), gates(r["jetson"]),
                     f"{r['host_bench']['median_ms']:.0f} ms" if r.get("host_bench") else "—"])
    lines = table(["model", "params (dense → LRA −30 %)", "compress", "Android build", ".pte", "delegated",
                   "host SQNR (gate)", "Arm CPUs (SQNR)", "Jetson build", "ONNX INT8 / FP32 / FP16 SQNR (gates)",
                   "host bench (1 thread)"], rows, "lllllllllll")
    lines += ["", f"{d['cpu']['model_name']} (family {d['cpu']['family']} model {d['cpu']['model']}), "
                  f"{d['cpu']['cpus']} CPUs; times in min:s; host bench: median of 5 runs after 1 warm-up "
                  f"({code(src.path)}, {d['date']})."]
    return "\n".join(lines)


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


RENDERERS: Dict[str, Callable[..., str]] = {
    "testbed_profiles": testbed_profiles, "testbed_cpus": testbed_cpus, "svd_why": svd_why,
    "kd_objective": kd_objective, "table1": table1, "kd_cost": kd_cost, "table2": table2,
    "arm_testbed": arm_testbed, "jetson_sizes": jetson_sizes, "table4_testbed": table4_testbed,
    "model_coverage": model_coverage, "size_goals": size_goals,
}


# =============================================================================================
# regions
# =============================================================================================
@dataclass
class Region:
    name: str
    files: List[str]
    line: int  # 1-based line of the opening marker
    start: int  # offsets of the body (between the markers)
    end: int


def regions(text: str, doc: str = "document") -> List[Region]:
    out: List[Region] = []
    pos = 0
    while True:
        m = OPEN.search(text, pos)
        close = text.find(CLOSE, pos)
        if m is None:
            if close >= 0:
                raise FiguresError(f"{doc}:{text.count(chr(10), 0, close) + 1}: {CLOSE} without an opening marker")
            return out
        line = text.count("\n", 0, m.start()) + 1
        if close < 0 or close < m.end():
            raise FiguresError(f"{doc}:{line}: region `{m.group('name')}` is not closed with {CLOSE}")
        nxt = OPEN.search(text, m.end())
        if nxt is not None and nxt.start() < close:
            raise FiguresError(f"{doc}:{line}: region `{m.group('name')}` contains another region")
        out.append(Region(m.group("name"), m.group("files").split(), line, m.end(), close))
        pos = close + len(CLOSE)


def render_region(region: Region, root: Path, doc: str = "document") -> str:
    fn = RENDERERS.get(region.name)
    if fn is None:
        raise FiguresError(f"{doc}:{region.line}: unknown renderer `{region.name}` (known: {', '.join(sorted(RENDERERS))})")
    sources = []
    for f in region.files:
        path = root / f
        if not path.is_file():
            raise FiguresError(f"{doc}:{region.line}: region `{region.name}`: result file {f} does not exist")
        sources.append(Source(f, json.loads(path.read_text())))
    try:
        body = fn(*sources)
    except FiguresError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, StopIteration) as e:
        raise FiguresError(f"{doc}:{region.line}: region `{region.name}` cannot be rendered from "
                           f"{', '.join(region.files)}: {type(e).__name__}: {e}") from e
    return "\n\n" + body.strip("\n") + "\n\n"


def render_text(text: str, root: Path = ROOT, doc: str = "document") -> str:
    out, pos = [], 0
    for r in regions(text, doc):
        out += [text[pos:r.start], render_region(r, root, doc)]
        pos = r.end
    return "".join(out) + text[pos:]


@dataclass
class Mismatch:
    doc: str
    line: int
    name: str
    files: List[str]
    diff: str

    def __str__(self) -> str:
        return (f"{self.doc}:{self.line}: region `{self.name}` differs from {', '.join(self.files)} "
                f"(run python benchmarks/render_docs.py)\n{self.diff}")


def check_text(text: str, root: Path = ROOT, doc: str = "document") -> List[Mismatch]:
    bad = []
    for r in regions(text, doc):
        want, have = render_region(r, root, doc), text[r.start:r.end]
        if want != have:
            diff = "".join(difflib.unified_diff(have.splitlines(True), want.splitlines(True), "committed", "rendered", n=0))
            bad.append(Mismatch(doc, r.line, r.name, r.files, diff))
    return bad


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def check(paths: Sequence[Path], root: Path = ROOT) -> List[Mismatch]:
    return [m for p in paths for m in check_text(Path(p).read_text(), root, _rel(Path(p), root))]


def render(paths: Sequence[Path], root: Path = ROOT) -> List[str]:
    """Rewrite the regions of `paths` in place; returns the documents that changed."""
    changed = []
    for p in paths:
        p = Path(p)
        text = p.read_text()
        new = render_text(text, root, _rel(p, root))
        if new != text:
            p.write_text(new)
            changed.append(_rel(p, root))
    return changed


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("documents", nargs="*", type=Path, help="default: README.md and docs/*.md")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 when a region differs from its files")
    ap.add_argument("--root", type=Path, default=ROOT, help="the folder marker paths are relative to")
    args = ap.parse_args(argv)
    docs = args.documents or default_documents(args.root)
    try:
        if args.check:
            bad = check(docs, args.root)
            for m in bad:
                print(m, file=sys.stderr)
            n = sum(len(regions(Path(p).read_text(), str(p))) for p in docs)
            print(f"{n} figure regions in {len(docs)} documents; {len(bad)} differ from their result files",
                  file=sys.stderr if bad else sys.stdout)
            return 1 if bad else 0
        for doc in render(docs, args.root):
            print(f"rewrote {doc}")
        return 0
    except FiguresError as e:
        print(f"render_docs: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
