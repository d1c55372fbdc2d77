"""How the pipeline scales with model size: time and peak memory of every step, and host latency vs its floor.

For each model (default DeiT-T/S/B at 224 px, random weights, 10 classes so that Fashion-MNIST can
stand in for real images), in this order, each step in a FRESH PYTHON PROCESS (this script re-run
with `--step NAME`):

    compress            RB-LRA at -45 % parameters, no distillation (random weights have no training
                        data worth distilling on); activation-aware SVD on the calibration images by
                        default (`--svd plain` for the data-free SVD)
    calibrate           `quant_config("wads")` (library defaults) on 32 calibration images, applied to
                        the RB-LRA artifact
    android-fp32        dense model -> XNNPACK .pte, FP32                     } each build includes its
    android-pt2e-int8   dense model -> .pte, stock PT2E dynamic INT8          } host verification
    android-rb-fp32     RB-LRA artifact -> .pte, FP32                         } (timed separately by
    android-rb-wads     RB-LRA + WADS artifact -> .pte, its own INT8 scales   } wrapping the verify
    jetson-rb-wads      RB-LRA + WADS artifact -> Q/DQ + FP32/FP16 ONNX bundle, } functions in the step's
                        `JetsonBuildOptions(latency_iters=0)`                  } process)
    bench               the built .pte files on this CPU (ExecuTorch runtime) in interleaved rounds at each
                        `--threads` count, plus this CPU's GEMM throughput (the compute floor)

`--programs` picks the latency programs (their steps follow); besides the four above, the 4-bit forms
of issue 23: `w4` / `w4-g32` (dense weights at 4 bits, per channel / blocks of 32, RTN, dynamic int8
activations) and `mlorq-19.5` / `mlorq-12.5` (MLoRQ size plans at 19.5 % / 12.5 % of the dense FP32
.pte; the first plan searches every layer's candidates with an empty cache and is timed, the second
reads them back), each built like the INT8 artifact.

Wall time is measured inside the step process around the library call only (model creation and
image loading are set-up, reported apart as the process wall). Peak RSS is the step process's
`VmHWM` from /proc/self/status at its end (its whole life: interpreter, imports, set-up and the
step), cross-checked by the parent with `os.wait4`'s `ru_maxrss` for that one child.

    python benchmarks/pipeline_scale.py                                   # DeiT-T/S/B, the full protocol
    python benchmarks/pipeline_scale.py --models deit_tiny_patch16_224 --quick   # smoke run, minutes
    python benchmarks/pipeline_scale.py --models deit_small_patch16_224 deit_base_patch16_224 \
        --programs fp32 pt2e-int8 w4 w4-g32 mlorq-19.5 mlorq-12.5 --arm-verify off \
        --out benchmarks/results/pipeline_scale_4bit                             # the 4-bit forms

Writes OUT.md and OUT.json (default benchmarks/results/pipeline_scale.*); artifacts go to --work.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from lraqvit_deploy.measure.host import cpu_line, lscpu, versions  # noqa: F401  (cpu_line: render_markdown)
from lraqvit_deploy.measure.rounds import (floor_fraction, floor_ms, interleaved, measure_gemm, rotated,  # noqa: F401
                                           summarize_rounds)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "lraqvit-deploy/pipeline-scale/1"
DEFAULT_MODELS = ("deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224")

# the latency programs, in round-0 order; the first is the baseline every ratio is taken against
PROGRAMS = ("fp32", "pt2e-int8", "rb-fp32", "rb-wads-int8", "w4", "w4-g32", "mlorq-19.5", "mlorq-12.5")
DEFAULT_PROGRAMS = PROGRAMS[:4]  # the RB-LRA protocol; the 4-bit forms (issue 23) by --programs
PROGRAM_LABELS = {"fp32": "dense FP32", "pt2e-int8": "dense, stock PT2E INT8", "rb-fp32": "RB-LRA FP32",
                  "rb-wads-int8": "RB-LRA + WADS INT8", "w4": "dense W4 per channel (RTN)",
                  "w4-g32": "dense W4 g32 (RTN)", "mlorq-19.5": "MLoRQ at 19.5 % of the FP32 .pte",
                  "mlorq-12.5": "MLoRQ at 12.5 % of the FP32 .pte"}
PROGRAM_INT8 = {p: p != "fp32" and p != "rb-fp32" for p in PROGRAMS}  # int8 activations (4-bit weights too)
# which GFLOPs the floor uses: the dense model's, the RB-LRA artifact's, or the program's own compress step's
PROGRAM_FLOPS = {"fp32": "dense", "pt2e-int8": "dense", "rb-fp32": "rb", "rb-wads-int8": "rb", "w4": "dense",
                 "w4-g32": "dense", "mlorq-19.5": "mlorq-19.5", "mlorq-12.5": "mlorq-12.5"}
MLORQ_FRACTIONS = {"mlorq-19.5": 0.195, "mlorq-12.5": 0.125}  # of the dense FP32 .pte (the MLoRQ poster's points)

# step -> (what it does, steps it needs, output folder under WORK/MODEL)
STEPS: Dict[str, tuple] = {
    "compress": ("RB-LRA -45 % params (no KD)", (), "rb-lra"),
    "calibrate": ("WADS INT8 calibration", ("compress",), "rb-lra-wads"),
    "android-fp32": ("android build: dense FP32", (), "android-fp32"),
    "android-pt2e-int8": ("android build: dense, PT2E INT8", (), "android-pt2e-int8"),
    "android-rb-fp32": ("android build: RB-LRA FP32", ("compress",), "android-rb-fp32"),
    "android-rb-wads": ("android build: RB-LRA + WADS INT8", ("calibrate",), "android-rb-wads"),
    "jetson-rb-wads": ("jetson build: RB-LRA + WADS (Q/DQ ONNX)", ("calibrate",), "jetson-rb-wads"),
    "w4": ("dense W4 per channel, RTN (int8 per-token activations)", (), "w4"),
    "w4-g32": ("dense W4 blockwise g32, RTN", (), "w4-g32"),
    # the 19.5 % plan searches the candidates (cold cache); the 12.5 % plan reads them back
    "mlorq-19.5": ("MLoRQ plan + quantize, 19.5 % of the FP32 .pte", ("android-fp32",), "mlorq-19.5"),
    "mlorq-12.5": ("MLoRQ plan + quantize, 12.5 % of the FP32 .pte", ("android-fp32", "mlorq-19.5"), "mlorq-12.5"),
    "android-w4": ("android build: dense W4 per channel", ("w4",), "android-w4"),
    "android-w4-g32": ("android build: dense W4 g32", ("w4-g32",), "android-w4-g32"),
    "android-mlorq-19.5": ("android build: MLoRQ 19.5 %", ("mlorq-19.5",), "android-mlorq-19.5"),
    "android-mlorq-12.5": ("android build: MLoRQ 12.5 %", ("mlorq-12.5",), "android-mlorq-12.5"),
}
BUILD_OF_PROGRAM = {"fp32": "android-fp32", "pt2e-int8": "android-pt2e-int8", "rb-fp32": "android-rb-fp32",
                    "rb-wads-int8": "android-rb-wads", "w4": "android-w4", "w4-g32": "android-w4-g32",
                    "mlorq-19.5": "android-mlorq-19.5", "mlorq-12.5": "android-mlorq-12.5"}
# the build source of each android step: None = the seeded dense model, else the step whose artifact it builds
ANDROID_SOURCE = {"android-fp32": None, "android-pt2e-int8": None, "android-rb-fp32": "compress",
                  "android-rb-wads": "calibrate", "android-w4": "w4", "android-w4-g32": "w4-g32",
                  "android-mlorq-19.5": "mlorq-19.5", "android-mlorq-12.5": "mlorq-12.5"}


def steps_for(programs) -> list:
    """The steps the chosen programs need, in STEPS order (the Jetson build comes with the RB-LRA + WADS program)."""
    want = set()

    def add(step: str) -> None:
        if step not in want:
            want.add(step)
            for need in STEPS[step][1]:
                add(need)
    for p in programs:
        add(BUILD_OF_PROGRAM[p])
    if "rb-wads-int8" in programs:
        add("jetson-rb-wads")
    return [s for s in STEPS if s in want]


FULL = {"rounds": 5, "iterations": 20, "warmup": 3, "verify_images": 64, "wads_iters": None, "gemm_reps": 20,
        "arm_verify": True}
QUICK = {"rounds": 2, "iterations": 5, "warmup": 1, "verify_images": 8, "wads_iters": 20, "gemm_reps": 10,
         "arm_verify": False}


# =============================================================================================
# pure parts (no torch): labels and Markdown (interleaving, floors, the CPU: lraqvit_deploy.measure)
# =============================================================================================
def recorded_wads_config(res: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The WADS settings the run's calibrate steps used (their `wads_*` config fields), else `settings.wads_config`."""
    for m in (res.get("models") or {}).values():
        cfg = ((m.get("steps") or {}).get("calibrate") or {}).get("info", {}).get("wads_config")
        if cfg:
            return cfg
    return (res.get("settings") or {}).get("wads_config")


def wads_label(res: Dict[str, Any]) -> str:
    """How long the WADS search was, from what the run recorded (never from today's library default)."""
    s, cfg = res["settings"], recorded_wads_config(res)
    which = "library default" if s.get("wads_iters") is None else "not the default"
    if not cfg or cfg.get("wads_iters") is None:
        return (f"{which}, iteration count not recorded" if s.get("wads_iters") is None
                else f"{s['wads_iters']} iterations per layer ({which})")
    extra = ", ".join(f"{k.removeprefix('wads_')} {cfg[k]}" for k in ("wads_lr", "wads_max_rows", "wads_sampling")
                      if cfg.get(k) is not None)
    return f"{cfg['wads_iters']} iterations per layer ({which}{'; ' + extra if extra else ''})"


def _num(v: Optional[float], fmt: str = "{:.2f}", none: str = "—") -> str:
    return none if v is None else fmt.format(v)


def _mib(kib: Optional[float]) -> Optional[float]:
    return None if kib is None else kib / 1024.0


def render_markdown(res: Dict[str, Any]) -> str:
    """The report from a results document (OUT.json) alone."""
    s, host = res["settings"], res["host"]
    lines = [f"# Pipeline scale: compress, calibrate, build, verify and bench at {s['img_size']} px", ""]
    if res.get("quick"):
        lines += ["> **Quick smoke run** (`--quick`): few rounds and iterations, shortened WADS search, few "
                  "verification images. The numbers show that the protocol runs, not how it scales.", ""]
    lines += [f"- Date: {res['date']}",
              f"- Command: `{res['command']}`",
              f"- CPU: {cpu_line(host['cpu'])}",
              f"- Versions: " + ", ".join(f"{k} {v}" for k, v in (host.get("versions") or {}).items()),
              f"- Load average (1 min) at start / end: {_num(host.get('loadavg_start'))} / "
              f"{_num(host.get('loadavg_end'))} on {host.get('nproc')} CPUs"
              + (" (the machine was shared; latencies are noisier than on an idle one)"
                 if (host.get("loadavg_start") or 0) > 0.5 else ""),
              ""]
    wads = wads_label(res)
    svd = ("activation-aware SVD (`svd=\"activation\"`) whitened by the calibration images' activations"
           if s["svd"] == "activation" else "plain SVD of the weights (`svd=\"plain\"`, data-free)")
    calib = ("Fashion-MNIST train (seeded subset, resized to the model's input, `num_classes=10` models)"
             if s["calib_data"] != "synthetic" else "seeded N(0, 1) synthetic images")
    verify = (f"{s['verify_images']} images of Fashion-MNIST test" if s["verify_data"] != "synthetic"
              else f"{s['verify_images']} seeded synthetic images (closeness gates only)")
    lines += ["## Protocol", "",
              f"- Models: {', '.join(s['models'])} via `create_model(name, weights=\"random\", "
              f"num_classes={s['num_classes']}, img_size={s['img_size']})`, torch seed {s['seed']}.",
              f"- compress: `LowRankConfig(\"rb-lra\", param_reduction={s['param_reduction']}, svd=\"{s['svd']}\")`, "
              f"no distillation, {svd}.",
              f"- calibrate: `quant_config(\"wads\")`, {wads}, on {s['calib_images']} calibration images: {calib}.",
              f"- builds: `AndroidBuildOptions(precision=...)` (verification on {verify}; the Arm/qemu check "
              f"{'on (library default; a recorded skip where qemu is missing)' if s['arm_verify'] else 'off'}); "
              + (f"INT8 builds (android and jetson) with `min_agreement={s['int8_min_agreement']}` (random weights: near-tied "
                 "logits make top-1 agreement noise, so it is recorded, not gated; the SQNR gate stays); "
                 if s.get("int8_min_agreement") is not None else "library default gates; ")
              + f"`JetsonBuildOptions(latency_iters=0, verify_images={s['verify_images']})` of the WADS artifact, "
              "given the same calibration images, so it re-runs WADS with per-tensor static activations (the "
              "bundle's `requantize` mode: TensorRT has no per-token INT8). Verification time is measured "
              "by wrapping the backends' verify functions inside the step process; it is part of the build time.",
              "- Wall time: inside the step's own process, around the library call only. Peak RSS: that process's "
              "`VmHWM` (/proc/self/status) at its end, over its whole life (Python, torch, set-up, step); "
              "'RSS before' is its `VmRSS` just before the timed call. `ru_maxrss` of the same child (parent, "
              "`os.wait4`) agrees.",
              *([f"- 4-bit forms: `quant_config(\"per-token\", w_bits=4, w_group_size=None|32, act_scheme="
                 "\"per_token_dynamic\", act_symmetric=False)` on the dense model (round to nearest, MSE-clipped "
                 "scales); MLoRQ: `AllocationConfig(size_budget_mb=f x the dense FP32 .pte's MB, target=\"android\")` "
                 f"(f = 19.5 %, 12.5 %), its activation statistics from the {s['calib_images']} calibration images; the "
                 "19.5 % plan searches every layer's candidates with an empty candidate cache (timed), the 12.5 % plan "
                 "reads them back. Each is built like the INT8 artifact (its own integers and scales)."]
                if any(p in s.get("programs", ()) for p in ("w4", "w4-g32", *MLORQ_FRACTIONS)) else []),
              f"- Latency: `bench(pte_dir, HostBenchOptions(iterations={s['iterations']}, warmup={s['warmup']}, "
              f"threads=T))` (ExecuTorch runtime, XNNPACK), {s['rounds']} interleaved rounds per thread count; "
              "round r runs each program once, order rotated by r. Median = median over rounds of each round's "
              "median; ratio = median over rounds of (program / dense FP32 of the same round), with min–max.",
              f"- Floor: GFLOPs per image (`count_gflops`) / this CPU's GEMM rate measured in the bench process "
              f"({' x '.join(map(str, s['gemm_shape']))} matmul, best of {s['gemm_reps']} before and again after the rounds, "
              "the better of the two: FP32 `torch.matmul`, "
              "INT8 `torch._int_mm`). floor / measured = 1 would mean every FLOP at that GEMM's speed; INT8 "
              "programs are shown against both GEMMs (torch's INT8 GEMM is oneDNN's and may use AMX where the CPU "
              "has it; XNNPACK chooses its own kernels, so the INT8 floor is a bound, not a target).", ""]

    for name, m in res["models"].items():
        info = m.get("info") or {}
        lines += [f"## {name}", ""]
        if info:
            red = info.get("param_reduction")
            lines += [f"Parameters {_num(_m(info.get('params_dense')), '{:.2f}')} M dense -> "
                      f"{_num(_m(info.get('params_rb')), '{:.2f}')} M RB-LRA ({_num(None if red is None else 100 * red, '{:.1f}')} %); "
                      f"GFLOPs per image {_num(info.get('gflops_dense'), '{:.3f}')} dense -> "
                      f"{_num(info.get('gflops_rb'), '{:.3f}')} RB-LRA.", ""]
        lines += ["| step | wall (s) | of which verification (s) | peak RSS (MiB) | RSS before (MiB) | "
                  "process wall (s) | notes |", "|---|---:|---:|---:|---:|---:|---|"]
        for step, r in m["steps"].items():
            label = STEPS[step][0] if step in STEPS else step
            if not r.get("ok"):
                why = r.get("error") or r.get("skipped") or "failed"
                lines.append(f"| {label} | — | — | {_num(_mib(r.get('peak_rss_kib')), '{:.0f}')} | — | "
                             f"{_num(r.get('process_seconds'), '{:.1f}')} | **{'skipped' if r.get('skipped') else 'failed'}**: "
                             f"{_cell(why)} |")
                continue
            lines.append(f"| {label} | {_num(r['seconds'], '{:.1f}')} | {_verify_cell(r)} | "
                         f"{_num(_mib(r.get('peak_rss_kib')), '{:.0f}')} | {_num(_mib(r.get('start_rss_kib')), '{:.0f}')} | "
                         f"{_num(r.get('process_seconds'), '{:.1f}')} | {_cell(_notes(step, r))} |")
        b = m.get("bench") or {}
        if b.get("threads"):
            n_bench = sum(len(tb["rounds"]) * len(b.get("programs", [])) for tb in b["threads"].values())
            lines.append(f"| host bench ({n_bench} runs of {s['warmup']} + {s['iterations']} iterations) | "
                         f"{_num(b.get('seconds'), '{:.1f}')} | — | {_num(_mib(b.get('peak_rss_kib')), '{:.0f}')} | — | "
                         f"{_num(b.get('process_seconds'), '{:.1f}')} | GEMM rates measured before and after; "
                         "each run loads its .pte again |")
        lines.append("")

    threads = sorted({t for m in res["models"].values() for t in (m.get("bench") or {}).get("threads", {})}, key=int)
    for t in threads:
        lines += [f"## Host latency, {t} thread{'s' if int(t) > 1 else ''}", "",
                  "| model | program | .pte MB (% of FP32) | median (ms) | min–max (ms) | × dense FP32 (median) | "
                  "min–max | floor @FP32 GEMM (ms) | floor / measured | floor @INT8 GEMM (ms) | floor / measured |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, m in res["models"].items():
            b = (m.get("bench") or {})
            tb = b.get("threads", {}).get(t)
            if not tb:
                why = b.get("error") or "not measured"
                lines.append(f"| {name} | — | | {_cell(why)} | | | | | | | |")
                continue
            for p, row in tb["summary"].items():
                fp = row.get("floor_fp32_ms")
                f8 = row.get("floor_int8_ms")
                lines.append(
                    f"| {name} | {PROGRAM_LABELS.get(p, p)} | {_size_cell(m, p)} | {row['median_ms']:.2f} | "
                    f"{row['min_ms']:.2f}–{row['max_ms']:.2f} | {_num(row['ratio_median'], '{:.3f}')} | "
                    f"{_num(row['ratio_min'], '{:.3f}')}–{_num(row['ratio_max'], '{:.3f}')} | {_num(fp)} | "
                    f"{_num(floor_fraction(fp, row['median_ms']), '{:.2f}')} | "
                    f"{_num(f8) if PROGRAM_INT8.get(p) else ''} | "
                    f"{_num(floor_fraction(f8, row['median_ms']), '{:.2f}') if PROGRAM_INT8.get(p) else ''} |")
        lines.append("")
        gemm_rows = []
        for name, m in res["models"].items():
            g = ((m.get("bench") or {}).get("gemm") or {})
            fp32, int8 = (g.get("fp32") or {}).get(t), (g.get("int8") or {}).get(t)
            if fp32:
                i8 = (f"{int8['gops']:.1f} GOP/s" if int8 and int8.get("gops") else
                      f"not available ({(int8 or {}).get('reason') or g.get('int8_reason', '')})")
                gemm_rows.append(f"| {name} | {fp32['gops']:.1f} GFLOP/s | {i8} |")
        if gemm_rows:
            lines += [f"GEMM rate at {t} thread{'s' if int(t) > 1 else ''}, measured in each model's bench process "
                      "before and after its rounds (the better of the two):", "", "| bench process | FP32 `torch.matmul` | INT8 `torch._int_mm` |",
                      "|---|---:|---:|", *gemm_rows, ""]
    for note in res.get("notes") or []:
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"


def _size_cell(m: Dict[str, Any], program: str) -> str:
    """The program's .pte size and its share of the dense FP32 .pte, from the build steps' records."""
    def size(p: str) -> Optional[float]:
        return (((m.get("steps") or {}).get(BUILD_OF_PROGRAM.get(p, "")) or {}).get("info") or {}).get("size_mb")
    mb, fp32 = size(program), size("fp32")
    if mb is None:
        return "—"
    return f"{mb:.2f}" + (f" ({100 * mb / fp32:.1f} %)" if fp32 else "")


def _m(params: Optional[float]) -> Optional[float]:
    return None if params is None else params / 1e6


def _cell(text: Any) -> str:
    text = " ".join(str(text).split())
    return (text[:300] + " ...") if len(text) > 300 else text.replace("|", "\\|")


def _verify_cell(r: Dict[str, Any]) -> str:
    t = r.get("timers") or {}
    v = sum(t.get(k, {}).get("seconds", 0.0) for k in ("verify", "arm_verify"))
    if not any(k in t for k in ("verify", "arm_verify")):
        return "—"
    return f"{v:.1f}"


def _notes(step: str, r: Dict[str, Any]) -> str:
    info, t = r.get("info") or {}, r.get("timers") or {}
    bits = ["reused from an earlier run (--reuse)"] if r.get("reused") else []
    if step == "compress":
        bits.append(f"SVD {info.get('svd')}, {info.get('n_layers')} layers")
    if step in MLORQ_FRACTIONS:
        bits.append(f"budget {_num(info.get('size_budget_mb'), '{:.3f}')} MB = {_num(info.get('fraction'), '{:.1%}')} "
                    f"of {_num(info.get('fp32_pte_mb'))} MB, planned {_num(info.get('planned_size_mb'), '{:.3f}')} MB; "
                    f"plan {_num(info.get('plan_seconds'), '{:.1f}')} s "
                    f"({'candidate search, cold cache' if step == 'mlorq-19.5' else 'candidates read back from the 19.5 % plan'}); "
                    f"forms {info.get('forms')}")
    if step in ("w4", "w4-g32"):
        bits.append(f"{info.get('n_layers')} Linears quantized")
    if step == "calibrate":
        bits.append(f"calib {_num(info.get('calib_seconds'), '{:.1f}')} s + WADS search "
                    f"{_num(info.get('search_seconds'), '{:.1f}')} s; {info.get('scaled_layers')} of "
                    f"{info.get('n_layers')} layers scaled")
    for key, label in (("lower", "lowering"), ("onnx_export", "ONNX export (3 files)"),
                       ("engine_model", "per-tensor INT8 model")):
        if key in t:
            bits.append(f"{label} {t[key]['seconds']:.1f} s")
    if "arm_verify" in t and not str(info.get("arm") or "").startswith("skipped: disabled"):
        bits.append(f"Arm check {t['arm_verify']['seconds']:.1f} s ({info.get('arm') or 'ran'})")
    if info.get("agreement") is not None:
        bits.append(f"agreement {info['agreement']:.3f}")
    if info.get("sqnr_db") is not None:
        bits.append(f"SQNR {info['sqnr_db']:.1f} dB")
    if info.get("size_mb") is not None:
        bits.append(f"{info['size_mb']:.1f} MB")
    if info.get("engine_int8"):
        bits.append(f"Q/DQ model: {info['engine_int8']}")
    if info.get("engines"):
        bits.append(f"engines: {info['engines']}")
    return "; ".join(b for b in bits if b)


# =============================================================================================
# measurement helpers (run inside step processes)
# =============================================================================================
def proc_status_kib(key: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _seeded_model(cfg: Dict[str, Any], name: str):
    import torch

    from lraqvit_deploy import create_model

    torch.manual_seed(cfg["seed"])  # random weights: the same dense model in every step process
    return create_model(name, weights="random", num_classes=cfg["num_classes"], img_size=cfg["img_size"],
                        progress=False)


def _calibration_images(cfg: Dict[str, Any], model):
    import torch

    n = cfg["calib_images"]
    if cfg["calib_data"] == "synthetic":
        from lraqvit_deploy.data import input_size

        g = torch.Generator().manual_seed(cfg["seed"])
        return torch.randn(n, *input_size(model), generator=g)
    from lraqvit_deploy.data_sources import calibration_images

    return calibration_images(model, n, cfg["calib_data"], seed=cfg["seed"], why="calibration")


def _verify_data(cfg: Dict[str, Any]):
    return None if cfg["verify_data"] == "synthetic" else cfg["verify_data"]


def run_step(step: str, cfg: Dict[str, Any], model_name: str, work: Path) -> Dict[str, Any]:
    """One step, in this (fresh) process; returns its record (seconds = the timed library call)."""
    import torch

    if cfg.get("work_threads"):
        torch.set_num_threads(cfg["work_threads"])
    from lraqvit_deploy import load_artifact
    from lraqvit_deploy.targets import build

    out = work / STEPS[step][2]
    info: Dict[str, Any] = {}
    call: Callable[[], Any]

    if step == "compress":
        from lraqvit_deploy import LowRankConfig, Recipe
        from lraqvit_deploy.evaluate import count_gflops, count_params
        from lraqvit_deploy.pipeline import compress

        model = _seeded_model(cfg, model_name)
        images = _calibration_images(cfg, model) if cfg["svd"] == "activation" else None
        info.update(params_dense=count_params(model), gflops_dense=count_gflops(model))
        recipe = Recipe(low_rank=LowRankConfig("rb-lra", param_reduction=cfg["param_reduction"], svd=cfg["svd"]))
        call = lambda: compress(model, recipe, alloc_data=images, evaluate=False, out=out, progress=False)  # noqa: E731
    elif step == "calibrate":
        from lraqvit_deploy import Recipe, quant_config
        from lraqvit_deploy.pipeline import compress

        model = load_artifact(work / STEPS["compress"][2])
        images = _calibration_images(cfg, model)
        fields = {} if cfg["wads_iters"] is None else {"wads_iters": cfg["wads_iters"]}
        recipe = Recipe(quant=quant_config("wads", progress=False, **fields), quant_calib_images=cfg["calib_images"])
        call = lambda: compress(model, recipe, calib_data=images, evaluate=False, out=out, progress=False)  # noqa: E731
    elif step.startswith("android-"):
        from lraqvit_deploy import AndroidBuildOptions

        source = ANDROID_SOURCE[step]
        model = _seeded_model(cfg, model_name) if source is None else load_artifact(work / STEPS[source][2])
        # an artifact that is quantized already builds as it is (its integers and scales); fp32 keeps floats
        precision = {"android-fp32": "fp32", "android-rb-fp32": "fp32"}.get(step, "q8")
        gate = {"min_agreement": cfg["int8_min_agreement"]} if (precision == "q8" and
                                                                 cfg.get("int8_min_agreement") is not None) else {}
        options = AndroidBuildOptions(precision=precision, verify_images=cfg["verify_images"],
                                      arm_verify=cfg["arm_verify"], progress=False, **gate)
        call = lambda: build(model, out, options, data=_verify_data(cfg), data_limit=cfg["verify_images"])  # noqa: E731
    elif step in ("w4", "w4-g32"):
        from lraqvit_deploy import Recipe, quant_config
        from lraqvit_deploy.pipeline import compress

        model = _seeded_model(cfg, model_name)
        q = quant_config("per-token", w_bits=4, w_group_size=32 if step == "w4-g32" else None,
                         act_scheme="per_token_dynamic", act_symmetric=False, progress=False)
        images = _calibration_images(cfg, model)
        recipe = Recipe(quant=q, quant_calib_images=cfg["calib_images"])
        call = lambda: compress(model, recipe, calib_data=images, evaluate=False, out=out, progress=False)  # noqa: E731
    elif step in MLORQ_FRACTIONS:
        from lraqvit_deploy import Recipe
        from lraqvit_deploy.pipeline import compress
        from lraqvit_deploy.recipe import AllocationConfig

        # the candidate cache of this run only: the first plan's search is timed cold, the next reads it back
        os.environ["LRAQVIT_CACHE"] = str(work / "plan-cache")
        fp32_mb = json.loads((work / STEPS["android-fp32"][2] / "manifest.json").read_text())["size_mb"]
        budget = round(fp32_mb * MLORQ_FRACTIONS[step], 3)
        model = _seeded_model(cfg, model_name)
        images = _calibration_images(cfg, model)
        info.update(fp32_pte_mb=fp32_mb, size_budget_mb=budget, fraction=MLORQ_FRACTIONS[step])
        recipe = Recipe(allocation=AllocationConfig(size_budget_mb=budget, target="android",
                                                    calib_images=cfg["calib_images"]),
                        quant_calib_images=cfg["calib_images"])
        call = lambda: compress(model, recipe, calib_data=images, alloc_data=images, evaluate=False, out=out,  # noqa: E731
                                progress=False)
    elif step == "jetson-rb-wads":
        from lraqvit_deploy import JetsonBuildOptions

        model = load_artifact(work / STEPS["calibrate"][2])
        images = _calibration_images(cfg, model)
        gate = {} if cfg.get("int8_min_agreement") is None else {"min_agreement": cfg["int8_min_agreement"]}
        options = JetsonBuildOptions(latency_iters=0, verify_images=cfg["verify_images"],
                                     calib_images=cfg["calib_images"], progress=False, **gate)
        call = lambda: build(model, out, options, data=_verify_data(cfg), calib_data=images,  # noqa: E731
                             data_limit=cfg["verify_images"])
    else:
        raise SystemExit(f"unknown step {step!r}")

    import gc

    gc.collect()
    start_rss, start_hwm = proc_status_kib("VmRSS"), proc_status_kib("VmHWM")
    t0 = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - t0
    info.update(_step_info(step, result))
    # the library's own stage timings (lraqvit_deploy.measure.stages), "total" aside: the step's seconds
    timers = {k: v for k, v in (getattr(result, "stage_seconds", None) or {}).items() if k != "total"}
    return {"ok": True, "seconds": seconds, "start_rss_kib": start_rss, "start_hwm_kib": start_hwm,
            "timers": timers, "info": info}


def _step_info(step: str, result) -> Dict[str, Any]:
    if step == "compress":
        comp = result.compression or {}
        return {"params_rb": result.metrics.get("params"), "gflops_rb": result.metrics.get("gflops"),
                "svd": (comp.get("config") or {}).get("svd"), "n_layers": len(comp.get("ranks") or {})}
    if step == "calibrate":
        q = result.quantization or {}
        return {"calib_seconds": q.get("calib_seconds"), "search_seconds": q.get("search_seconds"),
                "n_layers": q.get("n_layers"), "scaled_layers": len(q.get("scaled_layers") or []),
                "gflops_wads": result.metrics.get("gflops"), "size_mb_wads": result.metrics.get("size_mb"),
                "wads_config": {k: v for k, v in (q.get("config") or {}).items() if k.startswith("wads_")}}
    if step in ("w4", "w4-g32") or step in MLORQ_FRACTIONS:
        comp, q = result.compression or {}, result.quantization or {}
        alloc = comp.get("rank_alloc") if isinstance(comp.get("rank_alloc"), dict) else {}
        stages = getattr(result, "stage_seconds", None) or {}
        return {"gflops": result.metrics.get("gflops"), "params": result.metrics.get("params"),
                "planned_size_mb": comp.get("planned_size_mb"), "forms": alloc.get("forms"),
                "plan_seconds": (stages.get("allocation") or {}).get("seconds"),
                "n_layers": q.get("n_layers")}
    man = result.manifest
    if step.startswith("android-"):
        v = man.get("verification") or {}
        arm = man.get("arm_verification") or {}
        return {"agreement": man.get("agreement"), "sqnr_db": v.get("sqnr_db"), "size_mb": man.get("size_mb"),
                "quantization": man.get("quantization"), "delegated_fraction": man.get("delegated_fraction"),
                "arm": ("skipped: " + str(arm["skipped"])[:80]) if arm.get("skipped") else None}
    eq = man.get("engine_quantizer") or {}
    engines = man.get("engines")
    return {"agreement": man.get("agreement"), "size_mb": man.get("size_mb"),
            "engine_int8": eq.get("how"), "engine_int8_mode": eq.get("mode"),
            "onnx_files": sorted((man.get("onnx") or {}).values()),
            "engines": "built" if engines else "none (tensorrt does not import here)"}


def run_bench(cfg: Dict[str, Any], work: Path) -> Dict[str, Any]:
    """GEMM rates, then interleaved rounds of the built programs at each thread count (this process)."""
    from lraqvit_deploy import HostBenchOptions
    from lraqvit_deploy.targets import bench

    import torch

    start_threads = torch.get_num_threads()
    programs = [p for p in PROGRAMS if p in cfg.get("programs", DEFAULT_PROGRAMS)
                and (work / STEPS[BUILD_OF_PROGRAM[p]][2] / "manifest.json").is_file()]
    result: Dict[str, Any] = {"programs": programs, "gemm": {"shape": cfg["gemm_shape"], "fp32": {}, "int8": {},
                                                           "before": {}, "after": {}},
                              "threads": {}}

    def gemm(when: str) -> None:
        for t in cfg["threads"]:
            result["gemm"][when][str(t)] = measure_gemm(t, cfg["gemm_shape"], cfg["gemm_reps"])
        torch.set_num_threads(start_threads)

    gemm("before")
    t_start = time.perf_counter()
    for t in cfg["threads"]:
        def time_one(p: str, t=t) -> float:
            return bench(work / STEPS[BUILD_OF_PROGRAM[p]][2],
                         HostBenchOptions(iterations=cfg["iterations"], warmup=cfg["warmup"], threads=t,
                                          progress=False)).median_ms

        timed = interleaved(programs, time_one, cfg["rounds"])
        result["threads"][str(t)] = {**timed, "summary": summarize_rounds(timed["rounds"], PROGRAMS[0])}
    result["seconds"] = time.perf_counter() - t_start
    gemm("after")
    for t in map(str, cfg["threads"]):  # the rate used for the floor: the better of before / after the rounds
        for kind in ("fp32", "int8"):
            runs = [result["gemm"][w][t][kind] for w in ("before", "after")]
            result["gemm"][kind][t] = max(runs, key=lambda g: g.get("gops") or 0.0)
    return result


def attach_floors(bench: Dict[str, Any], gflops: Dict[str, Optional[float]]) -> None:
    """Add floor_fp32_ms / floor_int8_ms (and their fractions) to each summary row, in place."""
    for t, tb in bench.get("threads", {}).items():
        rate32 = (bench["gemm"]["fp32"].get(t) or {}).get("gops")
        rate8 = (bench["gemm"]["int8"].get(t) or {}).get("gops")
        for p, row in tb["summary"].items():
            gf = gflops.get(PROGRAM_FLOPS.get(p, "dense"))
            row["gflops"] = gf
            row["floor_fp32_ms"] = floor_ms(gf, rate32)
            row["floor_int8_ms"] = floor_ms(gf, rate8) if PROGRAM_INT8.get(p) else None
            row["floor_fraction_fp32"] = floor_fraction(row["floor_fp32_ms"], row["median_ms"])
            row["floor_fraction_int8"] = floor_fraction(row["floor_int8_ms"], row["median_ms"])


# =============================================================================================
# orchestration (the parent process)
# =============================================================================================
def _write_json(path: Path, data: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


BENCH_ONLY = ("models", "programs", "threads", "rounds", "iterations", "warmup", "gemm_shape", "gemm_reps")
COMPRESS_KEYS = ("img_size", "num_classes", "seed", "param_reduction", "svd", "calib_data", "calib_images",
                 "work_threads")


def step_digest(cfg: Dict[str, Any], kind: str = "") -> str:
    """What a step's output (and its recorded time) depends on: never the latency settings."""
    import hashlib

    keys = {"compress": COMPRESS_KEYS, "calibrate": COMPRESS_KEYS + ("wads_iters",)}.get(kind)
    d = {k: v for k, v in cfg.items() if (k in keys if keys else k not in BENCH_ONLY)}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def reusable(kind: str, cfg: Dict[str, Any], work: Path) -> Optional[Dict[str, Any]]:
    """A previous run's record of this step when it succeeded with the same settings and its output is there."""
    result = work / f"{kind}.result.json"
    try:
        rec = json.loads(result.read_text())
    except (OSError, ValueError):
        return None
    out = work / STEPS[kind][2] if kind in STEPS else None
    if rec.get("ok") and rec.get("digest") == step_digest(cfg, kind) and (out is None or (out / "manifest.json").is_file()):
        return {**rec, "reused": True}
    return None


def spawn(kind: str, cfg: Dict[str, Any], model: str, work: Path, log: Path) -> Dict[str, Any]:
    """Run `--step kind` in a fresh interpreter; its record plus this child's own ru_maxrss and wall time."""
    result = work / f"{kind}.result.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", kind, "--model", model, "--work", str(work),
           "--config-json", json.dumps(cfg), "--result", str(result)]
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n===== {kind} {model} {time.strftime('%H:%M:%S')} =====\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=str(ROOT))
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not the max over all children
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    rec: Dict[str, Any] = json.loads(result.read_text()) if result.is_file() else {}
    if not rec:
        rec = {"ok": False, "error": f"the step process exited with status {proc.returncode} and wrote no result; "
                                     f"see {log}"}
    rec["process_seconds"] = wall
    rec["ru_maxrss_kib"] = usage.ru_maxrss  # KiB on Linux
    rec.setdefault("peak_rss_kib", usage.ru_maxrss)
    rec["exit_status"] = proc.returncode
    rec["digest"] = step_digest(cfg, kind)
    _write_json(result, rec)
    return rec


def child_main(args) -> int:
    cfg = json.loads(args.config_json)
    work, result = Path(args.work), Path(args.result)
    try:
        if args.step == "bench":
            rec = {"ok": True, "bench": run_bench(cfg, work)}
        else:
            rec = run_step(args.step, cfg, args.model, work)
    except BaseException as e:  # record why, so that the table says it
        import traceback

        traceback.print_exc()
        rec = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    rec["peak_rss_kib"] = proc_status_kib("VmHWM")
    _write_json(result, rec)
    return 0 if rec["ok"] else 1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="timm names (default DeiT-T/S/B)")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--num-classes", type=int, default=10, help="10: Fashion-MNIST's classes (real images)")
    p.add_argument("--calib-data", default="fashion-mnist:train",
                   help="calibration images: a spec create_model's data layer reads (fashion-mnist:train, an "
                        "ImageFolder) or 'synthetic' (seeded N(0,1))")
    p.add_argument("--calib-images", type=int, default=32)
    p.add_argument("--svd", choices=("activation", "plain"), default="activation",
                   help="RB-LRA's SVD: activation-aware on the calibration images, or plain (data-free)")
    p.add_argument("--param-reduction", type=float, default=0.45)
    p.add_argument("--wads-iters", type=int, default=None, help="WADS search steps per layer (default: library's)")
    p.add_argument("--verify-data", default="fashion-mnist:test", help="verification images, or 'synthetic'")
    p.add_argument("--verify-images", type=int, default=None, help=f"default {FULL['verify_images']} "
                                                                   f"(--quick {QUICK['verify_images']})")
    p.add_argument("--arm-verify", choices=("on", "off"), default=None,
                   help="the android builds' Arm check under qemu-aarch64 (timed apart; default on = the library's "
                        "default, a recorded skip where qemu is missing; --quick: off)")
    p.add_argument("--int8-min-agreement", type=float, default=0.0, metavar="F",
                   help="top-1 agreement gate of the INT8 android and jetson builds (default 0: recorded, not gated; random "
                        "weights give near-tied logits, so argmax flips are noise; the 20 dB SQNR gate still "
                        "applies). -1: the library's default gate")
    p.add_argument("--programs", nargs="+", choices=PROGRAMS, default=list(DEFAULT_PROGRAMS),
                   help="the latency programs (dense FP32 always first: the ratios' baseline); their compress and "
                        "build steps run. Default: the RB-LRA protocol " + " ".join(DEFAULT_PROGRAMS)
                        + "; the 4-bit forms: w4 w4-g32 mlorq-19.5 mlorq-12.5")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="latency thread counts")
    p.add_argument("--rounds", type=int, default=None, help=f"interleaved rounds (default {FULL['rounds']})")
    p.add_argument("--iterations", type=int, default=None, help=f"timed iterations per bench (default "
                                                                f"{FULL['iterations']})")
    p.add_argument("--warmup", type=int, default=None, help=f"warm-up iterations per bench (default {FULL['warmup']})")
    p.add_argument("--gemm-shape", type=int, nargs=3, default=[197, 768, 3072], metavar=("M", "K", "N"))
    p.add_argument("--gemm-reps", type=int, default=None)
    p.add_argument("--work-threads", type=int, default=None, help="torch threads of the compress/build steps "
                                                                  "(default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke settings: " + json.dumps(QUICK))
    p.add_argument("--work", default="runs/pipeline_scale", help="artifacts and logs")
    p.add_argument("--out", default="benchmarks/results/pipeline_scale", help="writes OUT.md and OUT.json")
    p.add_argument("--reuse", action="store_true", help="keep steps that succeeded in WORK with the same settings "
                                                        "(their recorded times and RSS); latency is always re-run")
    # internal: one step in this process
    p.add_argument("--step", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--config-json", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def resolve_config(args) -> Dict[str, Any]:
    preset = QUICK if args.quick else FULL
    pick = lambda name: getattr(args, name) if getattr(args, name) is not None else preset[name]  # noqa: E731
    wads = args.wads_iters if args.wads_iters is not None else preset["wads_iters"]
    programs = ["fp32"] + [p for p in PROGRAMS if p in args.programs and p != "fp32"]
    return {"models": list(args.models), "programs": programs, "img_size": args.img_size, "num_classes": args.num_classes,
            "calib_data": args.calib_data, "calib_images": args.calib_images, "svd": args.svd,
            "param_reduction": args.param_reduction, "wads_iters": wads, "verify_data": args.verify_data,
            "verify_images": pick("verify_images"),
            "int8_min_agreement": None if args.int8_min_agreement < 0 else args.int8_min_agreement,
            "arm_verify": preset["arm_verify"] if args.arm_verify is None else args.arm_verify == "on", "threads": list(args.threads),
            "rounds": pick("rounds"), "iterations": pick("iterations"), "warmup": pick("warmup"),
            "gemm_shape": list(args.gemm_shape), "gemm_reps": pick("gemm_reps"), "work_threads": args.work_threads,
            "seed": args.seed}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.step:
        return child_main(args)
    cfg = resolve_config(args)
    work_root, out = Path(args.work), Path(args.out)
    argv_shown = sys.argv[1:] if argv is None else list(argv)
    res: Dict[str, Any] = {
        "schema": SCHEMA, "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "quick": bool(args.quick),
        "command": shlex.join(["python", "benchmarks/pipeline_scale.py", *argv_shown]),
        "settings": cfg,
        "host": {"cpu": lscpu(), "nproc": os.cpu_count(), "versions": versions(), "platform": platform.platform(),
                 "loadavg_start": os.getloadavg()[0]},
        "models": {}, "notes": [],
    }

    def save() -> None:
        res["host"]["loadavg_end"] = os.getloadavg()[0]
        _write_json(out.with_suffix(".json"), res)
        out.with_suffix(".md").write_text(render_markdown(res))

    print(f"CPU: {cpu_line(res['host']['cpu'])}", flush=True)
    for model in cfg["models"]:
        work = work_root / model
        log = work / "log.txt"
        entry: Dict[str, Any] = {"steps": {}, "info": {}}
        res["models"][model] = entry
        for step in steps_for(cfg["programs"]):
            label, needs, _ = STEPS[step]
            missing = [n for n in needs if not entry["steps"].get(n, {}).get("ok")]
            if missing:
                entry["steps"][step] = {"ok": False, "skipped": f"needs {', '.join(missing)}, which failed"}
                continue
            print(f"[{model}] {label} ...", end=" ", flush=True)
            rec = (reusable(step, cfg, work) if args.reuse else None) or spawn(step, cfg, model, work, log)
            if rec.get("reused"):
                print("(reused from an earlier run)", end=" ")
            entry["steps"][step] = rec
            if rec.get("ok"):
                print(f"{rec['seconds']:.1f} s, peak RSS {rec['peak_rss_kib'] / 1024:.0f} MiB", flush=True)
            else:
                print(f"FAILED: {rec.get('error')}", flush=True)
            if step == "compress" and rec.get("ok"):
                i = rec["info"]
                entry["info"] = {"params_dense": i.get("params_dense"), "params_rb": i.get("params_rb"),
                                 "gflops_dense": i.get("gflops_dense"), "gflops_rb": i.get("gflops_rb"),
                                 "param_reduction": (1 - i["params_rb"] / i["params_dense"])
                                 if i.get("params_rb") and i.get("params_dense") else None}
            save()
        print(f"[{model}] host latency, {cfg['rounds']} interleaved rounds at {cfg['threads']} threads ...",
              end=" ", flush=True)
        rec = spawn("bench", cfg, model, work, log)
        if rec.get("ok"):
            bench = rec["bench"]
            flops = {"dense": entry["info"].get("gflops_dense"), "rb": entry["info"].get("gflops_rb")}
            flops.update({k: ((entry["steps"].get(k) or {}).get("info") or {}).get("gflops") for k in MLORQ_FRACTIONS})
            if flops["dense"] is None:  # no RB-LRA compress step in this run: the dense model's from the w4 step
                flops["dense"] = ((entry["steps"].get("w4") or entry["steps"].get("w4-g32") or {}).get("info")
                                  or {}).get("gflops")
            attach_floors(bench, flops)
            bench["peak_rss_kib"], bench["process_seconds"] = rec.get("peak_rss_kib"), rec.get("process_seconds")
            entry["bench"] = bench
            print(f"{bench['seconds']:.1f} s", flush=True)
        else:
            entry["bench"] = {"error": rec.get("error")}
            print(f"FAILED: {rec.get('error')}", flush=True)
        save()
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
