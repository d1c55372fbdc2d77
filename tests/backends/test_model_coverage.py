"""Model coverage, timm's way: each supported family, one block wide 32, through compress -> Android -> Jetson.

Parametrized over `models.families` (one example per family, at the family's tiny timm kwargs) plus the
variants that take other paths through the rewrites. Every model is compressed with the issue's recipe
(LRA -30 % + per-token INT8), lowered to an XNNPACK .pte and to the Jetson Q/DQ ONNX bundle, and both
verifications must pass their closeness gates (a failing gate raises; the manifests are checked too).
DeiT, DeiT III and Swin are timm's VisionTransformer / SwinTransformer as the suite's other builds use
them (tests/backends/tensorrt/test_export.py, tests/backends/executorch/test_int4.py, tests/test_readme.py),
so they are left out here to keep the sweep within CI's time (about 10 s a model on 2 cores, most of it
ExecuTorch's lowering passes); their layout and fold sites are checked in tests/lraqvit_deploy/models.
"""
import pytest
import torch

from lraqvit_deploy.models import ModelSpec, build_architecture
from lraqvit_deploy.models.families import FAMILIES
from lraqvit_deploy.model_info import record

_COVERED_ELSEWHERE = ("deit", "deit3", "swin")
VARIANTS = [  # EVA-02 base/CLIP: q/k/v_proj stacked into qkv, two-Linear SwiGLU packed, inner attn.norm feeds proj
    ("eva02_base_patch16_clip_224", dict(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2)),
]
CASES = [pytest.param(f.example, f.tiny, id=f.example) for f in FAMILIES
         if f.supported and f.prefixes[0] not in _COVERED_ELSEWHERE] + \
        [pytest.param(n, k, id=n, marks=[pytest.mark.slow]) for n, k in VARIANTS]


def _tiny(name, kwargs):
    """Random weights with every parameter perturbed: timm zero-inits q/v biases and Swin V2's post-norms, which
    would make a block an identity that any lowering reproduces."""
    torch.manual_seed(0)
    spec = ModelSpec(name, name, dict(kwargs, num_classes=10), "random")
    model = build_architecture(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    record(model, spec=spec)
    return model


@pytest.mark.parametrize("name,kwargs", CASES)
def test_compress_and_build_both_targets(name, kwargs, tmp_path):
    from lraqvit_deploy import (AndroidBuildOptions, JetsonBuildOptions, LowRankConfig, Recipe, build, compress,
                                quant_config)
    from lraqvit_deploy.layers import LowRankLinear, QuantLinear

    data = dict(data="fashion-mnist:test", data_limit=4)
    report = compress(_tiny(name, kwargs), Recipe(low_rank=LowRankConfig("lra", param_reduction=0.3),
                                                  quant=quant_config("per-token")),
                      calib_data="fashion-mnist:train", evaluate=False, out=tmp_path / "art", progress=False)
    assert 0.25 < report.metrics["param_reduction"] < 0.35
    mods = list(report.model.modules())
    assert any(isinstance(m, LowRankLinear) for m in mods) and any(isinstance(m, QuantLinear) for m in mods)

    android = build(tmp_path / "art", tmp_path / "android", AndroidBuildOptions(
        arm_verify=False, verify_images=4, progress=False), **data).manifest
    v = android["verification"]
    assert v["nonfinite_outputs"] == 0 and (v["sqnr_db"] is None or v["sqnr_db"] >= v["min_sqnr_db"])  # None: bit-exact
    assert android["delegated_fraction"] > 0.8, android["delegation"]["non_delegated_by_op"]

    jetson = build(tmp_path / "art", tmp_path / "jetson", JetsonBuildOptions(
        latency_iters=0, verify_images=4, progress=False), **data).manifest
    assert all(c["passed"] for c in jetson["closeness"].values()), jetson["closeness"]
    assert all(s["ok"] for s in jetson["structure"].values()), jetson["structure"]
    assert jetson["structure"]["int8"]["qdq_matmuls"] > 0
