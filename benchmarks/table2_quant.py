"""Paper Table 2 / Table 9 on the offline test bed: every INT8 method's top-1 drop, dense and low-rank.

For each base model (the dense FP32 test bed, and a low-rank model at -45% parameters) and each
method, quantize a copy with `quantize_`, evaluate top-1 on the test bed's 1000 test images and
record the deployed size and the calibration / alpha-search time. Results are written after every
row (JSON + Markdown), so an interrupted run keeps what it measured.

    python benchmarks/table2_quant.py --out benchmarks/results/table2_quant
    python benchmarks/table2_quant.py --lowrank-artifact runs/rb_lra   # an RB-LRA+KD artifact

Without --lowrank-artifact the low-rank model is built here, with one rank fraction for all block
Linears chosen to remove 45% of the model's parameters and no fine-tuning: `--lowrank asvd`
(default) whitens each layer by the Cholesky factor of its input's second moment before the SVD
(activation-aware, 128 training images); `--lowrank svd` is plain `LowRankLinear.from_linear`
(on the test bed it collapses to near chance at -45%, which makes quantization drops meaningless).
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn as nn
from timm.data import resolve_data_config

from lraqvit_deploy.artifacts import load_model_artifact
from lraqvit_deploy.calibration import calibrate
from lraqvit_deploy.data import FashionMNIST, calibration_batch, seeded_subset
from lraqvit_deploy.evaluate import count_params, size_mb
from lraqvit_deploy.io import atomic_write, write_json
from lraqvit_deploy.layers import LowRankLinear, replace_module
from lraqvit_deploy.models import create_model
from lraqvit_deploy.models import testbed as tb
from lraqvit_deploy.quant import QUANT_METHODS, AlphaSearchConfig, quant_config, quantize_, quantized_size_mb
from lraqvit_deploy.vit_layout import encoder_linears

# row id -> (label, method, act_scheme override)
ROWS = {
    "naive": ("NaivePTQ", "naive", None),
    "smoothquant": ("SmoothQuant", "smoothquant", None),
    "repq": ("RepQ-ViT (LN reparam.)", "repq", None),
    "per-token-static": ("per-token (static)", "per-token", "per_token_static"),
    "per-token": ("per-token (dynamic, XNNPACK)", "per-token", None),
    "wads": ("per-token + WADS (dynamic, XNNPACK)", "wads", None),
    "wads-static": ("per-token + WADS (static)", "wads", "per_token_static"),
    "qads": ("QADS (dynamic per-token)", "qads", None),
}


@torch.no_grad()
def _whitened_pair(lin: nn.Linear, second_moment: torch.Tensor, rank: int) -> LowRankLinear:
    """SVD of W L (L L^T = E[x x^T]): the rank-r pair minimising the output error on those inputs."""
    c = second_moment / second_moment.diagonal().mean()
    chol = torch.linalg.cholesky(c + 1e-4 * torch.eye(len(c), dtype=c.dtype))
    u, s, vh = torch.linalg.svd(lin.weight.double() @ chol, full_matrices=False)
    root = s[:rank].sqrt()
    pair = LowRankLinear(lin.in_features, lin.out_features, rank, lin.bias is not None)
    pair.up.weight.copy_((u[:, :rank] * root).float())
    pair.down.weight.copy_(torch.linalg.solve_triangular(chol, root[:, None] * vh[:rank], upper=False,
                                                         left=False).float())
    if lin.bias is not None:
        pair.up.bias.copy_(lin.bias)
    return pair


def lowrank(model: nn.Module, reduction: float, kind: str, images: torch.Tensor) -> nn.Module:
    """rank_l = f * in*out/(in+out) with one f, so that the model loses `reduction` of its params."""
    linears = encoder_linears(model)
    block = sum(lin.weight.numel() for lin in linears.values())
    f = 1.0 - reduction * count_params(model) / block
    if f <= 0:
        raise SystemExit(f"a {reduction:.0%} reduction is more than the block weights hold")
    moments = {}
    if kind == "asvd":
        def accumulate(name, _mod, x):
            z = x.reshape(-1, x.shape[-1]).double()
            moments[name] = moments.get(name, 0) + z.T @ z

        calibrate(model, images, linears, pre=accumulate, batch_size=32)
    for name, lin in linears.items():
        rank = max(1, round(f * lin.in_features * lin.out_features / (lin.in_features + lin.out_features)))
        pair = _whitened_pair(lin, moments[name], rank) if kind == "asvd" else LowRankLinear.from_linear(lin, rank)
        replace_module(model, name, pair)
    return model


@torch.no_grad()
def top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 100) -> float:
    model.eval()
    pred = torch.cat([model(x[i:i + batch]).argmax(-1) for i in range(0, len(x), batch)])
    return 100.0 * (pred == y).float().mean().item()


def to_markdown(res: dict) -> str:
    out = [f"# INT8 post-training quantization on the test bed ({res['setup']['eval_images']} test images)", "",
           f"Calibration: {res['setup']['calib_images']} seeded training images; WADS/QADS: "
           f"{res['setup']['wads_iters']} Adam steps per layer on <= {res['setup']['wads_max_rows']} rows per step. "
           f"Weights int8 symmetric per channel (W8A8). Low-rank model: {res['setup']['lowrank_source']}.", ""]
    for key, base in res["models"].items():
        out += [f"## Table 2 — {base['label']} (FP32 top-1 {base['fp32_top1']:.2f}%, {base['params'] / 1e6:.2f} M "
                f"params, {base['fp32_size_mb']:.1f} MB)", "",
                "| method | precision | activations | size (MB) | top-1 (%) | diff | alpha layers | calib (s) | search (s) |",
                "|---|---|---|---:|---:|---:|---:|---:|---:|",
                f"| FP32 | W32A32 | - | {base['fp32_size_mb']:.1f} | {base['fp32_top1']:.2f} | - | - | - | - |"]
        for r in base["rows"]:
            out.append(f"| {r['label']} | W8A8 | {r['act_scheme']} | {r['size_mb']:.1f} | {r['top1']:.2f} | "
                       f"{r['diff']:+.2f} | {r['alpha_layers']} | {r['calib_seconds']:.1f} | {r['search_seconds']:.1f} |")
        by = {r["label"]: r for r in base["rows"]}
        steps = [("NaivePTQ", "NaivePTQ"), ("+ per-token", "per-token (static)"),
                 ("+ WADS", "per-token + WADS (static)")]
        if all(s in by for _, s in steps):
            out += ["", f"Table 9 — ablation ({base['label']}, static activations as in the paper)", "",
                    "| step | top-1 (%) | diff |", "|---|---:|---:|"]
            out += [f"| {name} | {by[s]['top1']:.2f} | {by[s]['diff']:+.2f} |" for name, s in steps]
        out.append("")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/table2_quant"), help="writes OUT.json and OUT.md")
    p.add_argument("--models", default="dense,lowrank")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated row ids (default: all of {','.join(ROWS)})")
    p.add_argument("--lowrank-artifact", type=Path, default=None, help="an FP32 low-rank artifact (RB-LRA+KD)")
    p.add_argument("--param-reduction", type=float, default=0.45)
    p.add_argument("--lowrank", choices=("asvd", "svd"), default="asvd", help="how to build the low-rank model "
                   "when no --lowrank-artifact is given")
    p.add_argument("--eval-images", type=int, default=1000)
    p.add_argument("--calib-images", type=int, default=32)
    p.add_argument("--wads-iters", type=int, default=300)
    p.add_argument("--wads-max-rows", type=int, default=4096)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    dense = create_model("testbed", progress=False)
    data_cfg = resolve_data_config(model=dense)
    test = seeded_subset(FashionMNIST("test", data_cfg), args.eval_images, tb.get_profile("quick").seed)
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.tensor([test[i][1] for i in range(len(test))])
    calib = calibration_batch(FashionMNIST("train", data_cfg), args.calib_images, seed=0)

    kind = {"asvd": "activation-aware (whitened) SVD", "svd": "plain SVD"}[args.lowrank]
    lowrank_source = (f"artifact {args.lowrank_artifact}" if args.lowrank_artifact else
                      f"{kind} LRA at -{args.param_reduction:.0%} params, no RB-LRA/KD fine-tuning")
    res = {"setup": {"eval_images": len(y), "calib_images": len(calib), "wads_iters": args.wads_iters,
                     "wads_max_rows": args.wads_max_rows, "threads": args.threads, "lowrank_source": lowrank_source,
                     "torch": torch.__version__}, "models": {}}
    bases = {}
    if "dense" in args.models:
        bases["dense"] = ("dense FP32 test bed", dense)
    if "lowrank" in args.models:
        lr = load_model_artifact(args.lowrank_artifact) if args.lowrank_artifact else \
            lowrank(copy.deepcopy(dense), args.param_reduction, args.lowrank,
                    calibration_batch(FashionMNIST("train", data_cfg), 128, seed=1))
        bases["lowrank"] = (f"low-rank ({lowrank_source})", lr)
    wanted = args.rows.split(",")
    unknown = set(wanted) - set(ROWS)
    if unknown:
        raise SystemExit(f"unknown rows {sorted(unknown)}; choose from {list(ROWS)}")
    for key, (label, base) in bases.items():
        fp32 = top1(base, x, y)
        entry = {"label": label, "params": count_params(base), "fp32_top1": fp32, "fp32_size_mb": size_mb(base),
                 "rows": []}
        res["models"][key] = entry
        print(f"[{key}] FP32 top-1 {fp32:.2f}  params {entry['params'] / 1e6:.2f}M", flush=True)
        for row_id in wanted:
            row_label, method, scheme = ROWS[row_id]
            model = copy.deepcopy(base)
            search = ({"wads_iters": args.wads_iters, "wads_max_rows": args.wads_max_rows}
                      if issubclass(QUANT_METHODS[method], AlphaSearchConfig) else {})
            cfg = quant_config(method, act_scheme=scheme, progress=True, **search)
            t0 = time.perf_counter()
            s = quantize_(model, cfg, calib)
            total = time.perf_counter() - t0
            acc = top1(model, x, y)
            row = {"id": row_id, "label": row_label, "method": method, "act_scheme": cfg.act_scheme,
                   "act_symmetric": cfg.act_symmetric, "top1": acc, "diff": acc - fp32,
                   "size_mb": quantized_size_mb(model), "alpha_layers": len(s.scaled_layers),
                   "quant_layers": s.n_layers, "calib_seconds": s.calib_seconds, "search_seconds": s.search_seconds,
                   "total_seconds": total}
            entry["rows"].append(row)
            print(f"[{key}] {row_label:38s} top-1 {acc:6.2f} ({acc - fp32:+.2f})  {row['size_mb']:.1f} MB  "
                  f"alpha on {row['alpha_layers']}/{s.n_layers}  {total:.0f}s", flush=True)
            write_json(args.out.with_suffix(".json"), res)
            with atomic_write(args.out.with_suffix(".md"), "w") as f:
                f.write(to_markdown(res))
    print(json.dumps(res["setup"]))


if __name__ == "__main__":
    main()
