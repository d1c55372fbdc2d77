"""LayerNorm delegation and rank rounding at 224 px: latency side by side, agreement, and time outside XNNPACK.

Issue 12 item 3. For one timm DeiT (default DeiT-S, random weights, 10 classes) this builds, with
the library only:

    dense FP32                     LayerNorm portable (today's default)  vs  `delegate_layernorm=True`
    RB-LRA -45 % + WADS INT8        the same two LayerNorm choices
    RB-LRA -45 % FP32 / + WADS INT8 ranks as computed (`rank_multiple=1`) vs rounded to `--rank-multiple`

and times every program in interleaved rounds on this CPU (ExecuTorch runtime, XNNPACK, 1 thread
by default), each as a ratio to dense FP32 (portable LayerNorm) of the same round. Per program it
records the host verification (agreement, SQNR vs PyTorch/the simulator) from the build manifest,
the op profile (`op_profile`: ms inside delegates vs in portable ops, by op, from an ETDump), the
delegate segments, parameters and GFLOPs. Writes Markdown and JSON.

    python benchmarks/delegation_latency.py --out benchmarks/results/delegation_latency
    python benchmarks/delegation_latency.py --model deit_tiny_patch16_224 --rounds 2 --iterations 5 --out /tmp/dl
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any, Dict

import _result_file

SCHEMA = "lraqvit-deploy/delegation-latency/1"


def build_all(args, work: Path) -> Dict[str, Dict[str, Any]]:
    import torch

    from lraqvit_deploy import AndroidBuildOptions, LowRankConfig, Recipe, create_model, quant_config
    from lraqvit_deploy.data_sources import calibration_images
    from lraqvit_deploy.evaluate import count_gflops, count_params
    from lraqvit_deploy.pipeline import compress
    from lraqvit_deploy.targets import build

    def dense():
        torch.manual_seed(0)
        return create_model(args.model, weights="random", num_classes=10, img_size=224, progress=False)

    base = dense()
    images = calibration_images(base, args.calib_images, "fashion-mnist:train")
    programs: Dict[str, Dict[str, Any]] = {}
    models = {"dense": base}
    for rm in sorted({1, args.rank_multiple}):
        m = dense()
        compress(m, Recipe(low_rank=LowRankConfig("rb-lra", param_reduction=0.45, svd="activation", rank_multiple=rm)),
                 alloc_data=images, evaluate=False, progress=False)
        models[f"rb{rm}"] = m
        q = copy.deepcopy(m)  # compress() quantizes in place
        t0 = time.perf_counter()
        compress(q, Recipe(quant=quant_config("wads", progress=False), quant_calib_images=args.calib_images),
                 calib_data=images, evaluate=False, progress=False)
        models[f"rb{rm}-wads"] = q
        print(f"rank_multiple={rm}: WADS {time.perf_counter() - t0:.1f} s", flush=True)
    plan = [("dense FP32", "dense", "fp32", False), ("dense FP32, LN delegated", "dense", "fp32", True),
            ("RB-LRA + WADS INT8", "rb1-wads", "q8", False), ("RB-LRA + WADS INT8, LN delegated", "rb1-wads", "q8", True),
            ("RB-LRA FP32", "rb1", "fp32", False)]
    if args.rank_multiple != 1:
        plan += [(f"RB-LRA FP32, ranks x{args.rank_multiple}", f"rb{args.rank_multiple}", "fp32", False),
                 (f"RB-LRA + WADS INT8, ranks x{args.rank_multiple}", f"rb{args.rank_multiple}-wads", "q8", False)]
    for label, key, precision, ln in plan:
        out = work / label.replace(" ", "_").replace(",", "").replace("+", "p")
        t0 = time.perf_counter()
        opts = AndroidBuildOptions(precision=precision, delegate_layernorm=ln, verify_images=args.verify_images,
                                   arm_verify=False, progress=False,
                                   **({"min_agreement": 0.0} if precision == "q8" else {}))
        build(models[key], out, opts, data="fashion-mnist:test", data_limit=args.verify_images)
        man = json.loads((out / "manifest.json").read_text())
        ver = man.get("verification") or {}
        m = models[key]
        programs[label] = {"dir": str(out), "model": key, "precision": precision, "delegate_layernorm": ln,
                           "build_s": time.perf_counter() - t0, "agreement": man.get("agreement"),
                           "sqnr_db": ver.get("sqnr_db"), "min_cosine": ver.get("min_cosine"),
                           "delegated_fraction": man.get("delegated_fraction"),
                           "delegate_segments": (man.get("delegation") or {}).get("segments"),
                           "size_mb": man.get("size_mb"), "params_m": count_params(m) / 1e6,
                           "gflops": count_gflops(m)}
        print(f"built {label}: agreement {man.get('agreement')}, SQNR {ver.get('sqnr_db')}", flush=True)
    return programs


def bench_all(args, programs: Dict[str, Dict[str, Any]]) -> None:
    from lraqvit_deploy import HostBenchOptions, bench
    from lraqvit_deploy.backends.executorch.op_profile import op_profile

    from lraqvit_deploy.measure.rounds import interleaved, summarize_rounds

    labels = list(programs)

    def time_one(label: str) -> float:
        return bench(programs[label]["dir"], HostBenchOptions(iterations=args.iterations, warmup=args.warmup,
                                                              threads=args.threads, progress=False)).median_ms

    rounds = interleaved(labels, time_one, args.rounds,
                         on_round=lambda r, _: print(f"round {r + 1}/{args.rounds} done", flush=True))["rounds"]
    summary = summarize_rounds(rounds, labels[0])
    for label in labels:
        p = programs[label]
        s = summary[label]
        p.update(median_ms=s["median_ms"], ratio=s["ratio_median"], ratio_min=s["ratio_min"], ratio_max=s["ratio_max"])
        prof = op_profile(p["dir"], runs=max(3, args.iterations // 2))
        p["op_profile"] = prof


def _db(v) -> str:
    return "" if v is None else f"{v:.1f}"


def markdown(args, cpu, programs, seconds) -> str:
    from lraqvit_deploy.measure.host import cpu_line

    lines = [f"# LayerNorm delegation and rank rounding: {args.model} at 224 px", "",
             f"- Date: {time.strftime('%Y-%m-%d %H:%M:%S %z')}; total {seconds / 60:.1f} min",
             f"- Command: `python benchmarks/delegation_latency.py {' '.join(args.argv)}`",
             f"- CPU: {cpu_line(cpu)}",
             f"- Latency: {args.rounds} interleaved rounds x ({args.warmup} warm-up + {args.iterations} timed runs), "
             f"{args.threads} thread(s), ExecuTorch runtime; ratio = median over rounds of (program / dense FP32 of "
             "the same round), with min-max.",
             f"- Verification: {args.verify_images} Fashion-MNIST test images; random weights, so top-1 agreement is "
             "near-tied-logit noise for INT8 and SQNR is the measure.",
             "- Time outside XNNPACK: `op_profile` (ETDump), average ms per run in portable operators over all "
             "(delegate calls + portable operators).", "",
             "| program | params (M) | GFLOPs | median (ms) | x dense FP32 | min-max | agreement | SQNR (dB) "
             "| delegate segments | ops delegated | time outside XNNPACK | largest portable ops (ms) | size (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for label, p in programs.items():
        prof = p.get("op_profile") or {}
        ops = ", ".join(f"{k} {v:.2f}" for k, v in list((prof.get("non_delegated_by_op_ms") or {}).items())[:3])
        share = prof.get("non_delegated_share")
        lines.append(f"| {label} | {p['params_m']:.2f} | {p['gflops']:.3f} | {p['median_ms']:.2f} | {p['ratio']:.3f} "
                     f"| {p['ratio_min']:.3f}-{p['ratio_max']:.3f} | {p['agreement']} | "
                     f"{_db(p['sqnr_db'])} | {p['delegate_segments']} | {p['delegated_fraction']} "
                     f"| {'' if share is None else f'{100 * share:.1f} %'} | {ops} | {p['size_mb']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import sys

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="deit_small_patch16_224")
    p.add_argument("--rank-multiple", type=int, default=32, help="the rounded ranks' multiple (default 32)")
    p.add_argument("--calib-images", type=int, default=32)
    p.add_argument("--verify-images", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", type=Path, default=Path("/tmp/delegation_latency"))
    _result_file.add_out(p, Path("benchmarks/results/delegation_latency"))
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    head = _result_file.header(SCHEMA, __file__, args.argv)
    cpu = head["cpu"]
    args.work.mkdir(parents=True, exist_ok=True)
    programs = build_all(args, args.work)
    bench_all(args, programs)
    seconds = time.perf_counter() - t0
    md = markdown(args, cpu, programs, seconds)
    _result_file.write(args.out, {**head, "model": args.model, "seconds": seconds, "programs": programs}, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
