"""WADS search budgets side by side on the test bed: held-out training top-1 (for choosing), test top-1 (reported).

Issue 12 ("Fast calibration") asks for the accuracy of the fast search beside the old 300-step
search, same seed, same images. The row-subsampling speed-up itself is exact
(`tests/lraqvit_deploy/quant/test_fast_calibration.py`: the same alphas, bit for bit), so this
script is for the settings that DO change results: steps (`wads_iters`), rows per step
(`wads_max_rows`) and the step size (`wads_lr`). Each setting quantizes the test bed's FP32 model
with the same 32 calibration images (`calibration_images(model, 32)`) and the same seed. Reported
per setting:

- top-1 on held-out TRAINING images (Fashion-MNIST train[50000:51000]): the selection criterion,
  with the paired difference to the reference setting (the first) and its 95 % interval;
- top-1 on the test bed's test subset, with the same paired difference: reported, never used to choose;
- the Eq. 14 objective over all calibration rows, summed over the searched layers, relative to
  alpha = 1 (lower is a better search), and the search time.

Rows per step: the test bed (56 px) has 17 tokens per image, 32 x 17 = 544 calibration rows. A
224 px DeiT has 32 x 197 = 6304, so `wads_max_rows=1024` there samples 16 % of the rows per step;
the same fraction here is ~90 rows.

    python benchmarks/wads_fast_vs_slow.py                         # old default vs the new default
    python benchmarks/wads_fast_vs_slow.py '{"wads_iters": 300, "wads_max_rows": 4096, "wads_lr": 0.01}' \
        '{"wads_iters": 100, "wads_max_rows": 90, "wads_lr": 0.03}' --out runs/fast_vs_slow
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from torch.utils.data import Subset

import _result_file
from lraqvit_deploy.data_sources import calibration_images, eval_dataset, train_dataset
from lraqvit_deploy.evaluate import predict
from lraqvit_deploy.models import create_model
from lraqvit_deploy.models import testbed as tb
from lraqvit_deploy.quant import quant_config, quantize_
from lraqvit_deploy.measure.host import cpu_line, lscpu

OLD_DEFAULT = {"wads_iters": 300, "wads_max_rows": 4096, "wads_lr": 1e-2, "wads_sampling": "fresh"}
HELD_OUT = tb.HELD_OUT  # the test bed's held-out training images (one definition)


def paired(correct_a: torch.Tensor, correct_b: torch.Tensor) -> dict:
    """Top-1 difference b - a in points with its paired 95 % interval (`lraqvit_deploy.stats`, the one place)."""
    from lraqvit_deploy.stats import paired_difference

    return paired_difference(correct_a, correct_b).to_dict()


def run(fields: dict, model, images, datasets) -> dict:
    q = copy.deepcopy(model)
    config = quant_config("wads", progress=False, **fields)
    t0 = time.perf_counter()
    s = quantize_(q, config, images)
    seconds = time.perf_counter() - t0
    searches = list(s.layer_objective.values())  # the objective before/after of every searched layer
    out = {"fields": fields, "iters": config.wads_iters, "max_rows": config.wads_max_rows, "lr": config.wads_lr,
           "sampling": config.wads_sampling, "scaled_layers": len(s.scaled_layers), "search_seconds": s.search_seconds, "seconds": seconds,
           "objective_rel": sum(f for _, f in searches) / max(sum(i for i, _ in searches), 1e-30)}
    with torch.no_grad():
        for key, ds in datasets.items():
            preds, labels = predict(q, ds, progress=False)
            correct = preds == labels
            out[key] = {"top1": 100 * float(correct.float().mean()), "correct": correct}
    return out


def label(r: dict) -> str:
    """iters x rows, lr, sampling, then every other field the setting set (patience, weight term, ...)."""
    rest = [f"{k.removeprefix('wads_')}={v}" for k, v in r["fields"].items()
            if k not in ("wads_iters", "wads_max_rows", "wads_lr", "wads_sampling")]
    return ", ".join([f"{r['iters']} x {r['max_rows']}", f"{r['lr']:g}", r["sampling"], *rest])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("settings", nargs="*", help="JSON dicts of WADS fields; the first is the reference "
                   "(default: the old 300 x 4096 x 1e-2 search, then today's library default)")
    p.add_argument("--calib-images", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    _result_file.add_out(p, None, aliases=("--json",))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu = cpu_line(lscpu())
    settings = [json.loads(s) for s in args.settings] or [OLD_DEFAULT, {}]

    model = create_model("testbed", progress=False)
    images = calibration_images(model, args.calib_images)
    test, desc = eval_dataset(model)
    datasets = {"held_out": Subset(train_dataset(model), HELD_OUT), "test": test}
    print(f"CPU: {cpu}; {args.threads} thread(s); held-out = train[{HELD_OUT.start}:{HELD_OUT.stop}], "
          f"test = {desc}", flush=True)
    with torch.no_grad():
        fp32 = {k: 100 * float((lambda pl: (pl[0] == pl[1]).float().mean())(predict(model, ds, progress=False)))
                for k, ds in datasets.items()}
    print(f"FP32: held-out {fp32['held_out']:.2f}, test {fp32['test']:.2f}", flush=True)
    rows = [run(f, model, images, datasets) for f in settings]
    ref = rows[0]
    md = ["# WADS search budgets on the test bed (issue 12)", "",
          f"- Date: {time.strftime('%Y-%m-%d %H:%M:%S %z')}; CPU: {cpu}; {args.threads} thread(s) "
          "(search times: compare within this table only)",
          f"- Command: `python benchmarks/wads_fast_vs_slow.py {' '.join(repr(a) if a.startswith('{') else a for a in (argv if argv is not None else __import__('sys').argv[1:]))}`",
          f"- Test bed FP32 (DINOv2 ViT-S/14, 56 px, 17 tokens): held-out {fp32['held_out']:.2f}, test {fp32['test']:.2f}; "
          f"{args.calib_images} calibration images = {args.calib_images * 17} rows per layer.",
          "- Held-out = Fashion-MNIST train[50000:51000] (selection); test = the test bed's test subset "
          "(reported only). Intervals: paired normal 95 % over the same images, vs the first row.",
          "- objective / alpha=1: Eq. 14 over ALL calibration rows at the chosen alphas, summed over the searched "
          "layers, over the same sum at alpha = 1 (lower = better search).", "",
          "| setting (iters x rows, lr, sampling) | held-out top-1 | vs first (95% CI) | test top-1 | vs first (95% CI) "
          "| objective / alpha=1 | layers scaled | search (s) |",
          "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells = []
        for key in ("held_out", "test"):
            pr = paired(ref[key]["correct"], r[key]["correct"])
            r[key]["vs_first"] = pr
            cells += [f"{r[key]['top1']:.2f}", f"{pr['diff_pt']:+.2f} ({pr['ci95_pt'][0]:+.2f} .. {pr['ci95_pt'][1]:+.2f})"]
        md.append(f"| {label(r)} | {cells[0]} | {cells[1]} | {cells[2]} "
                  f"| {cells[3]} | {r['objective_rel']:.4f} | {r['scaled_layers']} | {r['search_seconds']:.1f} |")
    print("\n".join(md), flush=True)
    if args.out:
        for r in rows:
            for key in datasets:
                r[key].pop("correct")
        _result_file.write(args.out, {"cpu": cpu, "threads": args.threads, "fp32_top1": fp32, "settings": rows},
                           "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
