"""Paper Table 2 / Table 9 on the offline test bed: every INT8 method's top-1 drop, dense and low-rank,
against the converged FP32 reference, with paired 95 % intervals (issue 13).

For each base model (the converged dense reference, and a low-rank model at -45 % parameters) and each
method, quantize a copy with `quantize_` (32 calibration images from train[0:50000], the library's
search defaults), score it on the held-out train[50000:51000] (where WADS variants are compared) and
on the test subset (reported), each with the paired difference to the converged reference and to
the FP32 model it quantizes. Rows are written after every row (JSON + Markdown).

    python benchmarks/table2_quant.py --profile full --lowrank-artifact runs/rb45   # RB-LRA + KD (table1_lra.py --save-default)
    python benchmarks/table2_quant.py --profile quick --rows naive,per-token,wads

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

import _result_file
from accuracy import TestBed

from lraqvit_deploy.artifacts import load_model_artifact
from lraqvit_deploy.calibration import calibrate
from lraqvit_deploy.data import calibration_batch
from lraqvit_deploy.evaluate import count_params
from lraqvit_deploy.layers import LowRankLinear, replace_module
from lraqvit_deploy.quant import quant_config, quantize_, quantized_size_mb
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
    # WADS variants (issue 13): the weight term as the error of the scaled weight, both terms normalised
    "wads-scaled": ("WADS, weight term = error of Q(aW)/a (dynamic)", "wads", None, {"wads_weight_term": "scaled"}),
    "wads-norm": ("WADS, normalised terms (dynamic)", "wads", None, {"wads_normalize": True}),
    "wads-scaled-norm": ("WADS, scaled weight term + normalised (dynamic)", "wads", None,
                         {"wads_weight_term": "scaled", "wads_normalize": True}),
    # fc2 (after GELU) gets its alpha as an explicit per-channel divide (lowered to XNNPACK and Q/DQ ONNX)
    "wads-fc2": ("WADS + fc2 explicit scale (dynamic)", "wads", None, {"fc2": "explicit"}),
    "wads-fc2-static": ("WADS + fc2 explicit scale (static)", "wads", "per_token_static", {"fc2": "explicit"}),
    "smoothquant-fc2": ("SmoothQuant + fc2 explicit scale", "smoothquant", None, {"fc2": "explicit"}),
    "wads-scaled-norm-static": ("WADS, scaled + normalised (static)", "wads", "per_token_static",
                                {"wads_weight_term": "scaled", "wads_normalize": True}),
}
DEFAULT_ROWS = ("naive,smoothquant,repq,per-token-static,per-token,wads,wads-static,wads-scaled,wads-norm,"
                "wads-scaled-norm,wads-fc2,wads-fc2-static,smoothquant-fc2")


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


def to_markdown(bed: TestBed, res: dict) -> str:
    st = res["setup"]
    out = ["# INT8 post-training quantization on the test bed (converged reference)", ""] + bed.header() + [
           "", f"Calibration: {st['calib_images']} seeded images of train[0:50000]; alpha searches at the library "
           f"defaults. Weights int8 symmetric per channel (W8A8). Low-rank model: {st['lowrank_source']}. "
           f"`Δ vs its FP32` = paired difference to the FP32 model being quantized (test split).", ""]
    for key, base in res["models"].items():
        out += [f"## Table 2 — {base['label']} ({base['params'] / 1e6:.2f} M params, {base['fp32']['size_mb']:.1f} MB FP32)", "",
                f"| method | activations | size (MB) | {TestBed.CELL_HEADER} | Δ vs its FP32 (test) | alpha layers | s |",
                f"|---|---|---:|{TestBed.CELL_RULE}|---|---:|---:|",
                f"| FP32 | - | {base['fp32']['size_mb']:.1f} | {TestBed.cells(base['fp32'])} | ref. | - | - |"]
        for r in base["rows"]:
            out.append(f"| {r['label']} | {r['act_scheme']} | {r['size_mb']:.1f} | {TestBed.cells(r)} | "
                       f"{TestBed.vs_cell(r)} | {r['alpha_layers']} | {r['total_seconds']:.0f} |")
        by = {r["id"]: r for r in base["rows"]}
        steps = [("NaivePTQ", "naive"), ("+ per-token (static)", "per-token-static"), ("+ WADS (static)", "wads-static")]
        if all(s in by for _, s in steps):
            out += ["", f"Table 9 — ablation ({base['label']}, static activations as in the paper)", "",
                    f"| step | {TestBed.CELL_HEADER} | Δ vs its FP32 (test) |", f"|---|{TestBed.CELL_RULE}|---|"]
            out += [f"| {name} | {TestBed.cells(by[s])} | {TestBed.vs_cell(by[s])} |" for name, s in steps]
        out.append("")
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=("quick", "full"), default="full")
    _result_file.add_out(p, Path("benchmarks/results/table2_quant"))
    p.add_argument("--models", default="dense,lowrank")
    p.add_argument("--rows", default=DEFAULT_ROWS, help=f"comma-separated row ids (any of {','.join(ROWS)})")
    p.add_argument("--lowrank-artifact", type=Path, default=None, help="an FP32 low-rank artifact (RB-LRA + KD)")
    p.add_argument("--param-reduction", type=float, default=0.45)
    p.add_argument("--lowrank", choices=("asvd", "svd"), default="asvd", help="how to build the low-rank model "
                   "when no --lowrank-artifact is given")
    p.add_argument("--calib-images", type=int, default=32)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    wanted = args.rows.split(",")
    unknown = set(wanted) - set(ROWS)
    if unknown:
        raise SystemExit(f"unknown rows {sorted(unknown)}; choose from {list(ROWS)}")
    bed = TestBed(args.profile, progress=not args.quiet)
    calib = calibration_batch(bed.train, args.calib_images, seed=0)

    kind = {"asvd": "activation-aware (whitened) SVD", "svd": "plain SVD"}[args.lowrank]
    lowrank_source = (f"RB-LRA + KD artifact ({args.lowrank_artifact.name})" if args.lowrank_artifact else
                      f"{kind} LRA at -{args.param_reduction:.0%} params, no fine-tuning")
    res = {"meta": bed.meta(), "setup": {"calib_images": len(calib), "lowrank_source": lowrank_source,
                                         "torch": torch.__version__}, "models": {}}
    bases = {}
    if "dense" in args.models:
        bases["dense"] = ("dense FP32 (the converged reference)", bed.reference)
    if "lowrank" in args.models:
        lr = load_model_artifact(args.lowrank_artifact) if args.lowrank_artifact else \
            lowrank(copy.deepcopy(bed.reference), args.param_reduction, args.lowrank,
                    calibration_batch(bed.train, 128, seed=1))
        bases["lowrank"] = (f"low-rank ({lowrank_source})", lr)
    for key, (label, base) in bases.items():
        fp32 = bed.score(f"{key} FP32", base)
        entry = {"label": label, "params": count_params(base), "fp32": fp32, "rows": []}
        res["models"][key] = entry
        print(f"[{key}] FP32 held-out {fp32['held_out']['top1']:.2f} test {fp32['test']['top1']:.2f}", flush=True)
        for row_id in wanted:
            row_label, method, scheme, *fields = ROWS[row_id]
            fields = fields[0] if fields else {}
            model = copy.deepcopy(base)
            cfg = quant_config(method, act_scheme=scheme, progress=not args.quiet, **fields)
            t0 = time.perf_counter()
            s = quantize_(model, cfg, calib)
            total = time.perf_counter() - t0
            row = bed.score(f"{key} {row_label}", model, versus=f"{key} FP32", id=row_id, label=row_label,
                            method=method, act_scheme=cfg.act_scheme, config=cfg.to_dict(),
                            alpha_layers=len(s.scaled_layers), quant_layers=s.n_layers, calib_seconds=s.calib_seconds,
                            search_seconds=s.search_seconds, total_seconds=total)
            row["size_mb"] = quantized_size_mb(model)
            entry["rows"].append(row)
            print(f"[{key}] {row_label:48s} held-out {row['held_out']['top1']:6.2f} test {row['test']['top1']:6.2f} "
                  f"({TestBed.vs_cell(row)} vs FP32)  alpha on {row['alpha_layers']}/{s.n_layers}  {total:.0f}s", flush=True)
            _result_file.write(args.out, res, to_markdown(bed, res))
    print(json.dumps(res["setup"]))


if __name__ == "__main__":
    main()
