"""Shared fixtures: tiny timm ViTs (depth 2, width 64) so unit tests run in seconds on 2 cores."""
from __future__ import annotations

import os

import pytest
import torch
from lraqvit_deploy.model_info import record

os.environ.setdefault("LRAQVIT_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "lraqvit_deploy"))
torch.set_num_threads(min(2, torch.get_num_threads()))

TINY_ARCHS = {
    "vit": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)),
    "deit": ("deit_tiny_patch16_224", dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)),
    "swin": ("swin_tiny_patch4_window7_224", dict(img_size=32, patch_size=2, window_size=4, embed_dim=32,
                                                  depths=(1, 1), num_heads=(2, 4))),
    "dinov2": ("vit_small_patch14_dinov2", dict(img_size=28, embed_dim=64, depth=2, num_heads=2)),
}


def make_tiny(family: str = "vit", num_classes: int = 10, seed: int = 0):
    """A tiny random-weight timm model of `family` with its spec recorded (`model_info(model).spec`), in eval mode."""
    from lraqvit_deploy.models import ModelSpec, build_architecture

    arch, kwargs = TINY_ARCHS[family]
    torch.manual_seed(seed)
    spec = ModelSpec(arch, arch, {**kwargs, "num_classes": num_classes}, "random")
    model = build_architecture(spec)
    record(model, spec=spec)
    return model


def low_rank(model, frac: float = 0.5):
    """Plain SVD LRA of every block Linear at `frac` of its full rank (in place; returns the model)."""
    import torch.nn as nn

    from lraqvit_deploy.layers import LowRankLinear

    for mod in list(model.modules()):
        for name in ("qkv", "proj", "fc1", "fc2"):
            lin = getattr(mod, name, None)
            if isinstance(lin, nn.Linear):
                setattr(mod, name, LowRankLinear.from_linear(lin, max(1, int(min(lin.in_features, lin.out_features) * frac))))
    return model


def images(model, n: int = 8, seed: int = 0) -> torch.Tensor:
    """`n` seeded N(0, 1) images of the model's input size."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *model.pretrained_cfg["input_size"], generator=g)


@pytest.fixture
def one_thread():
    """One intra-op thread for training-heavy tests: on a shared 2-core box two OpenMP threads can run 30x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_vit():
    return make_tiny("vit")


@pytest.fixture(params=sorted(TINY_ARCHS))
def tiny_any(request):
    return make_tiny(request.param)


@pytest.fixture(scope="session")
def testbed_model():
    """The real quick test bed (DINOv2 ViT-S/14, the converged FP32 reference); cached after the first build."""
    from lraqvit_deploy.models import create_model

    return create_model("testbed", progress=False)
