"""How long `quantize_(model, quant_config("wads"), images)` takes on a DeiT at 224 px (issue 12, "Fast calibration").

Random weights (`create_model(name, weights="random")`: the timing does not depend on them, but
which layers WADS picks does: with timm's random init it is qkv and proj of every block, 24 of
48 on DeiT-S), 32 seeded N(0, 1) images, the default WADS settings (300 Adam steps per layer,
4096 of the 32 x 197 = 6304 calibration rows per step). Prints the CPU, the time of every searched
layer, the calibration pass and the total; `--out STEM` also writes them to STEM.json.

    python benchmarks/wads_speed.py                      # DeiT-S, 2 threads
    python benchmarks/wads_speed.py --base --threads 2   # DeiT-B as well
    python benchmarks/wads_speed.py --iters 30           # a quick look (times scale with the steps)
"""
from __future__ import annotations

import argparse
import time

import torch

import _result_file
from lraqvit_deploy.models import create_model
from lraqvit_deploy.quant import find_targets, quant_config, quantize_
from lraqvit_deploy.measure.host import cpu_line, lscpu

MODELS = {"small": "deit_small_patch16_224", "base": "deit_base_patch16_224"}


def time_wads(name: str, n_images: int, fields: dict, progress: bool) -> dict:
    torch.manual_seed(0)  # the random weights, so that every run searches the same layers
    model = create_model(name, weights="random", progress=False)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n_images, *model.pretrained_cfg["input_size"], generator=g)
    shapes = {t.name: tuple(t.linear.weight.shape) for t in find_targets(model)}
    config = quant_config("wads", progress=progress, **fields)
    t0 = time.perf_counter()
    s = quantize_(model, config, images)
    total = time.perf_counter() - t0
    layers = [{"layer": n, "out_in": shapes[n], "seconds": sec, "scaled": n in s.scaled_layers}
              for n, sec in s.layer_search_seconds.items()]
    return {"model": name, "images": n_images, "iters": config.wads_iters, "max_rows": config.wads_max_rows,
            "lr": config.wads_lr,
            "targets": s.n_layers, "searched": len(layers), "scaled": len(s.scaled_layers),
            "calib_seconds": s.calib_seconds, "search_seconds": s.search_seconds, "total_seconds": total,
            "layers": layers}


def report(r: dict) -> str:
    lines = [f"## {r['model']}: {r['images']} images, {r['iters']} steps x {r['max_rows']} rows per layer",
             "", "| layer | weight (out, in) | seconds | alpha kept |", "|---|---|---|---|"]
    for row in r["layers"]:
        lines.append(f"| {row['layer']} | {row['out_in']} | {row['seconds']:.2f} | {'yes' if row['scaled'] else 'no'} |")
    n = max(r["searched"], 1)
    lines += ["", f"searched {r['searched']} of {r['targets']} layers ({r['scaled']} kept an alpha); "
              f"per layer mean {r['search_seconds'] / n:.2f} s",
              f"calibration pass + swap {r['calib_seconds']:.1f} s, searches {r['search_seconds']:.1f} s, "
              f"total {r['total_seconds']:.1f} s ({r['total_seconds'] / 60:.2f} min)"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", action="store_true", help="also time deit_base_patch16_224")
    p.add_argument("--no-small", action="store_true", help="skip deit_small_patch16_224")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--images", type=int, default=32, help="calibration images (default 32)")
    p.add_argument("--iters", type=int, default=None, help="search steps per layer (default: WADSConfig's)")
    p.add_argument("--max-rows", type=int, default=None, help="calibration rows per step (default: WADSConfig's)")
    p.add_argument("--lr", type=float, default=None, help="the search's step size (default: WADSConfig's)")
    p.add_argument("--progress", action="store_true", help="show the progress bars")
    _result_file.add_out(p, None, markdown=False, aliases=("--json",))
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    head = {"cpu": cpu_line(lscpu()), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": "cpu"}
    print(f"CPU: {head['cpu']}; torch {head['torch']}, {head['threads']} threads")
    names = ([] if args.no_small else ["small"]) + (["base"] if args.base else [])
    results = []
    for key in names:
        fields = {k: v for k, v in (("wads_iters", args.iters), ("wads_max_rows", args.max_rows),
                                    ("wads_lr", args.lr)) if v is not None}
        r = time_wads(MODELS[key], args.images, fields, args.progress)
        results.append(r)
        print(report(r), flush=True)
        if args.out:
            _result_file.write(args.out, {**head, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
