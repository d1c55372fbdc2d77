"""The test bed's converged FP32 reference: choose its fine-tune on held-out TRAINING images (issue 13).

Every candidate `ReferenceConfig` fine-tunes the probe model end to end (CE) on the profile's training
pool (train[0:50000]); the choice is made on top-1 over the held-out train[50000:51000], never on the
test split. Test top-1 is reported for the probe and each candidate, with paired 95 % intervals
against the probe over the same images (`lraqvit_deploy.stats`).

    python benchmarks/testbed_reference.py --profile quick --lrs 1e-5,3e-5,1e-4
    python benchmarks/testbed_reference.py --profile full --lrs 3e-5 --epochs 2
    python benchmarks/testbed_reference.py --profile quick --lrs 3e-5 --images 3000,9000 --out benchmarks/results/testbed_reference_quick_images

Writes OUT.{md,json} (default benchmarks/results/testbed_reference_PROFILE; rewritten after every candidate).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from pathlib import Path

import torch

import _result_file
from lraqvit_deploy.evaluate import evaluate
from lraqvit_deploy.measure.host import cpu_line, lscpu
from lraqvit_deploy.models import testbed
from lraqvit_deploy.stats import format_difference


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(testbed.PROFILES), default="quick")
    ap.add_argument("--lrs", default="1e-5,3e-5,1e-4", help="comma-separated learning rates to try")
    ap.add_argument("--epochs", type=float, default=None, help="epochs (default: the profile's)")
    ap.add_argument("--images", default=None,
                    help="comma-separated fine-tune set sizes (seeded draws of train[0:50000]; default: the "
                         "profile's); without --epochs each runs as many image passes as the profile's default")
    ap.add_argument("--out", type=_result_file.out_stem, default=None, metavar="STEM",
                    help="writes STEM.json and STEM.md (default benchmarks/results/testbed_reference_PROFILE)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    cfg = testbed.get_profile(args.profile)
    probe = testbed.build(cfg, progress=True, reference="probe")
    held, test = testbed.held_out(cfg), _test_subset(cfg)
    rows = []
    t0 = time.time()
    base = {"held": evaluate(probe, held, progress=False), "test": evaluate(probe, test, progress=False)}
    rows.append({"name": "probe (frozen backbone + linear head)", "held_out_top1": base["held"].top1,
                 "test_top1": base["test"].top1, "seconds": time.time() - t0})
    stem = args.out or Path("benchmarks/results") / f"testbed_reference_{args.profile}"
    cpu = lscpu()
    default_images = cfg.reference.n_images or cfg.n_train
    sizes = [None] if args.images is None else [int(v) for v in args.images.split(",")]
    for lr, n in [(float(v), n) for v in args.lrs.split(",") for n in sizes]:
        images = default_images if n is None else n
        epochs = args.epochs if args.epochs is not None else cfg.reference.epochs * default_images / images
        rc = dataclasses.replace(cfg.reference, lr=lr, epochs=epochs,
                                 n_images=cfg.reference.n_images if n is None else (None if n == cfg.n_train else n))
        c = dataclasses.replace(cfg, reference=rc)
        t0 = time.time()
        if rc == cfg.reference:  # the profile's own setting: build (and cache) the reference itself
            model, losses = testbed.build(cfg, progress=True), None
        else:
            model = copy.deepcopy(probe)
            losses = testbed.fine_tune_reference(model, c, progress=True)
        secs = time.time() - t0
        h, t = evaluate(model, held, progress=False), evaluate(model, test, progress=False)
        rows.append({"name": f"fine-tune lr {lr:g}, {images} images x {rc.epochs:g} epochs",
                     "config": dataclasses.asdict(rc),
                     "held_out_top1": h.top1, "held_out_vs_probe": h.paired_with(base["held"]).to_dict(),
                     "test_top1": t.top1, "test_vs_probe": t.paired_with(base["test"]).to_dict(),
                     "steps": None if losses is None else len(losses),
                     "loss_first_last": None if losses is None else [losses[0], sum(losses[-20:]) / len(losses[-20:])],
                     "seconds": secs, "is_default": rc == testbed.get_profile(args.profile).reference})
        _write(stem, args, cfg, cpu, rows)
        print(f"lr {lr:g}, {images} images: held-out {h.top1:.2f}, test {t.top1:.2f}, {secs:.0f} s", flush=True)
    return 0


def _test_subset(cfg):
    from lraqvit_deploy.data import FashionMNIST, seeded_subset

    return seeded_subset(FashionMNIST("test", testbed.data_config(cfg)), cfg.n_test, cfg.seed)


def _write(stem: Path, args, cfg, cpu, rows) -> None:
    best = max(rows[1:], key=lambda r: r["held_out_top1"])
    data = {"profile": args.profile, "testbed": dataclasses.asdict(cfg), "cpu": cpu, "threads": torch.get_num_threads(),
            "selection": "held-out train[50000:51000] top-1 (test reported only)", "chosen": best["name"], "rows": rows}
    lines = [f"# Test bed converged reference ({args.profile} profile)", "",
             f"DINOv2 ViT-S/14 at {cfg.img_size} px; probe on {cfg.n_train} seeded images of Fashion-MNIST "
             f"train[0:50000], fine-tunes on the sizes given per row (a larger draw contains the probe's images); "
             f"selection on the held-out train[50000:51000] (1,000 images); test top-1 on {cfg.n_test} test images, "
             "reported only. Intervals: paired 95 % vs the probe over the same images.",
             f"CPU: {cpu_line(cpu)}; {torch.get_num_threads()} threads.", "",
             "| model | held-out top-1 | vs probe [95 % CI] | test top-1 | vs probe [95 % CI] | steps | loss first -> last 20 | s |",
             "|---|---:|---|---:|---|---:|---|---:|"]
    for r in rows:
        if "config" not in r:
            lines.append(f"| {r['name']} | {r['held_out_top1']:.2f} | - | {r['test_top1']:.2f} | - | - | - | {r['seconds']:.0f} |")
            continue
        hv, tv = r["held_out_vs_probe"], r["test_vs_probe"]
        lf = r["loss_first_last"]
        loss = "" if lf is None else f"{lf[0]:.3f} -> {lf[1]:.3f}"
        lines.append(f"| {r['name']}{' (chosen)' if r is best else ''} | {r['held_out_top1']:.2f} | {format_difference(hv)} | "
                     f"{r['test_top1']:.2f} | {format_difference(tv)} | {r['steps'] or 'built by testbed.build'} | {loss} | "
                     f"{r['seconds']:.0f} |")
    _result_file.write(stem, data, "\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
