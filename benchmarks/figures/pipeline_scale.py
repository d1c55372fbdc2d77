"""benchmarks/results/pipeline_scale*.md: the report of `pipeline_scale.py`, from its results document (OUT.json) alone.

`render_markdown(res)` is what the script writes beside its JSON; the committed reports are exactly
that rendering (tests/benchmarks/test_pipeline_scale.py). Labels come from what the run recorded and
from the protocol's tables (`pipeline_scale_steps`: step and program labels, which programs are INT8).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from pipeline_scale_steps import BUILD_OF_PROGRAM, MLORQ_FRACTIONS, PROGRAM_INT8, PROGRAM_LABELS, STEPS

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
    from lraqvit_deploy.measure.host import cpu_line
    from lraqvit_deploy.measure.rounds import floor_fraction

    s, host = res["settings"], res["host"]
    lines = [f"# Pipeline scale: compress, calibrate, build, verify and bench at {s['img_size']} px", ""]
    if res.get("quick"):
        lines += ["> **Quick smoke run** (`--quick`): few rounds and iterations, shortened WADS search, few "
                  "verification images. The numbers show that the protocol runs, not how it scales.", ""]
    lines += [f"- Date: {res['date']}",
              f"- Command: `{res['command']}`",
              f"- CPU: {cpu_line(host['cpu'])}",
              "- Versions: " + ", ".join(f"{k} {v}" for k, v in (host.get("versions") or {}).items()),
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
