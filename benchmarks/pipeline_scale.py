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
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

from figures.pipeline_scale import render_markdown
from pipeline_scale_steps import (DEFAULT_PROGRAMS, MLORQ_FRACTIONS, PROGRAM_FLOPS, PROGRAM_INT8, PROGRAMS, STEPS,
                                  run_bench, run_step, steps_for)

from lraqvit_deploy.io import sha256_json, write_json
from lraqvit_deploy.measure.host import cpu_line, lscpu, versions
from lraqvit_deploy.measure.process import record_call, reused_record, run_recorded
from lraqvit_deploy.measure.rounds import floor_fraction, floor_ms

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "lraqvit-deploy/pipeline-scale/1"
DEFAULT_MODELS = ("deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224")

# the --quick preset and the full protocol (flags override either)
FULL = {"rounds": 5, "iterations": 20, "warmup": 3, "verify_images": 64, "wads_iters": None, "gemm_reps": 20,
        "arm_verify": True}
QUICK = {"rounds": 2, "iterations": 5, "warmup": 1, "verify_images": 8, "wads_iters": 20, "gemm_reps": 10,
         "arm_verify": False}


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


BENCH_ONLY = ("models", "programs", "threads", "rounds", "iterations", "warmup", "gemm_shape", "gemm_reps")
COMPRESS_KEYS = ("img_size", "num_classes", "seed", "param_reduction", "svd", "calib_data", "calib_images",
                 "work_threads")


def step_digest(cfg: Dict[str, Any], kind: str = "") -> str:
    """What a step's output (and its recorded time) depends on: never the latency settings."""
    keys = {"compress": COMPRESS_KEYS, "calibrate": COMPRESS_KEYS + ("wads_iters",)}.get(kind)
    d = {k: v for k, v in cfg.items() if (k in keys if keys else k not in BENCH_ONLY)}
    return sha256_json(d)[:16]


def reusable(kind: str, cfg: Dict[str, Any], work: Path) -> Optional[Dict[str, Any]]:
    """A previous run's record of this step when it succeeded with the same settings and its output is there."""
    needs = work / STEPS[kind][2] / "manifest.json" if kind in STEPS else None
    return reused_record(work / f"{kind}.result.json", step_digest(cfg, kind), needs)


def spawn(kind: str, cfg: Dict[str, Any], model: str, work: Path, log: Path) -> Dict[str, Any]:
    """Run `--step kind` in a fresh interpreter; its record plus this child's own ru_maxrss and wall time."""
    result = work / f"{kind}.result.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", kind, "--model", model, "--work", str(work),
           "--config-json", json.dumps(cfg), "--result", str(result)]
    return run_recorded(cmd, result, log, f"{kind} {model}", cwd=ROOT, digest=step_digest(cfg, kind))


def child_main(args) -> int:
    """One step in this process (`--step`): its record, with this process's peak RSS, to `--result`."""
    cfg, work = json.loads(args.config_json), Path(args.work)
    if args.step == "bench":
        return record_call(lambda: {"ok": True, "bench": run_bench(cfg, work)}, Path(args.result))
    return record_call(lambda: run_step(args.step, cfg, args.model, work), Path(args.result))


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
        write_json(out.with_suffix(".json"), res)
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
