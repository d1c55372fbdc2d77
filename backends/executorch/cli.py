"""`deploy build --target android`: an XNNPACK .pte plus manifest.json, verified on this host."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict

from lraqvit_deploy.errors import ToleranceError

FORMAT = "lraqvit-deploy/android/1"
DEFAULT_MIN_AGREEMENT = 0.995
NOISE_MARGIN = 0.01  # INT8: allowed shortfall below the simulator's own agreement with itself


def add_build_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--precision", choices=("auto", "fp32", "q8"), default="auto",
                       help="auto: q8 when the model holds QuantLinear layers (their scales are kept), else fp32; "
                            "q8 on an FP32 model applies PT2E dynamic INT8 (per-channel weights, per-token activations)")
    group.add_argument("--skip-verify", action="store_true", help="do not run the .pte on this host after building")
    group.add_argument("--verify-images", type=int, default=None, metavar="N",
                       help="images for host verification (default: the whole eval set; 64 noise images for "
                            "models without data)")
    group.add_argument("--min-agreement", type=float, default=None, metavar="F",
                       help=f"fail unless the .pte agrees with the reference on >= F of images (default "
                            f"{DEFAULT_MIN_AGREEMENT} for FP32; for QuantLinear INT8 min({DEFAULT_MIN_AGREEMENT}, the "
                            f"simulator's self-agreement under a 1e-6 input change - {NOISE_MARGIN}); PT2E-from-FP32 "
                            "builds only report)")
    group.add_argument("--delegate-layernorm", action="store_true",
                       help="express LayerNorm in XNNPACK ops (one delegate segment instead of ~2 per block)")
    group.add_argument("--no-shape-passes", action="store_true",
                       help="keep expand/squeeze/select outside the delegate (for comparison)")


def _labels(model) -> list | None:
    from lraqvit_deploy.models import TESTBED

    spec = getattr(model, "lraqvit_spec", None)
    if spec is not None and spec.name == TESTBED:
        from lraqvit_deploy.data import FASHION_MNIST_CLASSES

        return list(FASHION_MNIST_CLASSES)
    return None


def _precision(model, requested: str) -> str:
    from .quant_lowering import has_quant_linear

    if requested == "auto":
        return "q8" if has_quant_linear(model) else "fp32"
    return requested


def build(model, out_dir: Path, args: argparse.Namespace) -> Dict[str, Any]:
    """Lower, write `{model}_xnnpack_{precision}.pte` + manifest.json atomically, verify on this host."""
    from lraqvit_deploy.artifacts import MANIFEST, atomic_dir, sha256_file, versions, write_json

    from .export import lower_to_xnnpack
    from .quant_lowering import act_symmetric_flags

    precision = _precision(model, getattr(args, "precision", "auto"))
    spec = getattr(model, "lraqvit_spec", None)
    name = (spec.name if spec else type(model).__name__).replace("/", "_")
    progress = not getattr(args, "quiet", False)
    if progress:
        print(f"lowering {name} to ExecuTorch/XNNPACK ({precision}) ...", flush=True)
    lowered = lower_to_xnnpack(model, precision, shape_passes=not getattr(args, "no_shape_passes", False),
                               delegate_layernorm=getattr(args, "delegate_layernorm", False))
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    filename = f"{name}_xnnpack_{precision}.pte"
    manifest: Dict[str, Any] = {
        "format": FORMAT,
        "program": filename,
        "method": "forward",
        "precision": precision,
        "quantization": {
            "none": "none",
            "quant_linear": "artifact QuantLinear scales: int8 per-channel weights (w_scale kept), XNNPACK qd8 "
                            "dynamic per-token asymmetric activations",
            "pt2e_dynamic": "PT2E XNNPACKQuantizer: int8 per-channel symmetric weights, dynamic per-token activations",
        }[lowered.quantization],
        "input": {"shape": list(lowered.input_shape), "dtype": "float32", "layout": "NCHW"},
        "preprocessing": {k: cfg.get(k) for k in ("mean", "std", "interpolation", "crop_pct", "crop_mode")},
        "labels": _labels(model),
        "num_classes": cfg.get("num_classes"),
        "delegation": lowered.delegation.to_dict(),
        "delegated_fraction": round(lowered.delegation.delegated_fraction, 4),
        "layernorm": "xnnpack (4-D mean formulation)" if getattr(args, "delegate_layernorm", False) else "portable",
        "source": spec.to_dict() if spec else None,
    }
    if lowered.quantization == "quant_linear":
        sym = act_symmetric_flags(model)
        manifest["simulator_act_symmetric"] = sorted(sym)
    with atomic_dir(out_dir) as tmp:
        pte = tmp / filename
        pte.write_bytes(lowered.buffer)
        manifest["sha256"] = sha256_file(pte)
        manifest["size_mb"] = round(pte.stat().st_size / 1e6, 4)
        manifest.update(agreement=None, top1=None, verification=None)
        if not getattr(args, "skip_verify", False):
            manifest.update(_verify(model, pte, lowered.quantization, args, progress))
        manifest["versions"] = versions()
        write_json(tmp / MANIFEST, manifest)
    return manifest


def _verify(model, pte: Path, scheme: str, args, progress: bool) -> Dict[str, Any]:
    from .verify import verification_images, verify_program

    images, labels, desc = verification_images(model, args, getattr(args, "verify_images", None))
    ref = {"none": "pytorch fp32", "quant_linear": "quantization simulator model(x)",
           "pt2e_dynamic": "pytorch fp32 (before PT2E)"}[scheme]
    v = verify_program(pte, model, images, labels, ref, desc, progress, self_check=scheme == "quant_linear")
    threshold = getattr(args, "min_agreement", None)
    if threshold is None and scheme == "none":
        threshold = DEFAULT_MIN_AGREEMENT
    elif threshold is None and scheme == "quant_linear":
        # Per-token INT8 is discontinuous: the simulator flips predictions under a 1e-6 input change
        # (test bed: 98.4% self-agreement), so no kernel that is not bit-exact with PyTorch can beat that.
        threshold = min(DEFAULT_MIN_AGREEMENT, v.reference_self_agreement - NOISE_MARGIN)
    if threshold is not None and v.agreement < threshold:
        raise ToleranceError(
            f"the .pte agrees with the {ref} on {v.agreement:.2%} of {v.n_images} images, below "
            f"the threshold {threshold:.2%} (reference self-agreement under a 1e-6 input change: "
            f"{v.reference_self_agreement}). Nothing was written. Check the QuantLinear settings (XNNPACK runs "
            "act_scheme='per_token_dynamic'; act_symmetric=False is its arithmetic) or pass --min-agreement.")
    return {"agreement": round(v.agreement, 6), "top1": None if v.top1 is None else round(v.top1, 3),
            "verification": {**v.to_dict(), "min_agreement": threshold}}
