"""Block KD and WADS calibration throughput on one CUDA GPU (issue 12, "Distillation at scale").

DeiT-B/16 at 224 px with random weights (the timing does not depend on them), compressed by
RB-LRA at -45 % of its parameters (plain SVD, on the CPU), then on the GPU:

- block KD steps/s and images/s of `distill_` (synthetic N(0, 1) images in a TensorDataset, the
  default data loader: auto workers, pinned memory) with `--kd-amp auto` and `--kd-amp off`.
  Each rate is (t(W + N) - t(W)) / N over two runs of W warm-up + N steps, after a discarded run
  of W steps, so start-up (loader workers, the models' first kernels) cancels out;
- `quantize_(model, quant_config("wads", progress=False), images)` with 32 calibration images, on
  the merged RB-LRA model and on the dense one.

Without a CUDA device it prints "no CUDA device: nothing measured" and exits with 0. On an
H100-class GPU the whole run takes a few minutes at the defaults.

    python benchmarks/gpu_scale.py --out runs/gpu_scale
    python benchmarks/gpu_scale.py --steps 20 --no-dense-wads     # a quicker look
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import _result_file

SCHEMA = "lraqvit-deploy/gpu-scale/1"
NO_CUDA = "no CUDA device: nothing measured"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="deit_base_patch16_224", help="timm name (default deit_base_patch16_224)")
    p.add_argument("--img-size", type=int, default=224, help="input resolution (default 224)")
    p.add_argument("--param-reduction", type=float, default=0.45, help="RB-LRA: fraction of parameters removed")
    p.add_argument("--steps", type=int, default=50, help="timed KD steps per amp mode (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="KD warm-up steps before timing (default 5)")
    p.add_argument("--batch-size", type=int, default=64, help="KD batch (default 64)")
    p.add_argument("--train-images", type=int, default=256, help="synthetic training images (default 256)")
    p.add_argument("--amp", default="auto,off", help="comma-separated --kd-amp modes to time (default auto,off)")
    p.add_argument("--workers", type=int, default=None, help="KD data-loading workers (default: auto)")
    p.add_argument("--calib-images", type=int, default=32, help="WADS calibration images (default 32)")
    p.add_argument("--wads-iters", type=int, default=None, help="WADS search steps per layer (default: WADSConfig's)")
    p.add_argument("--no-dense-wads", action="store_true", help="time WADS on the RB-LRA model only")
    _result_file.add_out(p, None, aliases=("--json",))
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1 or args.calib_images < 1:
        p.error("--steps, --batch-size and --calib-images must be >= 1, --warmup >= 0")
    if args.train_images < args.batch_size:
        p.error("--train-images must be at least --batch-size")
    return args


# ---- measurement (imports torch and the SDK) ----

def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gib(device) -> Optional[float]:
    import torch

    return round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2) if device.type == "cuda" else None


def time_kd(student, teacher, train_ds, amp: str, batch_size: int, steps: int, warmup: int,
            workers: Optional[int], device) -> Dict[str, Any]:
    """Steps/s and images/s of `distill_` at `amp`; both models should already be on `device`."""
    import torch

    from lraqvit_deploy.lowrank import DistillConfig, distill_

    def run(n: int):
        cfg = DistillConfig(steps=n, batch_size=batch_size, lr=1e-5, warmup_steps=0, amp=amp, num_workers=workers,
                            checkpoint_every=10 ** 9, device=str(device))
        _sync(device)
        t = time.perf_counter()
        res = distill_(student, teacher, train_ds, cfg, progress=False)
        _sync(device)
        return time.perf_counter() - t, res

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if warmup:
        run(warmup)  # first kernels, allocator, cuBLAS workspaces
    short = run(warmup)[0] if warmup else 0.0
    long, res = run(warmup + steps)
    seconds = max(long - short, 1e-9)
    timed = res.losses[warmup:]
    return {"amp": res.amp, "num_workers": res.num_workers, "steps": steps, "warmup": warmup,
            "batch_size": batch_size, "seconds": round(seconds, 3), "steps_per_s": steps / seconds,
            "images_per_s": steps * batch_size / seconds, "ms_per_step": 1e3 * seconds / steps,
            "run_seconds": {"warmup": round(short, 3), "warmup_plus_timed": round(long, 3)},
            "first_loss": timed[0] if timed else None, "last_loss": timed[-1] if timed else None,
            "losses_finite": all(math.isfinite(v) for v in res.losses), "peak_gib": _peak_gib(device)}


def time_wads(model, images, device, wads_iters: Optional[int] = None) -> Dict[str, Any]:
    """Seconds of `quantize_(model, quant_config("wads"), images)` on `device` (quantizes `model` in place)."""
    import torch

    from lraqvit_deploy.quant import quant_config, quantize_

    fields = {} if wads_iters is None else {"wads_iters": wads_iters}
    config = quant_config("wads", progress=False, **fields)
    model, images = model.to(device), images.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t = time.perf_counter()
    s = quantize_(model, config, images)
    _sync(device)
    total = time.perf_counter() - t
    return {"images": int(images.shape[0]), "iters": config.wads_iters, "seconds": round(total, 3),
            "calib_seconds": round(getattr(s, "calib_seconds", float("nan")), 3),
            "search_seconds": round(getattr(s, "search_seconds", float("nan")), 3),
            "targets": getattr(s, "n_layers", None), "searched": len(getattr(s, "layer_search_seconds", {}) or {}),
            "scaled": len(getattr(s, "scaled_layers", []) or []), "peak_gib": _peak_gib(device)}


def _guard(what: str, fn, *a, **kw) -> Dict[str, Any]:
    """`fn`'s result, or {"error": ...}: one failing measurement does not lose the others."""
    try:
        return fn(*a, **kw)
    except Exception as e:  # noqa: BLE001 (recorded in the report)
        print(f"{what} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return {"error": f"{type(e).__name__}: {e}".splitlines()[0]}


def measure(args: argparse.Namespace, device) -> Dict[str, Any]:
    import copy

    import torch
    from torch.utils.data import TensorDataset

    from lraqvit_deploy import create_model
    from lraqvit_deploy.lowrank import LowRankConfig, compress_, merge_

    t_all = time.perf_counter()
    torch.manual_seed(0)
    model = create_model(args.model, weights="random", num_classes=10, img_size=args.img_size, progress=False)
    teacher = copy.deepcopy(model).eval()
    dense_params = sum(p.numel() for p in model.parameters())
    t = time.perf_counter()
    compress_(model, LowRankConfig(method="rb-lra", param_reduction=args.param_reduction))  # plain SVD, on the CPU
    compress_s = time.perf_counter() - t
    g = torch.Generator().manual_seed(0)
    shape = (3, args.img_size, args.img_size)
    train = TensorDataset(torch.randn(args.train_images, *shape, generator=g),
                          torch.randint(0, 10, (args.train_images,), generator=g))
    calib = torch.randn(args.calib_images, *shape, generator=g)

    student, teacher = model.to(device), teacher.to(device)  # distill_ returns them where it found them
    kd = {}
    for amp in [a.strip() for a in args.amp.split(",") if a.strip()]:
        kd[amp] = _guard(f"block KD (amp {amp})", time_kd, student, teacher, train, amp, args.batch_size,
                         args.steps, args.warmup, args.workers, device)
        print(f"block KD amp {amp}: {json.dumps(kd[amp])}", flush=True)
    merge_(student)
    lr_params = sum(p.numel() for p in student.parameters())
    wads = {"rb-lra": _guard("WADS (RB-LRA)", time_wads, student, calib, device, args.wads_iters)}
    print(f"WADS rb-lra: {json.dumps(wads['rb-lra'])}", flush=True)
    if not args.no_dense_wads:
        wads["dense"] = _guard("WADS (dense)", time_wads, teacher, calib, device, args.wads_iters)
        print(f"WADS dense: {json.dumps(wads['dense'])}", flush=True)
    return {"model": args.model, "img_size": args.img_size, "param_reduction": args.param_reduction,
            "params_dense": dense_params, "params_rb_lra": lr_params, "compress_seconds": round(compress_s, 2),
            "kd": kd, "wads": wads, "total_seconds": round(time.perf_counter() - t_all, 1)}


# ---- report ----

def _f(v, fmt: str) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def render_markdown(res: Dict[str, Any]) -> str:
    h, m = res["host"], res["results"]
    lines = [f"# GPU scale: {m['model']} at {m['img_size']} px, RB-LRA −{round(100 * m['param_reduction'])} % params",
             "", f"GPU: {h['gpu']}; torch {h['torch']} (CUDA {h['cuda']}); bf16 supported: "
             f"{'yes' if h['bf16_supported'] else 'no'}; TF32 matmuls: {'on' if h['tf32'] else 'off'}",
             f"`{res['command']}`, {res['date']}; {_f(m['params_dense'] / 1e6, '.2f')} M → "
             f"{_f(m['params_rb_lra'] / 1e6, '.2f')} M params, compression (CPU SVD) {m['compress_seconds']:.1f} s",
             "", "## Block KD (`distill_`)", "",
             "| --kd-amp | ran as | batch | workers | steps/s | img/s | ms/step | peak GiB | loss first → last |",
             "|---|---|---|---|---|---|---|---|---|"]
    for mode, r in m["kd"].items():
        if "error" in r:
            err = r["error"].replace("|", "\\|")
            lines.append(f"| {mode} | **failed**: {err} |  |  |  |  |  |  |  |")
            continue
        loss = f"{_f(r['first_loss'], '.4f')} → {_f(r['last_loss'], '.4f')}" + ("" if r["losses_finite"]
                                                                                   else " (not finite)")
        lines.append(f"| {mode} | {r['amp']} | {r['batch_size']} | {r['num_workers']} | {r['steps_per_s']:.2f} | "
                     f"{r['images_per_s']:.0f} | {r['ms_per_step']:.1f} | {_f(r['peak_gib'], '.1f')} | {loss} |")
    ok = {k: r for k, r in m["kd"].items() if "error" not in r}
    if "off" in ok and len(ok) > 1:
        for mode, r in ok.items():
            if mode != "off":
                lines.append(f"\namp {mode} ({r['amp']}) / off: {r['steps_per_s'] / ok['off']['steps_per_s']:.2f}x "
                             f"the steps/s")
    some = next(iter(ok.values()), None)
    if some:
        lines.append(f"\nTimed: {some['steps']} steps after {some['warmup']} warm-up steps, "
                     "(t(warm-up + timed) − t(warm-up)) / steps.")
    lines += ["", f"## WADS calibration (`quantize_`, {m['wads'].get('rb-lra', {}).get('images', '—')} images)", "",
              "| model | seconds | calibration pass s | alpha searches s | searched / targets | peak GiB |",
              "|---|---|---|---|---|---|"]
    names = {"rb-lra": "RB-LRA (merged)", "dense": "dense"}
    for key, r in m["wads"].items():
        if "error" in r:
            err = r["error"].replace("|", "\\|")
            lines.append(f"| {names.get(key, key)} | **failed**: {err} |  |  |  |  |")
            continue
        lines.append(f"| {names.get(key, key)} | {r['seconds']:.1f} | {_f(r['calib_seconds'], '.1f')} | "
                     f"{_f(r['search_seconds'], '.1f')} | {r['searched']} / {r['targets']} | "
                     f"{_f(r['peak_gib'], '.1f')} |")
    lines += ["", f"Whole run {m['total_seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    import os

    import torch

    if not torch.cuda.is_available():
        print(NO_CUDA)
        return 0
    torch.set_num_threads(os.cpu_count() or 1)  # the CPU SVD of the compression step
    device = torch.device("cuda", torch.cuda.current_device())
    host = {"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "bf16_supported": bool(torch.cuda.is_bf16_supported()), "tf32": bool(torch.backends.cuda.matmul.allow_tf32)}
    print(f"GPU: {host['gpu']}; torch {host['torch']} (CUDA {host['cuda']})", flush=True)
    res = {"schema": SCHEMA, "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
           "command": "python benchmarks/gpu_scale.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "host": host, "results": measure(args, device)}
    md = render_markdown(res)
    print(md)
    if args.out:
        _result_file.write(args.out, res, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
