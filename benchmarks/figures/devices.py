"""docs/android.md, docs/jetson.md, docs/table.md, docs/models.md: built programs, their checks on the
emulated Arm CPUs and on the Jetson path, Table 4 on this host, and the model families end to end."""
from __future__ import annotations

from .format import Source, pct, code, table


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
    lines += ["", f"`benchmarks/pipeline_scale.py` at {s['img_size']} px, {pct(s['param_reduction'])} parameters "
                  f"({code(src.path)}, {d['date'][:10]})."]
    return "\n".join(lines)


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
                  f"config `{_repo_path(run['config'])}` (sha256 {run['config_sha256'][:12]}…) ({code(src.path)})."]
    if run.get("cpu"):
        lines += ["", f"CPU: {run['cpu']}."]
    return "\n".join(lines)


def table4_end_to_end(src: Source) -> str:
    """table.md: how long the shipped config took from an empty work folder (a table4.json of that run)."""
    d = src.data
    run = d["run"]
    took = _run_minutes(run)
    steps = ", ".join(f"{n} {k}" for k, n in sorted((d.get("steps") or {}).items()))
    host = "; ".join(f"{r['method_label']} {r['latency']['host']['median_ms']:.2f} ms" for r in d["rows"]
                     if "median_ms" in (r["latency"].get("host") or {}))
    return (f"`deploy table --config {_repo_path(run['config'])}` from an empty `--out` folder: **{took:.0f} min** "
            f"end to end (run {run['run_id']}, {run['started'][:16].replace('T', ' ')} to {run['finished'][11:16]} UTC, "
            f"{steps} steps, {'resumed ' + str(run['resumed']) + ' time(s)' if run.get('resumed') else 'one invocation'}; "
            f"load average {run['loadavg'][0]:.1f} at the end; its own host latencies: {host}) ({code(src.path)}).")


def _repo_path(path: str) -> str:
    """A config path as the repository names it (`benchmarks/table4.toml`), else as recorded."""
    i = path.find("/benchmarks/")
    return path[i + 1:] if path.startswith("/") and i >= 0 else path


def _run_minutes(run) -> "float | None":
    from datetime import datetime

    try:
        fmt = "%Y-%m-%dT%H:%M:%S%z"
        return (datetime.strptime(run["finished"], fmt) - datetime.strptime(run["started"], fmt)).total_seconds() / 60
    except (KeyError, TypeError, ValueError):
        return None


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

